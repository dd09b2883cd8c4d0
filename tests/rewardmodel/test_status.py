"""The status page: who sees what, its buttons against a real broker, the selectors and the chart."""

import base64
import json
import re
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from config.broker import filesystem_transport_options
from labeling.models import Comparison, Judgment
from rewardmodel import pipeline
from rewardmodel.charts import accuracy_chart, render_accuracy_chart
from rewardmodel.models import ProjectLoop, RewardModelVersion
from rewardmodel.status import project_status, scheduled_tasks, version_row
from tests.brokers import use_broker
from tests.factories import ComparisonFactory, UserFactory

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"
CLOSED_PORT = "redis://127.0.0.1:1/0"


# -- brokers -------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path):
    """The embedded filesystem broker in this test's own folder: published messages land in the returned folder."""
    folder = tmp_path / "broker"
    options = filesystem_transport_options(folder)
    with use_broker("filesystem://", options):
        yield folder / "queue"


@pytest.fixture
def broker_down():
    """Redis on a port nobody listens on, with the web side's fail-fast options."""
    with use_broker(CLOSED_PORT, settings.REDIS_BROKER_TRANSPORT_OPTIONS):
        yield


def published(folder) -> list[tuple[str, list, dict]]:
    """(task name, args, kwargs) of every message the filesystem broker holds."""
    messages = []
    for path in sorted(folder.iterdir()):
        message = json.loads(path.read_text())
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        messages.append((message["headers"]["task"], args, kwargs))
    return messages


# -- data ----------------------------------------------------------------------


def make_version(project, number, status, *, accuracy=None, n=200, **fields):
    metrics = fields.pop("metrics", {})
    if accuracy is not None:
        metrics = {"accuracy": accuracy, "log_loss": 0.65, "ece": 0.04, "n": n, **metrics}
    now = timezone.now()
    defaults = {
        "trigger": "threshold",
        "judgments_count": 50 * number,
        "device": "cpu",
        "started_at": now - timedelta(minutes=5),
        "finished_at": None if status in ("queued", "training") else now - timedelta(minutes=1),
        "durations": {} if status in ("queued", "training") else {"read_data": 0.5, "train": 61.2, "evaluate": 2.0},
    }
    return RewardModelVersion.objects.create(
        project=project, version=number, status=status, metrics=metrics, **{**defaults, **fields}
    )


@pytest.fixture
def history(project):
    """v1 ready, v2 active (with reference labels), v3 failed with a technical error, v4 training."""
    return {
        1: make_version(project, 1, "ready", accuracy=0.58),
        2: make_version(project, 2, "active", accuracy=0.64, metrics={"reference_accuracy": 0.71, "reference_n": 90}),
        3: make_version(
            project, 3, "failed", error="RuntimeError: CUDA out of memory (in train.py:212) at /srv/models/demo/3"
        ),
        4: make_version(
            project,
            4,
            "training",
            progress_step=30,
            progress_total=120,
            progress_loss=0.6123,
            started_at=timezone.now() - timedelta(seconds=60),
        ),
    }


@pytest.fixture
def carol(db):
    return UserFactory(username="carol")


def status_url(project):
    return reverse("rewardmodel:status", args=[project.slug])


def chart_points(html: str) -> list[int]:
    return [int(v) for v in re.findall(r'class="rm-chart__point[^"]*" data-version="(\d+)"', html)]


# -- who sees what ---------------------------------------------------------------


def test_it_shows_staff_the_versions_the_chart_and_the_training_in_progress(client, admin_user, project, history):
    client.force_login(admin_user)
    response = client.get(status_url(project))
    assert response.status_code == 200
    html = response.content.decode()

    # History: one row per version, newest first.
    assert re.findall(r'<tr data-version="(\d+)"', html) == ["4", "3", "2", "1"]
    # The active version and its metrics.
    assert 'data-field="active-version">2<' in html
    assert "64.0%" in html and "71.0%" in html  # accuracy, reference accuracy
    # The chart: a real SVG, one point per evaluated version, the active one marked.
    assert '<svg class="rm-chart"' in html
    assert chart_points(html) == [1, 2]
    assert 'class="rm-chart__point rm-chart__point--active" data-version="2"' in html
    # The training in progress: a bar at 30 of 120, the step, the loss.
    assert re.search(r'<progress class="meter rm-progress" data-field="bar" max="120" value="30"', html)
    assert "Step 30 of 120" in html and "loss 0.6123" in html and "(25%)" in html
    # Staff read the real error, and have the buttons.
    assert "RuntimeError: CUDA out of memory (in train.py:212)" in html
    for action in ("retrain", "refresh", "activate"):
        assert f'data-action="{action}"' in html
    # Activate is offered for the ready version only.
    assert html.count('data-action="activate"') == 1
    assert reverse("rewardmodel:activate", args=[project.slug, 1]) in html
    # The page polls while a training runs.
    assert 'data-busy="true"' in html
    assert reverse("rewardmodel_api:training", args=[project.pk]) in html


