"""labeling.quality.weights: how much each rater's judgments count, for training and the TRL export."""

import pytest
from django.db import connection
from django.utils import timezone

from labeling.models import Project, RaterQuality
from labeling.quality.weights import RaterWeights, judgment_weights
from labeling.raters import set_excluded
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def dave(db):
    return UserFactory(username="dave")


def quality(project, rater, *, reliability=None, flagged=False):
    RaterQuality.objects.create(
        project=project, rater=rater, reliability=reliability, flagged=flagged, computed_at=timezone.now()
    )


def weights_in(project, weighting) -> RaterWeights:
    project.judgment_weighting = weighting
    project.save()
    return judgment_weights(project=project)


@pytest.fixture
def figures(project, alice, bob, carol, dave):
    """alice reliable and flagged (flags and reliability are separate tests), bob half reliable, carol at 0,
    dave with no estimate yet (a row computed before he judged anything)."""
    quality(project, alice, reliability=1.0, flagged=True)
    quality(project, bob, reliability=0.5)
    quality(project, carol, reliability=0.0)
    quality(project, dave, reliability=None)


def test_equal_weights_count_everyone_once(project, figures, alice, bob, carol, dave):
    weights = weights_in(project, Project.Weighting.EQUAL)

    assert [weights.of(r.pk) for r in (alice, bob, carol, dave)] == [1.0, 1.0, 1.0, 1.0]
    assert weights.is_default
    assert weights.summary() == "equal"
    assert weights.description() == {
        "mode": "equal",
        "raters_excluded": 0,
        "raters_left_out": 0,
        "raters_down_weighted": 0,
    }


def test_reliability_weights_are_the_latest_reliability_and_1_without_one(project, figures, alice, bob, carol, dave):
    newcomer = UserFactory(username="newcomer")  # no row at all

    weights = weights_in(project, Project.Weighting.RELIABILITY)

    assert [weights.of(r.pk) for r in (alice, bob, carol, dave, newcomer)] == [1.0, 0.5, 0.0, 1.0, 1.0]
    assert not weights.is_default
    assert weights.description() == {
        "mode": "reliability",
        "raters_excluded": 0,
        "raters_left_out": 1,
        "raters_down_weighted": 1,
    }
    assert weights.summary() == "reliability (raters: 1 at weight 0, 1 down-weighted)"


def test_exclude_flagged_gives_flagged_raters_0_and_everyone_else_1(project, figures, alice, bob, carol, dave):
    weights = weights_in(project, Project.Weighting.EXCLUDE_FLAGGED)

    assert [weights.of(r.pk) for r in (alice, bob, carol, dave)] == [0.0, 1.0, 1.0, 1.0]
    assert weights.summary() == "exclude_flagged (raters: 1 flagged, left out)"


@pytest.mark.parametrize("weighting", list(Project.Weighting))
def test_an_excluded_rater_weighs_0_in_every_mode_until_included_again(project, figures, bob, admin_user, weighting):
    set_excluded(project=project, rater=bob, excluded=True, by=admin_user)

    weights = weights_in(project, weighting)

    assert weights.of(bob.pk) == 0.0
    assert weights.excluded == {bob.pk}
    assert weights.description()["raters_excluded"] == 1
    assert weights.description()["raters_down_weighted"] == 0  # bob's 0.5 does not count: he is out
    assert not weights.is_default
    set_excluded(project=project, rater=bob, excluded=False, by=admin_user)
    assert judgment_weights(project=project).of(bob.pk) == (0.5 if weighting == "reliability" else 1.0)


def test_another_projects_figures_and_exclusions_do_not_count(project, bob, admin_user):
    other = Project.objects.create(name="Other", slug="other", judgment_weighting=Project.Weighting.RELIABILITY)
    quality(other, bob, reliability=0.1)
    set_excluded(project=other, rater=bob, excluded=True, by=admin_user)

    assert weights_in(project, Project.Weighting.RELIABILITY).of(bob.pk) == 1.0
    assert judgment_weights(project=other).of(bob.pk) == 0.0


@pytest.mark.parametrize("reliability", [1.5, -0.1, float("nan")])
def test_a_reliability_outside_0_1_fails_loudly(project, bob, reliability):
    quality(project, bob, reliability=reliability)
    if reliability != reliability and connection.vendor == "sqlite":
        # SQLite stores NaN as NULL: the row reads back as "no estimate yet", never as a weight.
        assert RaterQuality.objects.get(project=project, rater=bob).reliability is None
        return

    with pytest.raises(ValueError, match="is not in \\[0, 1\\]"):
        weights_in(project, Project.Weighting.RELIABILITY)


def test_it_reads_the_database_in_at_most_two_queries(project, figures, django_assert_max_num_queries):
    project.judgment_weighting = Project.Weighting.RELIABILITY
    project.save()

    with django_assert_max_num_queries(2):
        judgment_weights(project=project)
