"""Pausing and excluding raters (labeling.raters), and what a paused rater meets."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from labeling.assignment import next_comparison_for
from labeling.judgments import LeaseConflict, record_judgment
from labeling.models import Assignment, Judgment, RaterAction, RaterStanding
from labeling.raters import excluded_rater_ids, is_paused, set_excluded, set_paused
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentInputFactory

pytestmark = pytest.mark.django_db


def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def test_pausing_releases_the_raters_live_leases_to_others(project, alice, bob, admin_user):
    project.overlap = 1
    project.save()
    comparison = ComparisonFactory(prompt__project=project)
    lease = next_comparison_for(rater=alice, project=project)
    elsewhere = AssignmentFactory(rater=alice)  # another project: untouched
    assert next_comparison_for(rater=bob, project=project) is None

    before = timezone.now()
    standing = set_paused(project=project, rater=alice, paused=True, by=admin_user, reason="Too fast")

    assert standing.paused and is_paused(project=project, rater=alice)
    lease.refresh_from_db()
    assert lease.state == Assignment.State.ACTIVE and before <= lease.expires_at <= timezone.now()
    elsewhere.refresh_from_db()
    assert elsewhere.expires_at > timezone.now()
    assert next_comparison_for(rater=bob, project=project).comparison_id == comparison.pk


def test_a_paused_rater_gets_no_task_and_no_judgment_accepted(project, alice, admin_user):
    comparison = ComparisonFactory(prompt__project=project)
    ComparisonFactory(prompt__project=project)
    next_comparison_for(rater=alice, project=project)
    set_paused(project=project, rater=alice, paused=True, by=admin_user)
    client = api(alice)

    assert client.get(f"/api/projects/{project.pk}/next/").status_code == 204
    # The released lease expired just now, well within the grace: still refused.
    answer = client.post(
        "/api/judgments/",
        {"comparison": comparison.pk, "outcome": "left", "strength": 2, "time_spent_ms": 4000},
        format="json",
    )
    assert answer.status_code == 409
    assert not Judgment.objects.exists()
    assert not Assignment.objects.filter(rater=alice, expires_at__gt=timezone.now()).exists()


def test_a_paused_rater_sees_that_nothing_is_there_for_them_now(project, alice, admin_user):
    ComparisonFactory(prompt__project=project)
    set_paused(project=project, rater=alice, paused=True, by=admin_user)
    client = Client()
    client.force_login(alice)
    page = client.get(reverse("labeling:label", args=[project.slug])).content.decode()
    assert 'data-state="done"' in page and "Nothing is available for you right now" in page


def test_a_paused_rater_still_gets_back_a_judgment_they_made(project, alice, admin_user):
    comparison = ComparisonFactory(prompt__project=project)
    AssignmentFactory(comparison=comparison, rater=alice)
    first = record_judgment(rater=alice, judgment=JudgmentInputFactory(comparison_id=comparison.pk))
    set_paused(project=project, rater=alice, paused=True, by=admin_user)

    again = record_judgment(rater=alice, judgment=JudgmentInputFactory(comparison_id=comparison.pk))

    assert not again.created and again.judgment.pk == first.judgment.pk


def test_a_lease_raced_past_the_pause_is_neither_served_nor_answered(project, alice, admin_user):
    comparison = ComparisonFactory(prompt__project=project)
    set_paused(project=project, rater=alice, paused=True, by=admin_user)
    AssignmentFactory(comparison=comparison, rater=alice)  # issued as the pause committed
    assert next_comparison_for(rater=alice, project=project) is None
    with pytest.raises(LeaseConflict):
        record_judgment(rater=alice, judgment=JudgmentInputFactory(comparison_id=comparison.pk))


def test_resuming_gives_tasks_again(project, alice, admin_user):
    comparison = ComparisonFactory(prompt__project=project)
    set_paused(project=project, rater=alice, paused=True, by=admin_user)
    assert next_comparison_for(rater=alice, project=project) is None

    standing = set_paused(project=project, rater=alice, paused=False, by=admin_user, reason="Retrained")

    assert not standing.paused and not is_paused(project=project, rater=alice)
    task = api(alice).get(f"/api/projects/{project.pk}/next/")
    assert task.status_code == 200 and task.json()["comparison"] == comparison.pk


def test_pausing_a_lease_issued_this_instant_keeps_expiry_after_issue(project, alice, admin_user):
    ComparisonFactory(prompt__project=project)
    now = timezone.now()
    lease = next_comparison_for(rater=alice, project=project, now=now)
    set_paused(project=project, rater=alice, paused=True, by=admin_user, now=now)
    lease.refresh_from_db()
    assert lease.issued_at < lease.expires_at <= now + timedelta(milliseconds=1)


def test_every_change_is_recorded_with_who_when_and_why(project, alice, bob, admin_user):
    before = timezone.now()
    set_paused(project=project, rater=alice, paused=True, by=admin_user, reason="  Answers in 300 ms  ")
    set_paused(project=project, rater=alice, paused=True, by=admin_user)  # already paused: no change
    set_excluded(project=project, rater=alice, excluded=True, by=bob, reason="Fails gold")
    set_excluded(project=project, rater=alice, excluded=False, by=admin_user)
    set_paused(project=project, rater=alice, paused=False, by=admin_user)

    actions = list(RaterAction.objects.filter(project=project, rater=alice).order_by("at", "pk"))
    assert [(a.action, a.by, a.reason) for a in actions] == [
        (RaterAction.Action.PAUSE, admin_user, "Answers in 300 ms"),
        (RaterAction.Action.EXCLUDE, bob, "Fails gold"),
        (RaterAction.Action.INCLUDE, admin_user, ""),
        (RaterAction.Action.RESUME, admin_user, ""),
    ]
    assert all(before <= a.at <= timezone.now() for a in actions)
    assert RaterStanding.objects.get(project=project, rater=alice).paused is False


def test_excluded_raters_are_listed_per_project(project, alice, bob, admin_user):
    other = AssignmentFactory(rater=bob).project
    set_excluded(project=project, rater=alice, excluded=True, by=admin_user)
    set_excluded(project=other, rater=bob, excluded=True, by=admin_user)
    set_paused(project=project, rater=bob, paused=True, by=admin_user)

    assert excluded_rater_ids(project=project) == {alice.pk}
    assert excluded_rater_ids(project=other) == {bob.pk}
    # Excluded is not paused: alice still gets tasks.
    ComparisonFactory(prompt__project=project)
    assert next_comparison_for(rater=alice, project=project) is not None
