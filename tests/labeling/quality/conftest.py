"""Fixtures the quality tests share: a manager, and a project whose figures have been computed."""

import pytest

from labeling.quality import service
from tests.labeling.quality.judged import judged_project, manager

ROUNDS = 50  # bootstrap rounds: enough to exercise the intervals, quick to run


@pytest.fixture
def maria(project):
    """A manager: a member of the project with view_rater_quality and manage_raters, not staff."""
    return manager(project)


@pytest.fixture
def computed(project, alice, bob, carol):
    judged_project(project, alice, bob, carol)
    service.compute_quality(project=project, n_bootstrap=ROUNDS)
    return project
