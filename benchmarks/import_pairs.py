"""How fast does import_pairs take in a big file, in how much memory, and how much memory does an export
of a million judgments take? Not a test; run it by hand (`make bench-import`, or):

    .venv/bin/python benchmarks/import_pairs.py                      # both databases, 100,000 pairs
    .venv/bin/python benchmarks/import_pairs.py --db sqlite --lines 20000 --judgments 0

For each database (a scratch SQLite file, and a scratch PostgreSQL database it creates on the server at
--postgres and drops at the end) it migrates, writes a synthetic `pairs` file (default 100,000 lines;
distinct prompts and replies of HH-like lengths, a third of the prompts multi-turn), and runs each step
in a fresh process (`--child`), so that each figure of peak memory (ru_maxrss) is that step's own:

    import     the real import_pairs (the streamed importer of labeling/importing/)
    baseline   the same file through main's previous importer (labeling/importing/ at --baseline-rev,
               read from git: parse the whole file, then write), into another project: the peer
               figure of the same run on the same machine. Skipped when git has no such revision.
    re-import  the first file again: every line a duplicate
    judgments  --judgments rows (10 raters over the imported comparisons), bulk-written: the data of
    export     export_preferences raw (one line per judgment) and trl to /dev/null, streamed

and prints wall seconds, CPU seconds of the process and of the importer's parser process (the forked
child that parses ahead, labeling/importing/pipelining.py), CPU seconds of the PostgreSQL backend that
served it (read from /proc: the server is local), lines/s and peak RSS of both processes, side by side.
The machine's load average is printed too: on a shared machine wall time is what the other processes leave.
"""

import argparse
import importlib
import json
import os
import random
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE_REV = "84e3001"  # main before the streamed importer (parse the whole file, then write)

WORDS = (
    "the a model answer question because should could would people time make good know way think help need "
    "explain example data result first second however also which when where what why how this that these "
    "important different often usually simple clear safe risk cost plan step try check change keep start "
    "system user value number problem reason idea point case part place world work life day year water food"
).split()


# --- the synthetic file ---


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


# --- one measured step, in its own process ---


def child(step: str, args: argparse.Namespace) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    connection.ensure_connection()
    server = _BackendClock(connection)
    start, cpu = time.perf_counter(), time.process_time()
    figures = STEPS[step](args)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the importer's parser process, reaped
    figures.update(
        wall_s=time.perf_counter() - start,
        cpu_s=time.process_time() - cpu,
        parser_cpu_s=children.ru_utime + children.ru_stime,
        server_cpu_s=server.seconds(),
        rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        parser_rss_mb=children.ru_maxrss / 1024,
    )
    return figures


class _BackendClock:
    """CPU seconds the PostgreSQL backend of this connection spent, from /proc (None elsewhere)."""

    def __init__(self, connection):
        self.path = None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                self.path = Path(f"/proc/{cursor.fetchone()[0]}/stat")
        self.start = self._ticks()

    def _ticks(self):
        try:
            fields = self.path.read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        except (AttributeError, OSError):
            return None

    def seconds(self):
        end = self._ticks()
        return None if end is None or self.start is None else (end - self.start) / os.sysconf("SC_CLK_TCK")


def step_import(args) -> dict:
    from labeling import importing

    return _import(importing.import_pairs, args)


def step_baseline(args) -> dict:
    sys.path.insert(0, args.baseline_dir)
    baseline = importlib.import_module("baseline_importing")
    return _import(baseline.import_pairs, args)


def _import(import_pairs, args) -> dict:
    with open(args.file, "rb") as lines:
        result = import_pairs(project_slug=args.slug, lines=lines, format="pairs", project_name="Benchmark")
    return {
        "lines": result.lines,
        "created": result.comparisons_created,
        "rows": result.prompts_created + result.responses_created + result.comparisons_created,
        "duplicates": result.duplicates,
    }


def step_judgments(args) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from labeling.importing import bulk
    from labeling.models import Comparison, Judgment, Project

    project = Project.objects.get(slug=args.slug)
    raters = [get_user_model().objects.create(username=f"bench-{secrets.token_hex(4)}-{i}") for i in range(10)]
    comparisons = list(Comparison.objects.filter(project=project).values_list("pk", flat=True))
    rng, written = random.Random(1), 0
    with transaction.atomic():
        for rater in raters:
            for start in range(0, len(comparisons), 50_000):
                if written >= args.judgments:
                    break
                batch = comparisons[start : min(start + 50_000, start + args.judgments - written)]
                rows = []
                for pk in batch:
                    outcome = rng.choice("aab") if rng.random() < 0.9 else "tie"
                    strength = rng.randint(1, 3) if outcome != "tie" else None
                    rationale = "Clearer and more complete." if rng.random() < 0.3 else ""
                    rows.append((pk, rater.pk, project.pk, outcome, strength, rationale, rng.randint(2000, 60000), "a"))
                bulk.insert(
                    Judgment,
                    ("comparison", "rater", "project", "outcome", "strength", "rationale", "time_spent_ms", "left"),
                    rows,
                )
                written += len(rows)
    return {"lines": written, "rows": written}


