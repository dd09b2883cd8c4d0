"""How fast does `import_pairs` take in a big file? Not a test; run it by hand.

    DATABASE_URL=sqlite:////tmp/bench.sqlite3 .venv/bin/python manage.py migrate
    DATABASE_URL=sqlite:////tmp/bench.sqlite3 .venv/bin/python benchmarks/import_pairs.py
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_import .venv/bin/python benchmarks/import_pairs.py

Writes a synthetic `pairs` file (default 100,000 lines; distinct prompts and
replies of HH-like lengths, a third of the prompts multi-turn) to a temporary
directory, imports it with the real import_pairs into the configured database
(DATABASE_URL, or the default SQLite under var/), imports it again (every line a
duplicate), and prints lines/s and wall seconds for each. It works in a
throwaway project with a fresh random slug and deletes that project at the end;
no other project is read or touched.
"""

import argparse
import json
import os
import random
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.db import connection, transaction  # noqa: E402

from labeling import importing  # noqa: E402
from labeling.models import Comparison, Project, Prompt, Response  # noqa: E402

WORDS = (
    "the a model answer question because should could would people time make good know way think help need "
    "explain example data result first second however also which when where what why how this that these "
    "important different often usually simple clear safe risk cost plan step try check change keep start "
    "system user value number problem reason idea point case part place world work life day year water food"
).split()


def sentence_pool(rng: random.Random, size: int = 4000) -> list[str]:
    pool = []
    for _ in range(size):
        words = rng.choices(WORDS, k=rng.randint(6, 22))
        pool.append(" ".join(words).capitalize() + rng.choice(".?!"))
    return pool


def text(rng: random.Random, pool: list[str], chars: int, tag: str) -> str:
    # The tag makes every text distinct, as real replies are.
    parts, size = [tag], len(tag)
    while size < chars:
        parts.append(rng.choice(pool))
        size += len(parts[-1]) + 1
    return " ".join(parts)


def write_file(path: Path, lines: int, seed: int) -> None:
    rng = random.Random(seed)
    pool = sentence_pool(rng)
    with path.open("w", encoding="utf-8") as out:
        for n in range(lines):
            question = text(rng, pool, rng.randint(60, 400), f"[q{n}]")
            if n % 3 == 0:  # multi-turn, as about a third of HH prompts are
                prompt = [
                    {"role": "user", "content": text(rng, pool, rng.randint(40, 200), f"[u{n}]")},
                    {"role": "assistant", "content": text(rng, pool, rng.randint(80, 400), f"[r{n}]")},
                    {"role": "user", "content": question},
                ]
            else:
                prompt = question
            line = {
                "prompt": prompt,
                "response_a": text(rng, pool, int(rng.lognormvariate(5.8, 0.6)), f"[a{n}]"),
                "response_b": text(rng, pool, int(rng.lognormvariate(5.8, 0.6)), f"[b{n}]"),
                "label": rng.choice("ab"),
                "model_a": "bench-model-1",
                "model_b": "bench-model-2",
            }
            out.write(json.dumps(line) + "\n")


def timed_import(slug: str, path: Path) -> tuple[float, float, importing.ImportResult]:
    start, cpu = time.perf_counter(), time.process_time()
    with path.open("rb") as lines:
        result = importing.import_pairs(project_slug=slug, lines=lines, format="pairs", project_name="Benchmark")
    return time.perf_counter() - start, time.process_time() - cpu, result


def delete_project(slug: str) -> None:
    # Plain DELETEs, children first: the ORM's cascade would first load every
    # id into Python, which takes longer than the import itself. A fresh
    # benchmark project has no leases or judgments.
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        return
    with transaction.atomic():
        Comparison.objects.filter(project=project)._raw_delete(connection.alias)
        Response.objects.filter(prompt__project=project)._raw_delete(connection.alias)
        Prompt.objects.filter(project=project)._raw_delete(connection.alias)
        project.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Django and the apps loaded
    slug = f"bench-import-{secrets.token_hex(4)}"
    if Project.objects.filter(slug=slug).exists():
        sys.exit(f"{slug} exists; run again")
    print(f"database: {connection.vendor} {connection.settings_dict['NAME']}; load average {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        start = time.perf_counter()
        write_file(path, args.lines, args.seed)
        size_mb = path.stat().st_size / 1e6
        print(f"file: {args.lines:,} lines, {size_mb:.1f} MB, written in {time.perf_counter() - start:.1f} s")

        start = time.perf_counter()
        with path.open("rb") as lines:
            importing.parse_labeled_pairs(lines, format="pairs")  # the import's checks, no database
        parse_s = time.perf_counter() - start
        print(f"parse only (no database): {parse_s:.1f} s, {args.lines / parse_s:,.0f} lines/s")

        try:
            seconds, cpu, result = timed_import(slug, path)
            print(
                f"first import: {seconds:.1f} s wall ({cpu:.1f} s CPU in this process), "
                f"{result.lines / seconds:,.0f} lines/s: {result.prompts_created:,} prompts, "
                f"{result.responses_created:,} responses, {result.comparisons_created:,} comparisons"
            )
            assert Comparison.objects.filter(project__slug=slug).count() == args.lines

            seconds, cpu, result = timed_import(slug, path)
            print(
                f"re-import:    {seconds:.1f} s wall ({cpu:.1f} s CPU in this process), "
                f"{result.lines / seconds:,.0f} lines/s: {result.duplicates:,} duplicate lines, "
                f"{result.comparisons_created} created"
            )
        finally:
            start = time.perf_counter()
            delete_project(slug)
            print(f"cleanup: deleted project {slug} in {time.perf_counter() - start:.1f} s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process: {peak_mb:,.0f} MB ({peak_mb - baseline_mb:,.0f} MB above its start)")


if __name__ == "__main__":
    main()
