"""labeling.compiled: the hot path's queries compiled once per thread give what the ORM gives, on either database."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from labeling import assignment
from labeling.compiled import CompiledQuery
from labeling.models import Assignment, Comparison
from tests.factories import AssignmentFactory, ComparisonFactory, JudgmentFactory

pytestmark = pytest.mark.django_db


def _values(rater, project, now):
    return {"rater_id": rater.pk, "project_id": project.pk, "overlap": project.overlap, "now": now}


def test_the_compiled_candidate_query_is_the_orms_sql_and_row(project, alice, bob):
    now = timezone.now()
    for n in range(4):
        ComparisonFactory(prompt__project=project, priority=n / 10)
    top = Comparison.objects.filter(project=project).order_by("-priority").first()
    JudgmentFactory(comparison=top, rater=alice)  # alice judged the top one: the next is hers
    with transaction.atomic():
        orm = assignment.candidates_for(rater=alice, project=project, exclude=[], now=now).first()
        compiled = assignment._FIRST_CANDIDATE.first(**_values(alice, project, now))
        sql, _ = assignment._FIRST_CANDIDATE.queryset(**_values(alice, project, now)).query.sql_with_params()
    assert compiled == orm and compiled != top
    # select_related came along: no query to show the pair.
    with_no_query = {"prompt": compiled.prompt.pk, "a": compiled.response_a.text, "b": compiled.response_b.text}
    assert with_no_query == {"prompt": orm.prompt.pk, "a": orm.response_a.text, "b": orm.response_b.text}
    assert compiled.judgments_count == orm.judgments_count and compiled.created_at == orm.created_at
    # The same statement, parameters apart.
    assert assignment._FIRST_CANDIDATE._compiled("default").sql == sql


def test_compiled_once_then_only_run(project, alice, django_assert_num_queries):
    ComparisonFactory(prompt__project=project)
    query = assignment._FIRST_CANDIDATE
    with transaction.atomic():
        query.first(**_values(alice, project, timezone.now()))
        first_compiled = query._compiled("default")
        with django_assert_num_queries(1):
            query.first(**_values(alice, project, timezone.now()))
    assert query._compiled("default") is first_compiled


def test_the_held_lease_is_found_with_its_pair_and_its_clock(project, alice):
    lease = AssignmentFactory(comparison__prompt__project=project, rater=alice)
    found = assignment.live_lease_for(rater=alice, project=project)
    assert found == lease and found.comparison.response_a == lease.comparison.response_a
    assert found.comparison.project == project  # the select_related chain, as the ORM loads it
    # The time is a parameter, not baked in: a later clock sees the lease expired.
    assert assignment.live_lease_for(rater=alice, project=project, now=lease.expires_at + timedelta(seconds=1)) is None


def test_each_thread_compiles_its_own(project, alice, transactional_db):
    ComparisonFactory(prompt__project=project)
    query = assignment._LIVE_LEASE
    query.first(rater_id=alice.pk, project_id=project.pk, now=timezone.now())
    mine = query._compiled("default")
    theirs = []

    def other():
        try:
            query.first(rater_id=alice.pk, project_id=project.pk, now=timezone.now())
            theirs.append(query._compiled("default"))
        finally:
            connection.close()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert theirs and theirs[0] is not mine and theirs[0].compiler.connection is not mine.compiler.connection


def test_a_value_that_would_shape_the_sql_is_refused(project):
    # A value that decides a condition (not a parameter of it) cannot be compiled once for every value.
    shaped = CompiledQuery(lambda *, limit: Assignment.objects.filter(pk__gt=0)[: max(1, -limit % 7)], ints=("limit",))
    with pytest.raises(ValueError, match="do not reach the SQL as parameters only"):
        shaped.first(limit=3)
