"""Gold items and repeats in a rater's stream (labeling.assignment, labeling.judgments).

Gold: comparisons with a known answer, served at the project's gold_rate to
every rater (the overlap does not cap them), never completed by judgments.
Repeats: a comparison the rater judged earlier, shown again with the sides
swapped; the answer is stored with repeat_of and is never a vote. Neither looks
any different to the rater.
"""

import json
import random
from collections import Counter
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient
from scipy.stats import binom

from labeling.assignment import next_comparison_for, skip_comparison
from labeling.judgments import LeaseConflict, record_judgment
from labeling.models import Assignment, Comparison, Judgment
from labeling.progress import progress_for
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentInputFactory, UserFactory

pytestmark = pytest.mark.django_db


def gold(project, **fields):
    return ComparisonFactory(prompt__project=project, is_gold=True, gold_label="a", **fields)


def judge(rater, project, outcome="left", **fields):
    """Ask for the next task and answer it; returns (lease, recorded)."""
    lease = next_comparison_for(rater=rater, project=project)
    recorded = record_judgment(
        rater=rater, judgment=JudgmentInputFactory(comparison_id=lease.comparison_id, outcome=outcome, **fields)
    )
    return lease, recorded


def set_rates(project, *, gold_rate=0.0, repeat_rate=0.0):
    project.gold_rate, project.repeat_rate = gold_rate, repeat_rate
    project.save()


# -- gold -----------------------------------------------------------------------


def test_gold_and_repeats_are_served_at_the_projects_rates(project, alice):
    set_rates(project)
    ComparisonFactory.create_batch(8, prompt__project=project)
    for _ in range(6):  # one first judgment older than the latest five: a repeat to serve
        judge(alice, project)
    gold(project)
    set_rates(project, gold_rate=0.2, repeat_rate=0.1)
    random.seed(20261201)

    draws = 500
    kinds, gold_sides = Counter(), set()
    for _ in range(draws):
        lease = next_comparison_for(rater=alice, project=project)
        kinds[lease.kind] += 1
        if lease.kind == Assignment.Kind.GOLD:
            gold_sides.add(lease.left)
        Assignment.objects.filter(pk=lease.pk).delete()  # the same choice again next time

    for kind, rate in ((Assignment.Kind.GOLD, 0.2), (Assignment.Kind.REPEAT, 0.1)):
        low, high = binom.interval(0.999, draws, rate)
        assert low <= kinds[kind] <= high, (kind, kinds)
    assert kinds[Assignment.Kind.TASK] == draws - kinds[Assignment.Kind.GOLD] - kinds[Assignment.Kind.REPEAT]
    assert gold_sides == {"a", "b"}  # a random left side on gold leases too


def test_every_rater_gets_every_gold_item_beyond_the_overlap(project, alice, bob, carol):
    dave = UserFactory(username="dave")
    project.raters.add(carol, dave)
    set_rates(project, gold_rate=1.0)  # overlap 2
    item = gold(project)
    ComparisonFactory(prompt__project=project)

    for rater in (alice, bob, carol, dave):
        lease, recorded = judge(rater, project)
        assert (lease.comparison_id, lease.kind, recorded.created) == (item.pk, Assignment.Kind.GOLD, True)

    item.refresh_from_db()
    # Counted, never complete: four judgments, overlap two, still open.
    assert (item.judgments_count, item.status) == (4, Comparison.Status.OPEN)
    # Nothing gold left for alice: the queue.
    assert next_comparison_for(rater=alice, project=project).kind == Assignment.Kind.TASK


def test_a_gold_judgment_never_completes_its_comparison(project, alice):
    project.overlap = 1
    set_rates(project, gold_rate=1.0)
    item = gold(project)
    ComparisonFactory(prompt__project=project)

    judge(alice, project)

    item.refresh_from_db()
    assert (item.judgments_count, item.status) == (1, Comparison.Status.OPEN)
    assert Judgment.objects.get().comparison_id == item.pk


def test_the_queue_never_serves_gold(project, alice):
    set_rates(project)
    gold(project)
    assert next_comparison_for(rater=alice, project=project) is None


def test_gold_is_mixed_into_real_work_never_served_instead_of_none(project, alice):
    set_rates(project, gold_rate=1.0)
    gold(project)
    assert next_comparison_for(rater=alice, project=project) is None
    ComparisonFactory(prompt__project=project)
    assert next_comparison_for(rater=alice, project=project).kind == Assignment.Kind.GOLD


def test_a_gold_item_is_not_served_again_to_a_rater_who_skipped_it(project, alice):
    set_rates(project, gold_rate=1.0)
    item = gold(project)
    ComparisonFactory(prompt__project=project)
    lease = next_comparison_for(rater=alice, project=project)
    assert lease.comparison_id == item.pk
    skip_comparison(rater=alice, project=project, comparison_id=item.pk)
    assert next_comparison_for(rater=alice, project=project).comparison_id != item.pk


