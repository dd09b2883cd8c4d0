"""labeling.quality.service: the project's judgments in, stored figures out, and read back cheaply."""

import base64
import io
import json
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from config.broker import filesystem_transport_options
from labeling import tasks
from labeling.models import Judgment, ProjectQuality, RaterQuality, RaterStanding
from labeling.quality import service
from labeling.quality.report import QualitySettings, build_report
from labeling.quality.stats import MIN_N, leaderboard
from labeling.raters import set_excluded, set_paused
from tests.brokers import use_broker
from tests.factories import ComparisonFactory, JudgmentFactory, ProjectFactory, UserFactory
from tests.labeling.quality.judged import judged_project

pytestmark = pytest.mark.django_db

ROUNDS = 50  # bootstrap rounds: enough to exercise the intervals, quick to run


def stored_figures(project):
    return {row.rater.username: row for row in RaterQuality.objects.filter(project=project).select_related("rater")}


def test_it_stores_one_row_per_rater_whose_figures_match_the_report(project, alice, bob, carol):
    comparisons, records = judged_project(project, alice, bob, carol, gold=2)
    gold = {comparisons[0].pk: "a", comparisons[1].pk: "b"}

    report = service.compute_quality(project=project, n_bootstrap=ROUNDS)

    expected = build_report(records, gold, QualitySettings(min_time_ms=project.min_time_ms), n_bootstrap=ROUNDS)
    assert report.raters == expected.raters
    assert (report.project.alpha, report.project.pairwise_agreement) == (
        expected.project.alpha,
        expected.project.pairwise_agreement,
    )
    stored = stored_figures(project)
    assert set(stored) == {"alice", "bob", "carol"}
    for quality in expected.raters:
        row = stored[quality.rater]
        assert row.figures == service.api_row(quality)
        assert (row.judgments, row.reliability, row.flagged) == (
            quality.judgments,
            quality.reliability,
            bool(quality.flags),
        )
    # A few figures by hand: alice judged 12 comparisons and repeated 10 of them, always consistently.
    alice_row = stored["alice"].figures
    assert (alice_row["judgments"], alice_row["comparisons"]) == (22, 12)
    assert alice_row["self_consistency"] | {"low": 0, "high": 0} == {
        "value": 1.0,
        "n": 10,
        "low": 0,
        "high": 0,
        "p_value": 1.0,
    }
    # carol chose the left response in all of her 12 decisive answers.
    assert (stored["carol"].figures["position_bias"]["value"], stored["carol"].figures["position_bias"]["n"]) == (
        1.0,
        12,
    )
    # Two gold answers each: too few to judge, so null rather than a number.
    assert expected.raters[0].gold_accuracy.n == 2 and alice_row["gold_accuracy"] is None
    assert set(alice_row) == {"rater", "flags", *service.NUMBERS, *service.INTERVALS}


def test_it_stores_the_project_figures_and_the_newest_judgment_it_read(project, alice, bob, carol):
    _, records = judged_project(project, alice, bob, carol)

    report = service.compute_quality(project=project, n_bootstrap=ROUNDS)

    stored = ProjectQuality.objects.get(project=project)
    assert stored.last_judgment_id == max(r["id"] for r in records)
    assert stored.figures["alpha"]["value"] == pytest.approx(report.project.alpha.value)
    assert stored.figures["pairwise_agreement"] == report.project.pairwise_agreement.as_dict()
    assert set(stored.figures["criteria_alpha"]) == {"helpfulness"}
    assert (stored.figures["judgments"], stored.figures["comparisons"], stored.figures["raters"]) == (46, 12, 3)
    assert stored.figures["min_time_ms"] == project.min_time_ms
    assert timezone.now() - stored.computed_at < timedelta(minutes=1)


def test_the_leaderboard_counts_first_judgments_only_and_ties_and_both_bad_as_half_a_win(project, alice, bob):
    big_wins = ComparisonFactory(prompt__project=project, response_a__source="big", response_b__source="small")
    tie = ComparisonFactory(prompt__project=project, response_a__source="small", response_b__source="big")
    nameless = ComparisonFactory(prompt__project=project, response_a__source="", response_b__source="big")
    first = JudgmentFactory(comparison=big_wins, rater=alice, outcome="a")
    JudgmentFactory(comparison=big_wins, rater=alice, outcome="b", left="b", repeat_of=first)  # a repeat: no match
    JudgmentFactory(comparison=big_wins, rater=bob, outcome="a")
    JudgmentFactory(comparison=tie, rater=alice, outcome="tie")
    JudgmentFactory(comparison=tie, rater=bob, outcome="both_bad")
    JudgmentFactory(comparison=nameless, rater=bob, outcome="b")  # no source on one side: no match

    service.compute_quality(project=project, n_bootstrap=ROUNDS)

    stored = ProjectQuality.objects.get(project=project)
    matches = [("big", "small", "a"), ("big", "small", "a"), ("small", "big", "tie"), ("small", "big", "tie")]
    assert stored.leaderboard == leaderboard(matches, n_bootstrap=ROUNDS)
    assert [row["source"] for row in stored.leaderboard] == ["big", "small"]
    assert stored.figures["leaderboard"] == {"matches": 4, "ties": 2, "excluded_raters": []}


