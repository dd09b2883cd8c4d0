"""The candidate query (labeling.assignment.candidates_for) walks
comparison_queue_idx in serving order and stops at the first free row: its
cost does not grow with the project. Checked with EXPLAIN on PostgreSQL at
100,000 comparisons; benchmarks/hot_path.py --million prints the plan at
1,000,000 (too slow to build for the suite), and SQLite's plan is checked here too.
"""

import pytest
from django.db import connection, transaction
from django.utils import timezone

from labeling.assignment import candidates_for
from labeling.models import Comparison, Prompt, Response
from tests.factories import JudgmentFactory, PromptFactory, sha256_json

ROWS = 100_000


def _comparisons(project, *, count: int) -> None:
    """`count` comparisons in one INSERT ... SELECT: every pair of k responses to one prompt."""
    k = 2
    while k * (k - 1) // 2 < count:
        k += 1
    prompt = PromptFactory(project=project)
    Response.objects.bulk_create(
        Response(prompt=prompt, text=f"Reply {n}", content_hash=sha256_json(f"Reply {n}")) for n in range(k)
    )
    fixed = {"project_id": project.pk}
    for f in Comparison._meta.concrete_fields:
        if f.name not in ("id", "project", "prompt", "response_a", "response_b"):
            value = timezone.now() if f.name == "created_at" else f.get_default()
            fixed[f.column] = f.get_db_prep_save(value, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Comparison._meta.db_table} ({', '.join(fixed)}, prompt_id, response_a_id, response_b_id) "
            f"SELECT {', '.join(['%s'] * len(fixed))}, r1.prompt_id, r1.id, r2.id "
            f"FROM {Response._meta.db_table} r1 JOIN {Response._meta.db_table} r2 "
            "ON r2.prompt_id = r1.prompt_id AND r1.id < r2.id WHERE r1.prompt_id = %s LIMIT %s",
            [*fixed.values(), prompt.pk, count],
        )
        cursor.execute("ANALYZE")


@pytest.fixture
def big_project(project, alice):
    _comparisons(project, count=ROWS)
    # Some history for alice: her judgments are what the candidate query must step over.
    for comparison in Comparison.objects.filter(project=project).order_by("pk")[:50]:
        JudgmentFactory(comparison=comparison, rater=alice)
    assert Comparison.objects.filter(project=project).count() == ROWS
    assert Prompt.objects.filter(project=project).count() == 1
    return project


def _plan(project, rater) -> str:
    with transaction.atomic():
        return candidates_for(rater=rater, project=project, exclude=[])[:1].explain()


def test_the_candidate_query_walks_the_queue_index_at_100000_comparisons(big_project, alice):
    plan = _plan(big_project, alice)
    if connection.vendor == "postgresql":
        assert "Index Scan using comparison_queue_idx on labeling_comparison" in plan, plan
        assert "Seq Scan on labeling_comparison" not in plan, plan
        # In serving order straight from the index: nothing sorts the project's rows.
        assert "Sort Key: labeling_comparison" not in plan, plan
        assert plan.lstrip().startswith("Limit"), plan
    else:
        assert "USING INDEX comparison_queue_idx (project_id=? AND status=? AND is_gold=?)" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
        # Whether the rater judged a candidate is one probe of the (comparison, rater) unique index.
        assert "judgment_one_per_rater (comparison_id=? AND rater_id=?)" in plan, plan


def test_it_still_serves_the_first_free_comparison_in_order_at_100000(big_project, alice, bob):
    first_free = Comparison.objects.filter(project=big_project).order_by("created_at", "pk")[50]
    with transaction.atomic():
        chosen = candidates_for(rater=alice, project=big_project, exclude=[]).first()
    assert chosen == first_free
    # bob judged nothing, and with an overlap of 2 alice's judgments left a slot on each: he gets the very first.
    with transaction.atomic():
        first = candidates_for(rater=bob, project=big_project, exclude=[]).first()
    assert first == Comparison.objects.filter(project=big_project).order_by("created_at", "pk").first()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL")
def test_the_prepared_candidate_query_keeps_the_index_walk_as_a_generic_plan(big_project, alice):
    # A prepared statement (config/settings.py: DB_PREPARE_THRESHOLD) is planned once without its
    # parameters' values after a few runs. That generic plan must walk the index too, or preparing would
    # trade 4 ms of planning for a scan of the project's 100,000 rows.
    import psycopg

    with transaction.atomic():
        query = candidates_for(rater=alice, project=big_project, exclude=[])[:1].query
        sql, params = query.get_compiler(connection=connection).as_sql()
        numbered = sql
        for n in range(1, len(params) + 1):
            numbered = numbered.replace("%s", f"${n}", 1)
        raw = psycopg.ClientCursor(connection.connection)
        raw.execute(f"PREPARE candidate AS {numbered}")
        raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        raw.execute(f"EXPLAIN EXECUTE candidate({', '.join(['%s'] * len(params))})", list(params))
        plan = "\n".join(row[0] for row in raw.fetchall())
        raw.execute("DEALLOCATE candidate")
    assert "Index Scan using comparison_queue_idx on labeling_comparison" in plan, plan
    assert "Seq Scan on labeling_comparison" not in plan and "Sort Key: labeling_comparison" not in plan, plan


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL")
def test_the_hot_path_queries_become_prepared_statements(project, alice):
    from labeling.assignment import live_lease_for

    for _ in range(6):
        live_lease_for(rater=alice, project=project)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in cursor.fetchall()]
    assert any('FROM "labeling_assignment"' in statement for statement in statements), statements
