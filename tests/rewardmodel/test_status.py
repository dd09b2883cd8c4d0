"""The status page: who sees what, its buttons against a real broker, and the selectors behind it."""

import re
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from labeling.models import Comparison
from rewardmodel.models import ProjectLoop, RewardModelVersion
from rewardmodel.status import project_status
from tests.factories import ComparisonFactory, JudgmentFactory
from tests.rewardmodel.conftest import published
from tests.rewardmodel.factories import LoopSettingsFactory, ProjectLoopFactory, RewardModelVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(project):
    """v1 ready, v2 active (with reference labels), v3 failed with a technical error, v4 training."""
    version = RewardModelVersionFactory
    return {
        1: version(project=project, version=1, status="ready", accuracy=0.58),
        2: version(project=project, version=2, status="active", accuracy=0.64, reference_accuracy=0.71, reference_n=90),
        3: version(
            project=project,
            version=3,
            status="failed",
            error="RuntimeError: CUDA out of memory (in train.py:212) at /srv/models/demo/3",
        ),
        4: version(
            project=project,
            version=4,
            status="training",
            progress_step=30,
            progress_total=120,
            progress_loss=0.6123,
            started_at=timezone.now() - timedelta(seconds=60),
        ),
    }


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
    ProjectLoopFactory(
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
    RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.6)
    client.force_login(admin_user)
    html = client.get(status_url(project)).content.decode()
    assert 'data-busy="false"' in html
    assert "No training is running." in html


def test_it_welcomes_a_project_without_versions(client, admin_user, project):
    client.force_login(admin_user)
    html = client.get(status_url(project)).content.decode()
    assert "No active version yet." in html
    assert "No versions yet" in html and "wait for 50 judgments" in html  # the default retrain_every
    assert "<svg" not in html


def test_reading_the_page_writes_nothing(client, admin_user, project, history, django_assert_max_num_queries):
    client.force_login(admin_user)
    with django_assert_max_num_queries(20) as queries:
        assert client.get(status_url(project)).status_code == 200
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE"))]
    assert writes == [] or all("django_session" in sql for sql in writes)
    assert not ProjectLoop.objects.exists()


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
    RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.6)
    ComparisonFactory(prompt__project=project)
    few_staff, few_rater = status_queries(project, staff=True), status_queries(project, staff=False)

    RewardModelVersionFactory.create_batch(38, project=project, status="ready", accuracy=0.6)
    JudgmentFactory.create_batch(15, comparison__prompt__project=project, comparison__selected_by="uncertainty")
    ProjectLoopFactory(project=project, retrain_pending=True)

    assert status_queries(project, staff=True) == few_staff == 7
    assert status_queries(project, staff=False) == few_rater == 5


def test_the_status_counts_judgments_since_the_last_version_and_the_queue(project, loop_settings, alice):
    loop_settings.retrain_every = 10
    loop_settings.save()
    RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.6, judgments_count=1)
    for priority, reason in [(0.2, "uncertainty"), (0.9, "exploration"), (0.5, "uncertainty")]:
        JudgmentFactory(
            comparison__prompt__project=project,
            comparison__priority=priority,
            comparison__selected_by=reason,
            rater=alice,
        )
    ComparisonFactory(prompt__project=project, priority=5.0, status=Comparison.Status.RETIRED)

    status = project_status(project=project, staff=True)

    assert status.queue.judgments_since_last_version == 2
    assert status.queue.retrain_every == 10 and status.queue.judgments_to_next_retrain == 8
    assert status.acquisition.open_comparisons == 3
    assert status.acquisition.open_by_selected_by == {"uncertainty": 2, "exploration": 1}
    assert [item.priority for item in status.acquisition.top] == [0.9, 0.5, 0.2]
    assert status.active.version == 1 and status.training is None and not status.busy


def test_the_status_shows_the_projects_loop_settings_or_the_defaults(project):
    default = project_status(project=project, staff=True)
    assert (default.queue.retrain_every, default.acquisition.strategy, default.acquisition.pair_budget) == (
        50,
        "doptimal",
        200,
    )

    LoopSettingsFactory(project=project, acquisition="ensemble", exploration_share=0.25, pair_budget=7)
    acquisition = project_status(project=project, staff=False).acquisition
    assert (acquisition.strategy, acquisition.exploration_share, acquisition.pair_budget) == ("ensemble", 0.25, 7)
    assert acquisition.strategy_label.startswith("Ensemble disagreement")


def test_imported_comparisons_count_as_import_order_in_the_queue(project):
    ComparisonFactory(prompt__project=project, selected_by="import")
    ComparisonFactory(prompt__project=project, selected_by="")  # imported before selected_by was kept

    assert project_status(project=project, staff=True).acquisition.open_by_selected_by == {"import": 2}