def test_a_late_gold_answer_within_the_grace_is_accepted_whatever_the_overlap(project, alice, bob, carol):
    project.overlap = 1
    project.save()
    item = gold(project)
    for rater in (bob, carol):
        AssignmentFactory(comparison=item, rater=rater, kind=Assignment.Kind.GOLD)
    lease = AssignmentFactory(comparison=item, rater=alice, kind=Assignment.Kind.GOLD, left="b")
    late = lease.expires_at + timedelta(seconds=1)

    recorded = record_judgment(rater=alice, judgment=JudgmentInputFactory(comparison_id=item.pk), now=late)

    assert recorded.created and recorded.judgment.left == "b"


# -- what a rater sees: a gold task is a task -------------------------------------


def _key_shape(value):
    if isinstance(value, dict):
        return {key: _key_shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_key_shape(item) for item in value[:1]]
    return type(value).__name__


class _Markup(HTMLParser):
    """Tags and attribute names in order: the page's markup without its values."""

    def __init__(self):
        super().__init__()
        self.shape = []

    def handle_starttag(self, tag, attrs):
        self.shape.append((tag, tuple(sorted(name for name, _ in attrs))))


def markup(html: str) -> list:
    parser = _Markup()
    parser.feed(html)
    return parser.shape


def _gold_and_plain_tasks(project, alice, bob):
    """alice holds a gold item, bob a plain task of the same project."""
    item = gold(project)
    plain = ComparisonFactory(prompt__project=project)
    set_rates(project, gold_rate=1.0)
    assert next_comparison_for(rater=alice, project=project).comparison_id == item.pk
    set_rates(project)
    assert next_comparison_for(rater=bob, project=project).comparison_id == plain.pk
    return item, plain


def test_a_gold_task_has_exactly_the_api_shape_of_any_task(project, alice, bob):
    item, _ = _gold_and_plain_tasks(project, alice, bob)
    answers = {}
    for rater in (alice, bob):
        client = APIClient()
        client.force_login(rater)
        task = client.get(f"/api/projects/{project.pk}/next/")
        judged = client.post(
            "/api/judgments/",
            {"comparison": task.json()["comparison"], "outcome": "left", "strength": 2, "time_spent_ms": 4000},
            format="json",
        )
        listed = client.get("/api/judgments/")
        projects = client.get("/api/projects/")
        answers[rater.username] = (task, judged, listed, projects)

    for gold_answer, plain_answer in zip(answers["alice"], answers["bob"], strict=True):
        assert gold_answer.status_code == plain_answer.status_code
        assert _key_shape(gold_answer.json()) == _key_shape(plain_answer.json())
        text = json.dumps(gold_answer.json()).lower()
        assert "gold" not in text and "kind" not in text and "repeat" not in text
    assert answers["alice"][0].json()["comparison"] == item.pk


def test_a_gold_task_page_has_exactly_the_markup_of_any_task(project, alice, bob):
    _gold_and_plain_tasks(project, alice, bob)
    pages = {}
    for rater in (alice, bob):
        client = Client()
        client.force_login(rater)
        pages[rater.username] = client.get(reverse("labeling:label", args=[project.slug])).content.decode()

    assert markup(pages["alice"]) == markup(pages["bob"])
    assert "gold" not in pages["alice"].lower()


# -- repeats ----------------------------------------------------------------------


def _judged_six(project, rater):
    """rater judged six comparisons (repeats off), with others still in the queue.
    Returns the first judgment, the only one older than the latest five."""
    set_rates(project)
    ComparisonFactory.create_batch(9, prompt__project=project)
    judgments = [judge(rater, project, outcome="right", strength=3)[1].judgment for _ in range(6)]
    set_rates(project, repeat_rate=1.0)
    return judgments[0]


def test_a_repeat_shows_an_earlier_pair_again_with_the_sides_swapped(project, alice):
    first = _judged_six(project, alice)

    lease = next_comparison_for(rater=alice, project=project)

    assert (lease.kind, lease.comparison_id) == (Assignment.Kind.REPEAT, first.comparison_id)
    assert lease.left != first.left
    assert lease.left_response.pk == (
        first.comparison.response_a_id if lease.left == "a" else first.comparison.response_b_id
    )


