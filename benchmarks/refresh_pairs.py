"""How long a refresh of candidate pairs takes at 100,000+ pairs, side by side with Django's bulk_update.

Builds one project: P prompts x 4 responses (6 pairs per prompt), of which 4
are open comparisons, 1 is complete and 1 has no comparison yet, so with the
default P = 25,000 a refresh scores 125,000 candidates, re-prioritises 100,000
open comparisons, retires 25,000 and creates pair_budget new ones. An active
reward model version with 5 heads has scored every response.

Then it times, each from the same starting state:
- refresh_pairs() under each strategy (random, uncertainty, ensemble);
- the priority write alone, ours (acquisition._set_priorities) against the
  naive peer, Django's bulk_update(batch_size=1000), on the same open rows
  with the same values: the first 20,000 by default (--write-rows 0 for all
  100,000; Django's bulk_update then takes minutes).

Run against a throwaway database (it migrates it, and deletes its own rows at
the end unless --keep):

    createdb -h 127.0.0.1 -U postgres bench_refresh
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_refresh .venv/bin/python benchmarks/refresh_pairs.py
    DATABASE_URL=sqlite:////tmp/bench_refresh.sqlite3 .venv/bin/python benchmarks/refresh_pairs.py
"""

import argparse
import hashlib
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()
logging.getLogger("rewardmodel.acquisition").setLevel(logging.WARNING)  # the table below says it all

import numpy as np  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from labeling.models import Comparison, Project, Prompt, Response  # noqa: E402
from rewardmodel import acquisition  # noqa: E402
from rewardmodel.models import LoopSettings, ResponseReward, RewardModelVersion, Strategy  # noqa: E402

HEADS = 5
RESPONSES_PER_PROMPT = 4
# Of the 6 pairs of a prompt's 4 responses: 4 open comparisons, 1 complete, 1 never compared.
OPEN_PAIRS = [(0, 1), (0, 2), (1, 3), (2, 3)]
COMPLETE_PAIR = (0, 3)
BATCH = 5000


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def build(*, prompts: int, pair_budget: int, seed: int) -> Project:
    rng = np.random.default_rng(seed)
    tag = f"{os.getpid()}-{time.time_ns()}"
    project = Project.objects.create(name="Refresh benchmark", slug=f"bench-refresh-{tag}", overlap=3)
    LoopSettings.objects.create(project=project, pair_budget=pair_budget, exploration_share=0.1)
    prompt_rows = Prompt.objects.bulk_create(
        (
            Prompt(
                project=project,
                conversation=[{"role": "user", "content": f"Question {i}?"}],
                content_hash=sha(f"{tag}-{i}"),
            )
            for i in range(prompts)
        ),
        batch_size=BATCH,
    )
    response_rows = Response.objects.bulk_create(
        (
            Response(prompt=prompt, text=f"Answer {k} to {prompt.pk}.", content_hash=sha(f"{prompt.pk}-{k}"))
            for prompt in prompt_rows
            for k in range(RESPONSES_PER_PROMPT)
        ),
        batch_size=BATCH,
    )

    def comparisons():
        flip = rng.random(len(prompt_rows) * 5) < 0.5  # stored in either order, as imports do
        for p, prompt in enumerate(prompt_rows):
            rs = response_rows[p * RESPONSES_PER_PROMPT : (p + 1) * RESPONSES_PER_PROMPT]
            for q, (i, j) in enumerate([*OPEN_PAIRS, COMPLETE_PAIR]):
                a, b = (rs[j], rs[i]) if flip[p * 5 + q] else (rs[i], rs[j])
                complete = (i, j) == COMPLETE_PAIR
                yield Comparison(
                    project=project,
                    prompt=prompt,
                    response_a=a,
                    response_b=b,
                    selected_by=Comparison.SelectedBy.IMPORT,
                    status=Comparison.Status.COMPLETE if complete else Comparison.Status.OPEN,
                    judgments_count=project.overlap if complete else 0,
                )

    Comparison.objects.bulk_create(comparisons(), batch_size=BATCH)
    version = RewardModelVersion.objects.create(project=project, version=1, status=RewardModelVersion.Status.ACTIVE)
    heads = rng.normal(size=(len(response_rows), 1)) + 0.5 * rng.normal(size=(len(response_rows), HEADS))
    ResponseReward.objects.bulk_create(
        (
            ResponseReward(version=version, response=response, reward=float(h.mean()), head_rewards=h.tolist())
            for response, h in zip(response_rows, heads, strict=True)
        ),
        batch_size=BATCH,
    )
    return project


def reset(project: Project, *, max_id: int) -> None:
    """Back to the state after build(): no refresh's new pairs, complete ones not retired."""
    with transaction.atomic():
        Comparison.objects.filter(project=project, pk__gt=max_id)._raw_delete(connection.alias)
        Comparison.objects.filter(project=project, status=Comparison.Status.RETIRED).update(
            status=Comparison.Status.COMPLETE
        )
    if connection.vendor == "postgresql":
        # Each run rewrites every open row; without this, later runs would pay
        # for the dead rows of earlier ones (autovacuum is slower to react).
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {Comparison._meta.db_table}")