def test_excluded_raters_stay_in_the_raters_figures_but_leave_the_leaderboard(project, alice, bob, admin_user):
    comparison = ComparisonFactory(prompt__project=project, response_a__source="big", response_b__source="small")
    JudgmentFactory(comparison=comparison, rater=alice, outcome="a")
    JudgmentFactory(comparison=comparison, rater=bob, outcome="b")
    set_excluded(project=project, rater=bob, excluded=True, by=admin_user)

    service.compute_quality(project=project, n_bootstrap=ROUNDS)

    stored = ProjectQuality.objects.get(project=project)
    assert stored.leaderboard == leaderboard([("big", "small", "a")], n_bootstrap=ROUNDS)
    assert stored.figures["leaderboard"]["excluded_raters"] == [bob.pk]
    assert set(stored_figures(project)) == {"alice", "bob"}


def test_a_project_without_judgments_gets_empty_figures(project):
    report = service.compute_quality(project=project, n_bootstrap=ROUNDS)

    assert report.raters == [] and report.project.judgments == 0
    stored = ProjectQuality.objects.get(project=project)
    assert (stored.last_judgment_id, stored.leaderboard, stored.figures["alpha"]) == (None, [], None)
    assert not RaterQuality.objects.exists()


def test_a_recomputation_replaces_the_rows_of_raters_who_are_gone(project, alice, bob):
    judgment = JudgmentFactory(comparison=ComparisonFactory(prompt__project=project), rater=bob)
    service.compute_quality(project=project, n_bootstrap=ROUNDS)
    JudgmentFactory(comparison=ComparisonFactory(prompt__project=project), rater=alice)
    Judgment.objects.filter(pk=judgment.pk).delete()

    service.compute_quality(project=project, n_bootstrap=ROUNDS)

    assert set(stored_figures(project)) == {"alice"}


def test_figures_that_started_earlier_never_overwrite_newer_ones(project, alice, monkeypatch):
    JudgmentFactory(comparison=ComparisonFactory(prompt__project=project), rater=alice)
    service.compute_quality(project=project, n_bootstrap=ROUNDS)
    newer = ProjectQuality.objects.get(project=project).computed_at
    JudgmentFactory(comparison=ComparisonFactory(prompt__project=project), rater=alice)
    monkeypatch.setattr(service.timezone, "now", lambda: newer - timedelta(seconds=5))

    service.compute_quality(project=project, n_bootstrap=ROUNDS)

    stored = ProjectQuality.objects.get(project=project)
    assert stored.computed_at == newer and stored.figures["judgments"] == 1
    assert RaterQuality.objects.get(project=project, rater=alice).judgments == 1


def test_rows_read_back_with_the_live_standing_best_known_first(
    project, alice, bob, carol, admin_user, django_assert_num_queries
):
    judged_project(project, alice, bob, carol)
    service.compute_quality(project=project, n_bootstrap=ROUNDS)
    set_paused(project=project, rater=carol, paused=True, by=admin_user)
    set_excluded(project=project, rater=carol, excluded=True, by=admin_user)

    with django_assert_num_queries(2):
        rows = service.quality_rows(project=project)

    reliabilities = [row["reliability"] for row in rows]
    assert reliabilities == sorted(reliabilities, reverse=True)
    assert [(row["rater"], row["paused"], row["excluded"]) for row in rows if row["rater"] == "carol"] == [
        ("carol", True, True)
    ]
    assert all(not row["paused"] and not row["excluded"] for row in rows if row["rater"] != "carol")
    assert RaterStanding.objects.get(project=project, rater=carol).excluded


def test_reading_back_takes_the_same_queries_whatever_the_number_of_raters(project, django_assert_num_queries):
    now = timezone.now()
    for i in range(30):
        rater = UserFactory(username=f"rater{i:02}")
        RaterQuality.objects.create(
            project=project, rater=rater, judgments=i, figures={"judgments": i}, computed_at=now
        )

    with django_assert_num_queries(2):
        rows = service.quality_rows(project=project)
    with django_assert_num_queries(1):
        service.project_figures(project=project)

    assert [row["rater"] for row in rows] == [f"rater{i:02}" for i in reversed(range(30))]


def test_sorting_puts_unknown_values_last_in_both_directions():
    rows = [
        {"rater": "a", "agreement": {"value": 0.9}},
        {"rater": "b", "agreement": None},
        {"rater": "c", "agreement": {"value": 0.5}},
    ]

    assert [r["rater"] for r in service.sort_rows(rows, "agreement")] == ["c", "a", "b"]
    assert [r["rater"] for r in service.sort_rows(rows, "-agreement")] == ["a", "c", "b"]