def test_a_repeat_is_stored_with_repeat_of_and_counts_for_nothing(project, alice, django_capture_on_commit_callbacks):
    first = _judged_six(project, alice)
    comparison = first.comparison
    comparison.refresh_from_db()
    before = (comparison.judgments_count, comparison.status)
    progress_before = progress_for(rater=alice, project_ids=[project.pk])[project.pk]
    lease = next_comparison_for(rater=alice, project=project)

    with django_capture_on_commit_callbacks() as announced:
        recorded = record_judgment(
            rater=alice, judgment=JudgmentInputFactory(comparison_id=comparison.pk, outcome="left", strength=1)
        )

    repeat = recorded.judgment
    assert recorded.created and repeat.repeat_of == first and repeat.pk != first.pk
    # Mapped through the repeat's own (swapped) order: "left" is the side the first judgment called right.
    assert (repeat.left, repeat.outcome, repeat.strength) == (lease.left, lease.left, 1)
    assert repeat.outcome == first.outcome  # the rater was consistent
    comparison.refresh_from_db()
    assert (comparison.judgments_count, comparison.status) == before
    assert progress_for(rater=alice, project_ids=[project.pk])[project.pk] == progress_before
    assert announced == []  # not new training data: no "judgment recorded"
    assert Assignment.objects.get(pk=lease.pk).state == Assignment.State.SUBMITTED

    again = record_judgment(rater=alice, judgment=JudgmentInputFactory(comparison_id=comparison.pk, outcome="right"))
    assert not again.created and again.judgment.pk == repeat.pk
    assert Judgment.objects.filter(comparison=comparison, rater=alice).count() == 2


def test_a_repeat_through_the_api_answers_201_then_200(project, alice):
    first = _judged_six(project, alice)
    client = APIClient()
    client.force_login(alice)
    task = client.get(f"/api/projects/{project.pk}/next/").json()
    assert task["comparison"] == first.comparison_id
    payload = {"comparison": task["comparison"], "outcome": "tie", "time_spent_ms": 5000}

    created = client.post("/api/judgments/", payload, format="json")
    again = client.post("/api/judgments/", payload, format="json")

    assert (created.status_code, again.status_code) == (201, 200)
    assert again.json() == created.json()
    assert Judgment.objects.get(pk=created.json()["id"]).repeat_of_id == first.pk


def test_it_repeats_each_judgment_once_never_gold_nor_one_of_the_latest_five(project, alice):
    set_rates(project, gold_rate=1.0)
    ComparisonFactory.create_batch(12, prompt__project=project)
    gold(project)
    judge(alice, project)  # the gold item: the oldest judgment
    set_rates(project)
    firsts = [judge(alice, project)[1].judgment for _ in range(6)]
    set_rates(project, repeat_rate=1.0)

    repeated = []
    while (lease := next_comparison_for(rater=alice, project=project)).kind == Assignment.Kind.REPEAT:
        repeated.append(lease.comparison_id)
        record_judgment(rater=alice, judgment=JudgmentInputFactory(comparison_id=lease.comparison_id))

    # Chosen at random among the eligible, yet each time only one was: the oldest
    # first judgment not yet repeated and not among the latest five judgments.
    assert repeated == [judgment.comparison_id for judgment in firsts]
    assert Judgment.objects.filter(repeat_of__isnull=False).count() == 6


def test_a_repeat_lease_takes_no_overlap_slot(project, alice, bob, carol):
    project.raters.add(carol)
    first = _judged_six(project, alice)  # overlap 2: first's comparison has one judgment
    Comparison.objects.filter(pk=first.comparison_id).update(priority=10)  # the top of the queue
    assert next_comparison_for(rater=alice, project=project).kind == Assignment.Kind.REPEAT
    set_rates(project)

    assert next_comparison_for(rater=bob, project=project).comparison_id == first.comparison_id
    assert next_comparison_for(rater=carol, project=project).comparison_id != first.comparison_id


def test_a_stale_tab_of_the_first_showing_gets_the_first_judgment_back(project, alice):
    first = _judged_six(project, alice)
    next_comparison_for(rater=alice, project=project)  # the repeat, sides swapped

    recorded = record_judgment(
        rater=alice, judgment=JudgmentInputFactory(comparison_id=first.comparison_id, shown_left=first.left)
    )

    assert not recorded.created and recorded.judgment == first
    assert not Judgment.objects.filter(repeat_of=first).exists()


def test_a_repeat_answered_after_the_grace_is_refused(project, alice):
    first = _judged_six(project, alice)
    lease = next_comparison_for(rater=alice, project=project)
    too_late = lease.expires_at + project.lease_grace + timedelta(seconds=1)

    with pytest.raises(LeaseConflict):
        record_judgment(rater=alice, judgment=JudgmentInputFactory(comparison_id=first.comparison_id), now=too_late)
    assert not Judgment.objects.filter(repeat_of=first).exists()


def test_a_skipped_repeat_is_not_offered_again(project, alice):
    first = _judged_six(project, alice)
    lease = next_comparison_for(rater=alice, project=project)
    assert lease.comparison_id == first.comparison_id
    skip_comparison(rater=alice, project=project, comparison_id=first.comparison_id)
    assert next_comparison_for(rater=alice, project=project).kind == Assignment.Kind.TASK