def drop(project: Project) -> None:
    # Child tables first, one DELETE each (the ORM's cascade would load every row).
    with transaction.atomic():
        ResponseReward.objects.filter(version__project=project)._raw_delete(connection.alias)
        RewardModelVersion.objects.filter(project=project)._raw_delete(connection.alias)
        Comparison.objects.filter(project=project)._raw_delete(connection.alias)
        Response.objects.filter(prompt__project=project)._raw_delete(connection.alias)
        Prompt.objects.filter(project=project)._raw_delete(connection.alias)
        LoopSettings.objects.filter(project=project)._raw_delete(connection.alias)
        Project.objects.filter(pk=project.pk)._raw_delete(connection.alias)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=25_000, help="prompts of 4 responses (default 25,000)")
    parser.add_argument("--pair-budget", type=int, default=1000, help="new comparisons per refresh")
    parser.add_argument(
        "--write-rows",
        type=int,
        default=20_000,
        help="open rows for the write-alone comparison (default 20,000; 0 = all): Django's bulk_update takes "
        "minutes for all 100,000",
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's rows afterwards")
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    backend = connection.vendor
    if backend == "sqlite":
        import sqlite3

        backend += f" {sqlite3.sqlite_version}"
    else:
        backend += f" {connection.cursor().connection.info.server_version}"
    print(f"database: {backend} ({connection.settings_dict['NAME']})")

    started = time.perf_counter()
    project = build(prompts=args.prompts, pair_budget=args.pair_budget, seed=0)
    max_id = Comparison.objects.filter(project=project).order_by("-pk").values_list("pk", flat=True).first()
    open_ids = list(
        Comparison.objects.filter(project=project, status=Comparison.Status.OPEN)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    print(
        f"setup: {args.prompts:,} prompts, {Response.objects.filter(prompt__project=project).count():,} responses, "
        f"{len(open_ids):,} open + {Comparison.objects.filter(project=project).count() - len(open_ids):,} complete "
        f"comparisons, {time.perf_counter() - started:.1f} s"
    )
    try:
        print(
            f"\n{'refresh_pairs':<14}{'scored':>9}{'updated':>9}{'created':>9}{'retired':>9}{'explore':>9}"
            f"{'seconds':>9}{'pairs/s':>10}"
        )
        for strategy in Strategy:
            reset(project, max_id=max_id)
            project.loop_settings.acquisition = strategy
            project.loop_settings.save(update_fields=["acquisition"])
            r = acquisition.refresh_pairs(project=project, seed=1)
            print(
                f"{strategy.value:<14}{r.comparisons_scored:>9,}{r.comparisons_updated:>9,}{r.comparisons_created:>9,}"
                f"{r.comparisons_retired:>9,}{r.exploration_picks:>9,}{r.seconds:>9.2f}"
                f"{r.comparisons_scored / r.seconds:>10,.0f}"
            )

        # The write alone, same rows, same values, each in one transaction.
        reset(project, max_id=max_id)
        if args.write_rows:
            open_ids = open_ids[: args.write_rows]
        rng = np.random.default_rng(2)
        priorities = rng.random(len(open_ids)).tolist()
        reasons = ["uncertainty"] * len(open_ids)

        def ours():
            with transaction.atomic():
                acquisition._set_priorities(ids=open_ids, priorities=priorities, selected_by=reasons)

        def django_bulk_update():
            objs = [
                Comparison(pk=pk, priority=p, selected_by=s)
                for pk, p, s in zip(open_ids, priorities, reasons, strict=True)
            ]
            with transaction.atomic():
                Comparison.objects.bulk_update(objs, ["priority", "selected_by"], batch_size=1000)

        def floor():
            # What the database itself needs to rewrite these rows' two columns
            # and index entries, with no values to ship: no method goes below it.
            table = connection.ops.quote_name(Comparison._meta.db_table)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET priority = 1 - priority, selected_by = %s "
                    "WHERE project_id = %s AND status = 'open' AND id <= %s",
                    ["uncertainty", project.pk, open_ids[-1]],
                )
                assert cursor.rowcount == len(open_ids)

        print(f"\n{'priority write':<36}{'rows':>9}{'seconds':>9}{'rows/s':>10}")
        figures = {}
        for name, fn in [
            ("floor: UPDATE ... SET constant", floor),
            ("ours (_set_priorities)", ours),
            ("Django bulk_update(batch_size=1000)", django_bulk_update),
        ]:
            reset(project, max_id=max_id)
            figures[name] = seconds = timed(fn)
            print(f"{name:<36}{len(open_ids):>9,}{seconds:>9.2f}{len(open_ids) / seconds:>10,.0f}")
        _, ours_s, django_s = figures.values()
        print(f"ours vs Django bulk_update: {django_s / ours_s:.1f}x faster")
        check = Comparison.objects.filter(pk=open_ids[-1]).values_list("priority", flat=True).get()
        assert abs(check - priorities[-1]) < 1e-12, "the write did not land"
    finally:
        if not args.keep:
            drop(project)


if __name__ == "__main__":
    main()
