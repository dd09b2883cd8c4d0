from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from labeling.assignment import next_comparison_for, skip_comparison
from labeling.judgments import ComparisonNotFound, InvalidJudgment, LeaseConflict, delete_judgments, record_judgment
from labeling.models import Assignment, Comparison, Judgment
from labeling.signals import judgment_recorded
from tests.factories import (
    AssignmentFactory,
    ComparisonFactory,
    JudgmentFactory,
    JudgmentInputFactory,
    ProjectFactory,
)

pytestmark = pytest.mark.django_db


def submit(rater, comparison_id, *, project=None, now=None, **fields):
    judgment = JudgmentInputFactory(comparison_id=comparison_id, **fields)
    return record_judgment(rater=rater, judgment=judgment, project=project, now=now)


def test_it_stores_left_and_right_as_a_and_b_in_the_order_shown(project, alice):
    ComparisonFactory(prompt__project=project)
    lease = next_comparison_for(rater=alice, project=project)
    recorded = submit(
        alice,
        lease.comparison_id,
        outcome="right",
        strength=3,
        criteria={"helpfulness": "left", "harmlessness": "tie"},
        flags=["unsafe"],
        rationale="  Right one is accurate.  ",
    )
    judgment = Judgment.objects.get()
    assert recorded.created and recorded.judgment.pk == judgment.pk
    right = "b" if lease.left == "a" else "a"
    assert judgment.outcome == right
    assert judgment.left == lease.left
    assert judgment.criteria == {"helpfulness": lease.left, "harmlessness": "tie"}
    assert judgment.strength == 3
    assert judgment.flags == ["unsafe"]
    assert judgment.rationale == "Right one is accurate."
    assert Assignment.objects.get().state == Assignment.State.SUBMITTED


def test_a_second_submission_returns_the_stored_judgment(project, alice):
    ComparisonFactory(prompt__project=project)
    lease = next_comparison_for(rater=alice, project=project)
    first = submit(alice, lease.comparison_id, outcome="left")
    again = submit(alice, lease.comparison_id, outcome="right")
    assert not again.created
    assert again.judgment.pk == first.judgment.pk
    assert again.judgment.outcome == first.judgment.outcome
    assert Judgment.objects.count() == 1
    lease.comparison.refresh_from_db()
    assert lease.comparison.judgments_count == 1


def test_it_rejects_a_judgment_without_a_lease_when_the_comparison_is_full(project, alice, bob):
    project.overlap = 1
    project.save()
    comparison = ComparisonFactory(prompt__project=project)
    next_comparison_for(rater=bob, project=project)
    with pytest.raises(LeaseConflict):
        submit(alice, comparison.pk)
    assert not Judgment.objects.exists()


def test_it_rejects_judgments_on_comparisons_the_rater_was_never_given(project, alice):
    # The attack: posting straight to twenty open comparisons, skipping the queue.
    comparisons = ComparisonFactory.create_batch(20, prompt__project=project)
    for comparison in comparisons:
        with pytest.raises(LeaseConflict, match="You were not assigned this comparison"):
            submit(alice, comparison.pk)
    assert not Judgment.objects.exists()
    assert set(Comparison.objects.values_list("judgments_count", "status")) == {(0, Comparison.Status.OPEN)}