def test_it_shows_raters_a_read_only_page_with_errors_in_plain_words(client, alice, project, history):
    ProjectLoop.objects.create(
        project=project,
        retrain_pending=True,
        pending_reason="threshold",
        pending_since=timezone.now(),
        enqueue_error="OperationalError: Error 111 connecting to 10.0.0.7:6379. Connection refused.",
    )
    ComparisonFactory(prompt__project=project, priority=0.9, selected_by="uncertainty")
    client.force_login(alice)

    html = client.get(status_url(project)).content.decode()

    assert "data-action=" not in html and 'data-role="staff-actions"' not in html
    assert "<form" not in html.split('id="main"', 1)[1]  # no buttons of any kind in the page body
    assert "RuntimeError" not in html and "train.py" not in html and "/srv/models" not in html
    assert "This training did not finish. The previous version keeps serving." in html
    assert "10.0.0.7" not in html and "Error 111" not in html
    assert 'data-table="queue-top"' not in html
    # The same versions and chart as staff see.
    assert re.findall(r'<tr data-version="(\d+)"', html) == ["4", "3", "2", "1"]
    assert chart_points(html) == [1, 2]


def test_it_answers_404_to_users_outside_the_project(client, carol, project, history):
    client.force_login(carol)
    assert client.get(status_url(project)).status_code == 404
    assert client.post(reverse("rewardmodel:retrain", args=[project.slug])).status_code == 404
    assert client.post(reverse("rewardmodel:activate", args=[project.slug, 1])).status_code == 404
    assert not ProjectLoop.objects.filter(project=project).exists()
    assert RewardModelVersion.objects.get(project=project, version=1).status == "ready"


def test_it_sends_anonymous_visitors_to_the_login_page(client, project):
    response = client.get(status_url(project))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


def test_it_forbids_raters_the_buttons(client, alice, project, history):
    client.force_login(alice)
    assert client.post(reverse("rewardmodel:retrain", args=[project.slug])).status_code == 403
    assert client.post(reverse("rewardmodel:refresh", args=[project.slug])).status_code == 403
    assert client.post(reverse("rewardmodel:activate", args=[project.slug, 1])).status_code == 403
    assert not ProjectLoop.objects.filter(project=project).exists()
    assert RewardModelVersion.objects.get(project=project, version=1).status == "ready"


def test_it_reads_only_with_get(client, admin_user, project):
    client.force_login(admin_user)
    assert client.get(reverse("rewardmodel:retrain", args=[project.slug])).status_code == 405
    assert client.post(status_url(project)).status_code == 405


def test_it_stops_polling_when_nothing_runs(client, admin_user, project):
    make_version(project, 1, "active", accuracy=0.6)
    client.force_login(admin_user)
    html = client.get(status_url(project)).content.decode()
    assert 'data-busy="false"' in html
    assert "No training is running." in html


def test_it_welcomes_a_project_without_versions(client, admin_user, project):
    client.force_login(admin_user)
    html = client.get(status_url(project)).content.decode()
    assert "No active version yet." in html
    assert "No versions yet" in html
    assert "<svg" not in html


# -- the buttons -----------------------------------------------------------------


def test_retrain_now_marks_the_retrain_pending_and_hands_it_to_the_broker(client, admin_user, project, broker):
    client.force_login(admin_user)

    response = client.post(reverse("rewardmodel:retrain", args=[project.slug]), follow=True)

    assert response.redirect_chain[-1][0] == status_url(project)
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.pending_reason == "manual"
    assert loop.enqueued_at is not None and loop.enqueue_error == ""
    assert published(broker) == [("rewardmodel.tasks.retrain", [project.pk], {"trigger": "manual"})]
    assert "Retrain requested" in response.content.decode()