def step_export(args) -> dict:
    from labeling.exporting import export_preferences
    from labeling.models import Project

    with open(os.devnull, "w") as out:
        result = export_preferences(project=Project.objects.get(slug=args.slug), format=args.export_format, out=out)
    return {"lines": result.written}


STEPS = {"import": step_import, "baseline": step_baseline, "judgments": step_judgments, "export": step_export}


# --- the run ---


def run_child(step: str, env: dict, *extra: str) -> dict:
    command = [sys.executable, __file__, "--child", step, *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{step} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def extract_baseline(rev: str, folder: Path) -> str | None:
    """main's importer at rev, as a package baseline_importing under folder; None without git or rev."""
    package = folder / "baseline_importing"
    try:
        names = subprocess.run(
            ["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{rev}:labeling/importing"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        package.mkdir()
        for name in names:
            source = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{rev}:labeling/importing/{name}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            (package / name).write_text(source)
    except (OSError, subprocess.CalledProcessError):
        return None
    return str(folder)


def scratch_database(kind: str, folder: Path, postgres: str) -> tuple[str, callable]:
    """(DATABASE_URL, drop) of a fresh database of this kind."""
    if kind == "sqlite":
        path = folder / "bench.sqlite3"
        return f"sqlite:///{path}", lambda: None
    import psycopg

    name = f"bench_import_{secrets.token_hex(4)}"
    with psycopg.connect(f"{postgres}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")

    def drop():
        with psycopg.connect(f"{postgres}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return f"{postgres}/{name}", drop


def row(name: str, figures: dict) -> str:
    rate = figures["lines"] / figures["wall_s"] if figures.get("lines") else 0
    server = figures.get("server_cpu_s")
    parser_cpu, parser_rss = figures.get("parser_cpu_s", 0), figures.get("parser_rss_mb", 0)
    return (
        f"| {name} | {figures.get('lines', 0):,} | {figures['wall_s']:.1f} | {figures['cpu_s']:.1f} | "
        f"{f'{parser_cpu:.1f}' if parser_cpu else '-'} | {'-' if server is None else f'{server:.1f}'} | "
        f"{rate:,.0f} | {figures['rss_mb']:,.0f} | {f'{parser_rss:,.0f}' if parser_rss else '-'} |"
    )


def bench(kind: str, args, folder: Path, path: Path, baseline_dir: str | None) -> list[str]:
    url, drop = scratch_database(kind, folder, args.postgres)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_"))}
    env.update(DATABASE_URL=url, VAR_DIR=str(folder / f"var-{kind}"), DJANGO_SETTINGS_MODULE="config.settings")
    rows = []
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        common = ["--file", str(path)]
        figures = run_child("import", env, *common, "--slug", "bench")
        rows.append(row(f"{kind}: import (streamed, COPY/executemany)", figures))
        if baseline_dir:
            figures = run_child("baseline", env, *common, "--slug", "baseline", "--baseline-dir", baseline_dir)
            rows.append(row(f"{kind}: main's previous importer ({args.baseline_rev})", figures))
        figures = run_child("import", env, *common, "--slug", "bench")
        rows.append(row(f"{kind}: re-import (all duplicates)", figures))
        if args.judgments:
            figures = run_child("judgments", env, "--slug", "bench", "--judgments", str(args.judgments))
            rows.append(row(f"{kind}: write {args.judgments:,} judgments (bulk, for the export)", figures))
            for format in ("raw", "trl"):
                figures = run_child("export", env, "--slug", "bench", "--export-format", format)
                rows.append(row(f"{kind}: export {format} (streamed to /dev/null)", figures))
    finally:
        drop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="sqlite,postgres", help="Comma-separated: sqlite, postgres.")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--judgments", type=int, default=1_000_000, help="For the export figure; 0 skips it.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432", help="Server URL, no database.")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    # A step in its own process (used by the run itself).
    parser.add_argument("--child", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--slug", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-dir", help=argparse.SUPPRESS)
    parser.add_argument("--export-format", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return

    folder = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        path = folder / "pairs.jsonl"
        start = time.perf_counter()
        write_file(path, args.lines, args.seed)
        print(
            f"file: {args.lines:,} lines, {path.stat().st_size / 1e6:.1f} MB, written in "
            f"{time.perf_counter() - start:.1f} s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )
        baseline_dir = extract_baseline(args.baseline_rev, folder)
        if baseline_dir is None:
            print(f"(no git revision {args.baseline_rev}: the baseline row is left out)")
        table = [
            "| step | lines | wall s | CPU s | parser process CPU s | server CPU s | lines/s (wall) | peak RSS MB |"
            " parser process peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for kind in args.db.split(","):
            table += bench(kind.strip(), args, folder, path, baseline_dir)
            print("\n".join(table), flush=True)
            print(f"load average now {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