def test_an_interval_below_the_minimum_is_shown_as_null():
    from labeling.quality.stats import wilson

    assert service.shown_interval(wilson(MIN_N - 1, MIN_N - 1)) is None
    assert service.shown_interval(wilson(MIN_N, MIN_N))["n"] == MIN_N
    assert service.shown_interval(None) is None


def test_the_schedule_picks_projects_with_new_judgments_or_changed_exclusions(alice, bob, admin_user):
    fresh, stale, quiet, idle = (ProjectFactory(slug=s) for s in ("fresh", "stale", "quiet", "idle"))
    inactive = ProjectFactory(slug="inactive", is_active=False)
    for p in (fresh, stale, quiet, inactive):
        JudgmentFactory(comparison=ComparisonFactory(prompt__project=p), rater=alice)
    for p in (stale, quiet):
        service.compute_quality(project=p, n_bootstrap=ROUNDS)
    JudgmentFactory(comparison=ComparisonFactory(prompt__project=stale), rater=bob)

    assert service.projects_needing_quality() == [fresh.pk, stale.pk]  # never computed; a newer judgment

    set_excluded(project=quiet, rater=alice, excluded=True, by=admin_user)
    assert service.projects_needing_quality() == [fresh.pk, stale.pk, quiet.pk]
    assert idle.pk not in service.projects_needing_quality()  # nothing to compute from


# -- the schedule, the tasks and the command -------------------------------------------------------------


@pytest.fixture
def broker(tmp_path):
    """The embedded filesystem broker in this test's own folder: published messages land in the returned folder."""
    folder = tmp_path / "broker"
    with use_broker("filesystem://", filesystem_transport_options(folder)):
        yield folder / "queue"


@pytest.fixture
def broker_down():
    """Redis on a port nobody listens on, with the web side's fail-fast options."""
    with use_broker("redis://127.0.0.1:1/0", django_settings.REDIS_BROKER_TRANSPORT_OPTIONS):
        yield


def published(folder) -> list[tuple[str, list, str]]:
    """(task name, args, queue) of every message the filesystem broker holds."""
    messages = []
    for path in sorted(folder.iterdir()) if folder.exists() else []:
        message = json.loads(path.read_text())
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        messages.append((message["headers"]["task"], args, message["properties"]["delivery_info"]["routing_key"]))
    return messages


def test_the_schedule_entry_runs_every_ten_minutes_on_the_default_queue():
    entry = PeriodicTask.objects.get(task="labeling.tasks.compute_quality_for_active_projects")

    assert (entry.interval.every, entry.interval.period, entry.queue, entry.enabled) == (10, "minutes", "default", True)


def test_the_scheduled_task_hands_over_one_computation_per_project_that_needs_one(alice, broker):
    fresh, quiet = ProjectFactory(slug="fresh"), ProjectFactory(slug="quiet")
    for p in (fresh, quiet):
        JudgmentFactory(comparison=ComparisonFactory(prompt__project=p), rater=alice)
    service.compute_quality(project=quiet, n_bootstrap=ROUNDS)

    assert tasks.compute_quality_for_active_projects() == 1

    assert published(broker) == [("labeling.tasks.compute_quality", [fresh.pk], "default")]


def test_the_task_computes_and_stores_the_figures(project, alice):
    JudgmentFactory(comparison=ComparisonFactory(prompt__project=project), rater=alice)

    result = tasks.compute_quality.apply(args=[project.pk]).get()

    assert result["project"] == project.slug and result["judgments"] == 1
    assert RaterQuality.objects.filter(project=project, rater=alice).exists()
    assert tasks.compute_quality.apply(args=[10**9]).get() is None  # a project deleted since: nothing to do


def test_publishing_to_a_broker_that_is_down_returns_why_at_once(project, broker_down):
    started = time.monotonic()

    error = tasks.publish_compute_quality(project_id=project.pk)

    assert error and time.monotonic() - started < 10
    assert not ProjectQuality.objects.exists()


def test_the_command_computes_a_project_and_prints_one_line_of_json(project, alice, bob, carol):
    judged_project(project, alice, bob, carol)
    out = io.StringIO()

    call_command("compute_quality", "--project", project.slug, stdout=out)

    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary | {"alpha": None, "seconds": None} == {
        "project": "demo",
        "judgments": 46,
        "comparisons": 12,
        "raters": 3,
        "flagged": 1,
        "alpha": None,
        "sources": 2,
        "last_judgment_id": ProjectQuality.objects.get(project=project).last_judgment_id,
        "seconds": None,
    }
    assert isinstance(summary["seconds"], float)


def test_the_command_names_an_unknown_project():
    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        call_command("compute_quality", "--project", "nope")