def test_retrain_now_with_the_broker_down_returns_fast_and_shows_why(client, admin_user, project, broker_down):
    client.force_login(admin_user)

    started = time.monotonic()
    response = client.post(reverse("rewardmodel:retrain", args=[project.slug]), follow=True)
    elapsed = time.monotonic() - started

    assert response.status_code == 200 and elapsed < 5
    loop = ProjectLoop.objects.get(project=project)
    assert loop.retrain_pending and loop.enqueued_at is None
    assert "Connection refused" in loop.enqueue_error or "Error 111" in loop.enqueue_error
    html = response.content.decode()
    assert "Waiting for the broker" in html
    assert 'data-field="enqueue-error"' in html and loop.enqueue_error.split(".")[0] in html
    assert "task queue could not be reached" in html
    # The page keeps an eye on the pending retrain.
    assert 'data-busy="true"' in html


def test_retrain_now_twice_merges_the_second_request(client, admin_user, project, broker):
    client.force_login(admin_user)
    client.post(reverse("rewardmodel:retrain", args=[project.slug]))

    response = client.post(reverse("rewardmodel:retrain", args=[project.slug]), follow=True)

    assert ProjectLoop.objects.get(project=project).coalesced_triggers == 1
    assert len(published(broker)) == 1
    assert "already pending" in response.content.decode()


def test_refresh_pairs_now_publishes_a_refresh(client, admin_user, project, broker):
    client.force_login(admin_user)
    response = client.post(reverse("rewardmodel:refresh", args=[project.slug]), follow=True)
    assert published(broker) == [("rewardmodel.tasks.refresh", [project.pk], {})]
    assert "Refresh of the pairs requested" in response.content.decode()


def test_refresh_pairs_now_with_the_broker_down_says_so(client, admin_user, project, broker_down):
    client.force_login(admin_user)
    response = client.post(reverse("rewardmodel:refresh", args=[project.slug]), follow=True)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Pairs were not refreshed" in html and "task queue could not be reached" in html


def test_activate_switches_the_serving_version(client, admin_user, project, history, broker):
    client.force_login(admin_user)

    response = client.post(reverse("rewardmodel:activate", args=[project.slug, 1]), follow=True)

    statuses = dict(RewardModelVersion.objects.filter(project=project).values_list("version", "status"))
    assert statuses == {1: "active", 2: "ready", 3: "failed", 4: "training"}
    assert "Version 1 is now active" in response.content.decode()
    # The queue is re-ranked by the newly active version.
    assert published(broker) == [("rewardmodel.tasks.refresh", [project.pk], {})]


def test_activate_refuses_a_version_that_is_not_ready(client, admin_user, project, history, broker):
    client.force_login(admin_user)

    response = client.post(reverse("rewardmodel:activate", args=[project.slug, 3]), follow=True)

    assert "only a ready version can be activated" in response.content.decode()
    assert RewardModelVersion.objects.get(project=project, status="active").version == 2
    assert published(broker) == []
    assert client.post(reverse("rewardmodel:activate", args=[project.slug, 99])).status_code == 404


# -- selectors -------------------------------------------------------------------


def status_queries(project, *, staff: bool) -> int:
    with CaptureQueriesContext(connection) as queries:
        project_status(project=project, staff=staff)
    return len(queries)


def test_the_status_takes_a_constant_number_of_queries(project, alice):
    make_version(project, 1, "active", accuracy=0.6)
    ComparisonFactory(prompt__project=project)
    few_staff, few_rater = status_queries(project, staff=True), status_queries(project, staff=False)

    for number in range(2, 40):
        make_version(project, number, "ready", accuracy=0.6)
    for _ in range(15):
        comparison = ComparisonFactory(prompt__project=project, selected_by="uncertainty")
        Judgment.objects.create(
            comparison=comparison, rater=alice, project=project, outcome="a", strength=1, time_spent_ms=900, left="a"
        )
    ProjectLoop.objects.create(project=project, retrain_pending=True)

    assert status_queries(project, staff=True) == few_staff == 7
    assert status_queries(project, staff=False) == few_rater == 5


def test_the_status_counts_judgments_since_the_last_version_and_the_queue(project, alice):
    make_version(project, 1, "active", accuracy=0.6, judgments_count=1)
    for priority, reason in [(0.2, "uncertainty"), (0.9, "exploration"), (0.5, "uncertainty")]:
        comparison = ComparisonFactory(prompt__project=project, priority=priority, selected_by=reason)
        Judgment.objects.create(
            comparison=comparison, rater=alice, project=project, outcome="b", strength=2, time_spent_ms=900, left="a"
        )
    ComparisonFactory(prompt__project=project, priority=5.0, status=Comparison.Status.RETIRED)

    status = project_status(project=project, staff=True)

    assert status.queue.judgments_since_last_version == 2
    assert status.queue.judgments_to_next_retrain == project.retrain_every - 2
    assert status.acquisition.open_comparisons == 3
    assert status.acquisition.open_by_selected_by == {"uncertainty": 2, "exploration": 1}
    assert [item.priority for item in status.acquisition.top] == [0.9, 0.5, 0.2]
    assert status.active.version == 1 and status.training is None and not status.busy


