"""The suite's own style checks: the same two commands as `make lint`, so CI fails on either."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).with_name("ruff")


def ruff(*args: str) -> subprocess.CompletedProcess:
    executable = RUFF if RUFF.exists() else shutil.which("ruff")
    if executable is None:
        pytest.skip("ruff is not installed (requirements-test.txt installs it)")
    return subprocess.run([str(executable), *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_ruff_finds_nothing_to_complain_about():
    result = ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_file_is_formatted_as_ruff_format_would():
    result = ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