def test_the_training_estimates_the_time_left(project):
    now = timezone.now()
    RewardModelVersionFactory(
        project=project,
        version=1,
        status="training",
        progress_step=25,
        progress_total=100,
        started_at=now - timedelta(seconds=50),
    )
    ProjectLoopFactory(project=project, lock_owner="task-1", lock_expires_at=now + timedelta(minutes=4))

    training = project_status(project=project, staff=True, now=now).training

    assert training.percent == 25
    assert training.eta_seconds == pytest.approx(150)
    assert training.eta_text == "about 2 min left" or training.eta_text == "about 3 min left"
    assert not training.stalled


def test_a_training_whose_lease_ran_out_is_shown_stalled_to_staff(project):
    now = timezone.now()
    RewardModelVersionFactory(project=project, version=1, status="training", progress_step=5, progress_total=100)
    ProjectLoopFactory(project=project, lock_owner="task-1", lock_expires_at=now - timedelta(minutes=1))

    assert project_status(project=project, staff=True, now=now).training.stalled
    assert not project_status(project=project, staff=False, now=now).training.stalled


def test_it_says_too_few_pairs_to_judge_instead_of_an_accuracy_on_one_pair(client, admin_user, project):
    RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.0, n=1)
    client.force_login(admin_user)
    html = client.get(reverse("rewardmodel:status", args=[project.slug])).content.decode()
    served = re.search(r'<dd data-metric="accuracy">(.*?)</dd>', html, re.S).group(1)
    assert "too few pairs to judge (n=1)" in served
    assert "±" not in html


def test_it_shows_the_wilson_interval_of_an_accuracy_on_enough_pairs(client, admin_user, project):
    RewardModelVersionFactory(project=project, version=1, status="active", accuracy=0.6, n=400)
    client.force_login(admin_user)
    html = client.get(reverse("rewardmodel:status", args=[project.slug])).content.decode()
    served = re.search(r'<dd data-metric="accuracy">(.*?)</dd>', html, re.S).group(1)
    # 240/400: Wilson 95% interval 55.1%-64.7%
    assert "60.0%" in served and "(55.1–64.7%)" in served


@pytest.fixture
def bare_staff(db):
    from tests.factories import UserFactory

    return UserFactory(username="clerk", is_staff=True)


def test_staff_without_permissions_cannot_even_find_the_project(client, bare_staff, project, history, broker):
    client.force_login(bare_staff)
    ready = history[1]
    for url in (
        reverse("rewardmodel:activate", args=[project.slug, ready.version]),
        reverse("rewardmodel:retrain", args=[project.slug]),
        reverse("rewardmodel:refresh", args=[project.slug]),
    ):
        assert client.post(url).status_code == 404
    assert client.get(reverse("rewardmodel:status", args=[project.slug])).status_code == 404
    ready.refresh_from_db()
    assert ready.status == "ready"
    assert RewardModelVersion.objects.get(project=project, status="active").version == 2
    assert not ProjectLoop.objects.filter(project=project, retrain_pending=True).exists()
    assert published(broker) == []


def test_a_rater_of_the_project_sees_no_button_and_is_refused_each_action(client, alice, project, history, broker):
    client.force_login(alice)
    for url in (
        reverse("rewardmodel:activate", args=[project.slug, 1]),
        reverse("rewardmodel:retrain", args=[project.slug]),
        reverse("rewardmodel:refresh", args=[project.slug]),
    ):
        assert client.post(url).status_code == 403
    assert RewardModelVersion.objects.get(project=project, status="active").version == 2
    assert not ProjectLoop.objects.filter(project=project, retrain_pending=True).exists()
    assert published(broker) == []
    html = client.get(reverse("rewardmodel:status", args=[project.slug])).content.decode()
    assert 'data-action="retrain"' not in html and 'data-action="activate"' not in html


def test_a_user_with_the_loop_permissions_may_activate_and_retrain(client, bare_staff, project, history, broker):
    from django.contrib.auth.models import Permission

    bare_staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["change_projectloop", "change_rewardmodelversion"])
    )
    client.force_login(bare_staff)
    # The permissions count only on the projects one manages.
    assert client.post(reverse("rewardmodel:activate", args=[project.slug, 1])).status_code == 404
    assert RewardModelVersion.objects.get(project=project, status="active").version == 2
    project.managers.add(bare_staff)
    assert client.post(reverse("rewardmodel:activate", args=[project.slug, 1])).status_code == 302
    assert RewardModelVersion.objects.get(project=project, status="active").version == 1
    assert client.post(reverse("rewardmodel:retrain", args=[project.slug])).status_code == 302
    assert ProjectLoop.objects.get(project=project).retrain_pending