def test_new_judgments_are_counted_above_the_last_one_the_version_read(project, alice):
    def judge():
        return Judgment.objects.create(
            comparison=ComparisonFactory(prompt__project=project),
            rater=alice,
            project=project,
            outcome="a",
            strength=1,
            time_spent_ms=500,
            left="a",
        )

    old = [judge() for _ in range(3)]
    version = make_version(project, 1, "active", accuracy=0.6, judgments_count=3)
    RewardModelVersion.objects.filter(pk=version.pk).update(
        data_snapshot={"judgments": 3, "last_judgment_id": old[-1].pk}
    )
    judge(), judge()
    old[0].delete()  # deleting what the version read is not a new judgment

    with CaptureQueriesContext(connection) as queries:
        assert pipeline.new_judgments_since_last_version(project) == 2
    count = next(q["sql"] for q in queries.captured_queries if "COUNT(*)" in q["sql"].upper())
    assert f'"id" > {old[-1].pk}' in count  # a range above the last id read, not every judgment

    RewardModelVersion.objects.create(project=project, version=2, status="queued")  # has read nothing yet
    assert pipeline.new_judgments_since_last_version(project) == 4


def test_the_training_estimates_the_time_left(project):
    now = timezone.now()
    make_version(project, 1, "training", progress_step=25, progress_total=100, started_at=now - timedelta(seconds=50))
    ProjectLoop.objects.create(project=project, lock_owner="task-1", lock_expires_at=now + timedelta(minutes=4))

    training = project_status(project=project, staff=True, now=now).training

    assert training.percent == 25
    assert training.eta_seconds == pytest.approx(150)
    assert training.eta_text == "about 2 min left" or training.eta_text == "about 3 min left"
    assert not training.stalled


def test_a_training_whose_lease_ran_out_is_shown_stalled_to_staff(project):
    now = timezone.now()
    make_version(project, 1, "training", progress_step=5, progress_total=100)
    ProjectLoop.objects.create(project=project, lock_owner="task-1", lock_expires_at=now - timedelta(minutes=1))

    assert project_status(project=project, staff=True, now=now).training.stalled
    assert not project_status(project=project, staff=False, now=now).training.stalled


def test_the_schedule_shows_the_loops_periodic_tasks_with_their_next_run():
    now = datetime(2026, 11, 23, 17, 0, 30, tzinfo=UTC)
    PeriodicTask.objects.filter(task="rewardmodel.tasks.reconcile").update(last_run_at=now - timedelta(seconds=20))

    tasks = {t.task: t for t in scheduled_tasks(now=now)}

    reconcile = tasks["rewardmodel.tasks.reconcile"]
    assert reconcile.schedule == "every minute" and reconcile.enabled and not reconcile.overdue
    assert reconcile.next_run_at == now + timedelta(seconds=40)
    nightly = tasks["rewardmodel.tasks.retrain_projects_with_new_judgments"]
    assert nightly.schedule.startswith("30 2 * * *")
    assert nightly.next_run_at == datetime(2026, 11, 24, 2, 30, tzinfo=UTC)


def test_the_schedule_warns_when_beat_seems_not_to_run():
    now = timezone.now()
    PeriodicTask.objects.filter(task="rewardmodel.tasks.reconcile").update(last_run_at=now - timedelta(minutes=30))
    PeriodicTask.objects.filter(task="rewardmodel.tasks.retrain_projects_with_new_judgments").update(enabled=False)

    tasks = {t.task: t for t in scheduled_tasks(now=now)}

    assert tasks["rewardmodel.tasks.reconcile"].overdue
    assert tasks["rewardmodel.tasks.retrain_projects_with_new_judgments"].next_run_at is None


# -- the chart ---------------------------------------------------------------------


def row(version, accuracy, *, status="ready", n=400, reference=None):
    metrics = {"accuracy": accuracy, "n": n}
    if reference is not None:
        metrics["reference_accuracy"] = reference
    return version_row(
        RewardModelVersion(version=version, status=status, metrics=metrics, created_at=timezone.now()), staff=True
    )