def test_it_rejects_a_judgment_on_a_comparison_the_rater_skipped(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    lease = next_comparison_for(rater=alice, project=project)
    skip_comparison(rater=alice, project=project, comparison_id=lease.comparison_id)
    with pytest.raises(LeaseConflict):
        submit(alice, comparison.pk)
    assert not Judgment.objects.exists()


def test_it_accepts_a_late_answer_within_the_grace_in_the_order_of_the_lease(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    lease = AssignmentFactory(comparison=comparison, rater=alice, left="b")
    late = lease.expires_at + project.lease_grace - timedelta(seconds=1)

    recorded = submit(alice, comparison.pk, outcome="left", now=late)

    assert recorded.created
    assert (recorded.judgment.left, recorded.judgment.outcome) == ("b", "b")
    lease.refresh_from_db()
    assert lease.state == Assignment.State.SUBMITTED
    comparison.refresh_from_db()
    assert comparison.judgments_count == 1


def test_it_rejects_an_answer_that_comes_after_the_grace(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    lease = AssignmentFactory(comparison=comparison, rater=alice)
    with pytest.raises(LeaseConflict):
        submit(alice, comparison.pk, now=lease.expires_at + project.lease_grace + timedelta(seconds=1))
    assert not Judgment.objects.exists()


def test_it_rejects_a_late_answer_when_others_took_the_comparison_to_its_overlap(project, alice, bob, carol):
    project.raters.add(carol)
    comparison = ComparisonFactory(prompt__project=project)  # overlap 2
    now = timezone.now()
    lease = AssignmentFactory(comparison=comparison, rater=alice, issued_at=now)
    later = lease.expires_at + timedelta(seconds=1)
    # Alice's lease ran out: bob judged it and carol holds the last slot.
    JudgmentFactory(comparison=comparison, rater=bob)
    assert next_comparison_for(rater=carol, project=project, now=later).comparison_id == comparison.pk

    with pytest.raises(LeaseConflict):
        submit(alice, comparison.pk, now=later)

    assert not Judgment.objects.filter(rater=alice).exists()
    comparison.refresh_from_db()
    assert comparison.judgments_count == 1


def test_a_retry_gets_the_stored_judgment_whatever_became_of_the_lease(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    lease = AssignmentFactory(comparison=comparison, rater=alice)
    first = submit(alice, comparison.pk)

    again = submit(alice, comparison.pk, now=lease.expires_at + project.lease_grace + timedelta(days=1))

    assert not again.created and again.judgment.pk == first.judgment.pk
    assert Judgment.objects.count() == 1


def test_it_rejects_a_comparison_of_a_project_the_rater_is_not_on(alice):
    foreign = ComparisonFactory(prompt__project=ProjectFactory())
    with pytest.raises(ComparisonNotFound):
        submit(alice, foreign.pk)


@pytest.mark.parametrize(
    "fields, bad_field",
    [
        ({"outcome": "middle"}, "outcome"),
        ({"outcome": "left", "strength": None}, "strength"),
        ({"outcome": "left", "strength": 7}, "strength"),
        ({"criteria": {"wit": "left"}}, "criteria"),
        ({"criteria": {"helpfulness": "a"}}, "criteria"),
        ({"criteria": ["helpfulness"]}, "criteria"),
        ({"flags": ["nope"]}, "flags"),
        ({"time_spent_ms": -1}, "time_spent_ms"),
        ({"time_spent_ms": "12"}, "time_spent_ms"),
        ({"rationale": "x" * 10_001}, "rationale"),
    ],
)
def test_it_rejects_bad_fields_with_a_message_per_field(project, alice, fields, bad_field):
    comparison = ComparisonFactory(prompt__project=project)
    with pytest.raises(InvalidJudgment) as error:
        submit(alice, comparison.pk, **fields)
    assert bad_field in error.value.errors
    assert not Judgment.objects.exists()


def test_it_refuses_ties_and_both_bad_when_the_project_does_not_allow_them(alice):
    project = ProjectFactory(allow_ties=False, allow_both_bad=False)
    project.raters.add(alice)
    comparison = ComparisonFactory(prompt__project=project)
    for outcome in ("tie", "both_bad"):
        with pytest.raises(InvalidJudgment):
            submit(alice, comparison.pk, outcome=outcome)


def test_ties_and_both_bad_carry_no_strength(project, alice, bob):
    comparison = ComparisonFactory(prompt__project=project)
    for rater in (alice, bob):
        AssignmentFactory(comparison=comparison, rater=rater)
    assert submit(alice, comparison.pk, outcome="tie", strength=3).judgment.strength is None
    assert submit(bob, comparison.pk, outcome="both_bad", strength=None).judgment.strength is None


def test_it_announces_the_judgment_after_commit(project, alice, django_capture_on_commit_callbacks):
    comparison = AssignmentFactory(comparison__prompt__project=project, rater=alice).comparison
    received = []

    def listener(sender, **kwargs):
        received.append(kwargs)

    judgment_recorded.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            judgment = submit(alice, comparison.pk).judgment
    finally:
        judgment_recorded.disconnect(listener)
    assert received == [
        {
            "signal": judgment_recorded,
            "judgment_id": judgment.pk,
            "project_id": project.pk,
            "comparison_id": comparison.pk,
        }
    ]


def test_a_failing_listener_does_not_lose_the_judgment(project, alice, django_capture_on_commit_callbacks):
    comparison = AssignmentFactory(comparison__prompt__project=project, rater=alice).comparison

    def broken(sender, **kwargs):
        raise ConnectionError("broker down")

    judgment_recorded.connect(broken)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            recorded = submit(alice, comparison.pk)
    finally:
        judgment_recorded.disconnect(broken)
    assert recorded.created and Judgment.objects.filter(pk=recorded.judgment.pk).exists()


def test_staff_may_judge_any_active_project(admin_user):
    comparison = AssignmentFactory(rater=admin_user).comparison
    assert submit(admin_user, comparison.pk).created


def test_a_deleted_rater_keeps_their_judgments(project, carol):
    project.raters.add(carol)
    comparison = AssignmentFactory(comparison__prompt__project=project, rater=carol).comparison
    submit(carol, comparison.pk)
    from django.db.models import ProtectedError

    with pytest.raises(ProtectedError):
        carol.delete()


def test_it_maps_an_answer_from_a_stale_tab_with_the_order_that_tab_showed(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    now = timezone.now()
    first = next_comparison_for(rater=alice, project=project, now=now)
    # The lease expires; a new one on the same comparison shows the other order.
    later = now + project.lease_duration + timedelta(seconds=1)
    AssignmentFactory(comparison=comparison, rater=alice, left="b" if first.left == "a" else "a", issued_at=later)
    recorded = submit(alice, comparison.pk, outcome="left", shown_left=first.left, now=later)
    assert recorded.judgment.left == first.left
    assert recorded.judgment.outcome == first.left


def test_it_refuses_an_order_that_was_never_shown(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    lease = next_comparison_for(rater=alice, project=project)
    never = "b" if lease.left == "a" else "a"
    with pytest.raises(InvalidJudgment) as error:
        submit(alice, comparison.pk, shown_left=never)
    assert "left" in error.value.errors


def test_it_only_finds_the_comparison_in_the_given_project(project, alice):
    other = ProjectFactory()
    other.raters.add(alice)
    comparison = ComparisonFactory(prompt__project=other)
    with pytest.raises(ComparisonNotFound):
        submit(alice, comparison.pk, project=project)


# -- deleting -----------------------------------------------------------------


def test_deleting_a_judgment_recounts_and_reopens_its_comparison(project, alice, bob, carol):
    project.raters.add(carol)
    comparison = ComparisonFactory(prompt__project=project)
    mine = JudgmentFactory(comparison=comparison, rater=alice)
    JudgmentFactory(comparison=comparison, rater=bob)
    assert comparison.status == Comparison.Status.COMPLETE

    assert delete_judgments(judgment_ids=[mine.pk]) == 1

    comparison.refresh_from_db()
    assert (comparison.judgments_count, comparison.status) == (1, Comparison.Status.OPEN)
    assert not Judgment.objects.filter(pk=mine.pk).exists()
    assert next_comparison_for(rater=carol, project=project).comparison_id == comparison.pk


def test_deleting_judgments_recounts_every_comparison_they_were_on(project, alice, bob):
    first, second, other = ComparisonFactory.create_batch(3, prompt__project=project)
    for comparison in (first, second, other):
        for rater in (alice, bob):
            JudgmentFactory(comparison=comparison, rater=rater)
    doomed = Judgment.objects.filter(comparison__in=[first, second], rater=alice).values_list("pk", flat=True)

    assert delete_judgments(judgment_ids=doomed) == 2

    counts = dict(Comparison.objects.values_list("pk", "judgments_count"))
    assert counts == {first.pk: 1, second.pk: 1, other.pk: 2}
    assert dict(Comparison.objects.values_list("pk", "status")) == {
        first.pk: Comparison.Status.OPEN,
        second.pk: Comparison.Status.OPEN,
        other.pk: Comparison.Status.COMPLETE,
    }


def test_deleting_recounts_first_judgments_only(project, alice, bob):
    comparison = ComparisonFactory(prompt__project=project)
    alices = JudgmentFactory(comparison=comparison, rater=alice)
    JudgmentFactory(comparison=comparison, rater=alice, repeat_of=alices, left="b")
    bobs = JudgmentFactory(comparison=comparison, rater=bob)
    assert comparison.judgments_count == 2

    delete_judgments(judgment_ids=[bobs.pk])

    comparison.refresh_from_db()
    assert (comparison.judgments_count, comparison.status) == (1, Comparison.Status.OPEN)


def test_deleting_a_first_judgment_deletes_its_repeat(project, alice):
    comparison = ComparisonFactory(prompt__project=project)
    first = JudgmentFactory(comparison=comparison, rater=alice)
    JudgmentFactory(comparison=comparison, rater=alice, repeat_of=first, left="b")

    delete_judgments(judgment_ids=[first.pk])

    assert not Judgment.objects.exists()
    comparison.refresh_from_db()
    assert comparison.judgments_count == 0


def test_deleting_a_judgment_keeps_a_retired_comparison_retired(project, alice):
    comparison = ComparisonFactory(prompt__project=project, status=Comparison.Status.RETIRED)
    judgment = JudgmentFactory(comparison=comparison, rater=alice)

    delete_judgments(judgment_ids=[judgment.pk])

    comparison.refresh_from_db()
    assert (comparison.judgments_count, comparison.status) == (0, Comparison.Status.RETIRED)


def test_deleting_runs_the_same_queries_for_one_comparison_or_many(project, alice, bob):
    def queries_to_delete(comparisons):
        for comparison in comparisons:
            JudgmentFactory(comparison=comparison, rater=alice)
        ids = [j.pk for j in Judgment.objects.filter(comparison__in=comparisons)]
        with CaptureQueriesContext(connection) as captured:
            delete_judgments(judgment_ids=ids)
        return len(captured)

    assert queries_to_delete(ComparisonFactory.create_batch(1, prompt__project=project)) == queries_to_delete(
        ComparisonFactory.create_batch(12, prompt__project=project)
    )
