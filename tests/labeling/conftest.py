"""Fixtures of the admin import's tests (test_admin.py, test_import_jobs.py); helpers in import_worker.py."""

import pytest

from config.broker import filesystem_transport_options
from tests.brokers import use_broker


@pytest.fixture
def var_dir(tmp_path, settings):
    """VAR_DIR in this test's folder: uploads (VAR_DIR/imports/) that one test leaves are no other's."""
    settings.VAR_DIR = tmp_path / "var"
    return settings.VAR_DIR


@pytest.fixture
def import_broker(tmp_path, var_dir):
    """The filesystem broker in this test's folder (and VAR_DIR there too); yields its queue folder."""
    folder = tmp_path / "broker"
    with use_broker("filesystem://", filesystem_transport_options(folder)):
        yield folder / "queue"