def test_the_chart_scales_versions_along_x_and_accuracy_along_y():
    chart = accuracy_chart([row(3, 0.8, status="active"), row(1, 0.6), row(2, 0.7)], width=640, height=260)

    xs = [p.x for p in chart.points]
    ys = [p.y for p in chart.points]
    assert [p.version for p in chart.points] == [1, 2, 3]
    # Evenly spaced versions, inside the plot area; higher accuracy is higher up (smaller y).
    assert chart.left < xs[0] < xs[1] < xs[2] < chart.right
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1])
    assert chart.bottom > ys[0] > ys[1] > ys[2] > chart.top
    assert ys[0] - ys[1] == pytest.approx(ys[1] - ys[2], abs=0.02)
    # The y axis covers chance (50%) and the points' 95% intervals, with round ticks.
    labels = [t.label for t in chart.y_ticks]
    assert labels[0] == "50%" and labels[-1] in ("90%", "100%")
    assert chart.chance_y == pytest.approx(chart.bottom)
    assert all(p.y_high < p.y < p.y_low for p in chart.points)
    # The active version is the one highlighted.
    assert [p.active for p in chart.points] == [False, False, True]
    assert [t.label for t in chart.x_ticks] == ["v1", "v2", "v3"]


def test_the_chart_puts_a_single_version_in_the_middle():
    chart = accuracy_chart([row(1, 0.62)])
    assert chart.points[0].x == pytest.approx(chart.middle_x)


def test_the_chart_thins_out_version_ticks():
    chart = accuracy_chart([row(n, 0.6 + n / 1000) for n in range(1, 61)])
    assert len(chart.points) == 60
    assert len(chart.x_ticks) <= 13 and chart.x_ticks[-1].label == "v60"


def test_the_chart_renders_well_formed_accessible_svg():
    rows = [row(1, 0.55), row(2, 0.61, reference=0.7), row(4, 0.66, status="active")]
    rows.append(version_row(RewardModelVersion(version=3, status="failed", created_at=timezone.now()), staff=True))

    svg = ET.fromstring(render_accuracy_chart(accuracy_chart(rows)))

    assert svg.tag == f"{SVG}svg" and svg.get("role") == "img"
    assert svg.find(f"{SVG}title").text == "Held-out accuracy by reward-model version"
    description = svg.find(f"{SVG}desc").text
    assert "3 evaluated versions" in description and "Active: v4 at 66.0%" in description
    points = svg.findall(f".//{SVG}g[@data-version]")
    assert [p.get("data-version") for p in points] == ["1", "2", "4"]  # the failed v3 has no point
    assert [p.find(f"{SVG}title").text for p in points][2].endswith("— active")
    assert len(svg.findall(f".//{SVG}polyline")) == 2  # accuracy, reference labels


def test_a_project_with_only_reference_labels_gets_the_reference_line():
    # Bootstrapped from an imported dataset: no rater held-out accuracy yet, only agreement with the labels.
    rows = [
        version_row(
            RewardModelVersion(
                version=n,
                status=status,
                metrics={"reference_accuracy": acc, "reference_n": 333},
                created_at=timezone.now(),
            ),
            staff=True,
        )
        for n, status, acc in ((1, "ready", 0.58), (2, "active", 0.60))
    ]

    chart = accuracy_chart(rows)
    svg = ET.fromstring(render_accuracy_chart(chart))

    assert not chart.empty and chart.points == []
    assert [(p.version, p.active) for p in chart.reference_points] == [(1, False), (2, True)]
    assert chart.reference_points[1].y < chart.reference_points[0].y  # 60% above 58%
    assert "No version has a held-out accuracy" in chart.description and "Active: v2 at 60.0%" in chart.description
    assert len(svg.findall(f".//{SVG}polyline")) == 1  # the reference line alone
    titles = [c.find(f"{SVG}title").text for c in svg.findall(f".//{SVG}circle")]
    assert titles[1] == "v2: 60.0% agreement with the imported reference labels — active"


def test_the_chart_without_versions_says_so():
    empty = accuracy_chart([])
    assert empty.empty
    assert "No versions yet" in render_accuracy_chart(empty)
    unevaluated = accuracy_chart([SimpleNamespace(version=1, status="failed", accuracy=None, n=None)])
    assert "No evaluated versions yet" in render_accuracy_chart(unevaluated)
