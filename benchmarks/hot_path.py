"""The rater hot path under load: GET next -> POST judgment, many raters at once. Not a test.

    .venv/bin/python benchmarks/hot_path.py                       # both databases, the full grid, 20 s a setting
    .venv/bin/python benchmarks/hot_path.py --db postgres --raters 16 --seconds 10
    .venv/bin/python benchmarks/hot_path.py --db sqlite,postgres --raters 1,4,16,64,200 --seconds 20 --keepalive \\
        --label-studio http://127.0.0.1:8090 --label-studio-token T --label-studio-project 1

For each database it makes a scratch one (SQLite: a file in a temporary VAR_DIR;
PostgreSQL: a database `bench_hot_path_<random>` on DATABASE_URL's server,
default postgres://postgres@127.0.0.1:5432, dropped at the end), starts the
production server exactly as people do (`make serve`, which migrates first),
imports the shared HH pairs (../shared/data/hh_harmless_dev.jsonl, skipped
when absent: synthetic pairs only) into a project with overlap 1, tops it up
with synthetic comparisons so no setting runs out, and creates raters with API
tokens. Each setting (raters x keep-alive) gets fresh raters; each rater loops
GET /api/projects/<id>/next/ -> POST /api/judgments/ for --seconds, a new
connection per request unless keep-alive. Printed per setting: cycles/s,
p50/p95/p99 of both requests, errors by status, double assignments (from the
database afterwards: a comparison with more first judgments than the overlap,
or leased twice to one rater), and the server's RSS (master and workers).
Then the scale check: 1 and 16 raters on projects of 2,000 and 100,000
comparisons (and 1,000,000 on PostgreSQL, --million), with the candidate
query's plan (EXPLAIN) at each size on PostgreSQL.

With --label-studio, the same loop runs against a running Label Studio project
(a pairwise labeling config; see --label-studio-setup) with one token shared
by all its raters, and the table gets its rows beside ours.

The load generator is asyncio with a minimal HTTP/1.1 client (the standard
library only): a heavier client would take the CPU from the server it measures
(client, server and database share this machine's cores). The API throttle is
raised for the run (API_USER_RATE): a benchmark rater asks far faster than a person.
"""

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
HH_PAIRS = ROOT.parent / "shared" / "data" / "hh_harmless_dev.jsonl"
PYTHON = sys.executable
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432"
FILLER_PREFIX = "bench-filler-"

# --- the load loop ------------------------------------------------------------------


@dataclass
class Stats:
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    cycles: int = 0
    empty: int = 0  # next answered 204: nothing left
    errors: Counter = field(default_factory=Counter)


class Http:
    """One rater's HTTP/1.1 connection: a new one per request, or kept alive."""

    def __init__(self, host: str, port: int, keepalive: bool):
        self.host, self.port, self.keepalive = host, port, keepalive
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: keep-alive" if self.keepalive else "Connection: close")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            status, reply_headers, payload = await self._read_response()
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise
        if not self.keepalive or reply_headers.get("connection", "").lower() == "close":
            await self.close()
        return status, payload

    async def _read_response(self):
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            payload = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunks.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            payload = b"".join(c[:-2] for c in chunks)
        elif status in (204, 304):
            payload = b""
        else:
            payload = await self.reader.read()
        return status, headers, payload

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        self.reader = self.writer = None


class Target:
    """What a rater talks to: our API, or Label Studio's."""

    def next_path(self) -> str: ...
    def parse_next(self, body: bytes): ...
    def submit(self, task) -> tuple[str, bytes]: ...


class Ours(Target):
    def __init__(self, project_id: int):
        self.project_id = project_id

    def next_path(self):
        return f"/api/projects/{self.project_id}/next/"

    def parse_next(self, body):
        return json.loads(body)["comparison"]

    def submit(self, comparison_id):
        body = {"comparison": comparison_id, "outcome": random.choice(("left", "right")), "strength": 2}
        return "/api/judgments/", json.dumps({**body, "time_spent_ms": 1200}).encode()


class LabelStudio(Target):
    def __init__(self, project_id: int, from_name: str, to_name: str):
        self.project_id, self.from_name, self.to_name = project_id, from_name, to_name

    def next_path(self):
        return f"/api/projects/{self.project_id}/next/"

    def parse_next(self, body):
        return json.loads(body)["id"]

    def submit(self, task_id):
        choice = random.choice(("left", "right"))
        result = [
            {
                "from_name": self.from_name,
                "to_name": self.to_name,
                "type": "pairwise",
                "value": {"selected": choice},
            }
        ]
        return f"/api/tasks/{task_id}/annotations/", json.dumps({"result": result, "lead_time": 1.2}).encode()


async def rater_loop(target: Target, host, port, token, keepalive, deadline, stats: Stats):
    http = Http(host, port, keepalive)
    auth = {"Authorization": f"Token {token}", "Accept": "application/json"}
    post_headers = {**auth, "Content-Type": "application/json"}
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                status, body = await http.request("GET", target.next_path(), auth)
            except (OSError, asyncio.IncompleteReadError) as error:
                stats.errors[f"next:{type(error).__name__}"] += 1
                await asyncio.sleep(0.05)
                continue
            stats.next_ms.append((time.perf_counter() - started) * 1000)
            if status == 204 or (status == 404 and isinstance(target, LabelStudio)):
                stats.empty += 1
                await asyncio.sleep(0.05)
                continue
            if status != 200:
                stats.errors[f"next:{status}"] += 1
                continue
            path, payload = target.submit(target.parse_next(body))
            started = time.perf_counter()
            try:
                status, body = await http.request("POST", path, post_headers, payload)
            except (OSError, asyncio.IncompleteReadError) as error:
                stats.errors[f"submit:{type(error).__name__}"] += 1
                continue
            stats.submit_ms.append((time.perf_counter() - started) * 1000)
            if status in (200, 201):
                stats.cycles += 1
            else:
                stats.errors[f"submit:{status}"] += 1
    finally:
        await http.close()


def run_load(target: Target, host: str, port: int, tokens: list[str], seconds: float, keepalive: bool) -> Stats:
    stats = Stats()

    async def main():
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(rater_loop(target, host, port, t, keepalive, deadline, stats) for t in tokens))

    started = time.monotonic()
    asyncio.run(main())
    stats.elapsed = time.monotonic() - started
    return stats


def pct(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# --- the server and the database (through subprocesses: Django sets up once per process) ---


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`make serve` in its own process group, on a free port."""

    def __init__(self, env: dict[str, str], log: Path):
        self.port = free_port()
        self.log = log.open("w")
        self.process = subprocess.Popen(
            ["make", "-s", "--no-print-directory", "serve", "HOST=127.0.0.1", f"PORT={self.port}"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"make serve exited with {self.process.returncode}; see {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise SystemExit(f"make serve did not listen on port {self.port} within 180 s; see {log}")

    def rss_mb(self) -> float:
        """Resident memory of everything make serve started (gunicorn's master and workers)."""
        total, todo = 0, [self.process.pid]
        while todo:
            pid = todo.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            todo += [int(c) for c in children]
            if pid != self.process.pid:  # make itself is not the server
                total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        return total / 1024

    def stop(self):
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def django_step(env: dict[str, str], step: str, **args) -> dict:
    """Run one step of this file inside Django (a subprocess with the database's env); its JSON answer."""
    out = subprocess.run(
        [PYTHON, __file__, "--django-step", step, json.dumps(args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"step {step} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the steps that run inside Django ---------------------------------------------------


def _step_project(slug: str, comparisons: int, hh: bool) -> dict:
    from django.db import connection, transaction
    from django.utils import timezone

    from labeling import importing
    from labeling.models import Comparison, Project, Prompt, Response

    project = Project.objects.create(slug=slug, name=slug, overlap=1, criteria=[])
    if hh and HH_PAIRS.exists():
        with HH_PAIRS.open("rb") as lines:
            importing.import_pairs(project_slug=slug, lines=lines, format="hh")
    have = Comparison.objects.filter(project=project).count()
    missing = comparisons - have
    if missing > 0:
        # Filler: prompts with k responses each give k(k-1)/2 comparisons, made in one INSERT ... SELECT.
        k = 60
        prompts = -(-missing // (k * (k - 1) // 2))
        texts = _reply_texts()
        with transaction.atomic():
            made = Prompt.objects.bulk_create(
                Prompt(
                    project=project,
                    conversation=[{"role": "user", "content": f"Synthetic question {n}: {random.choice(texts)}"}],
                    external_id=f"{FILLER_PREFIX}{n}",
                    content_hash=secrets.token_hex(32),
                )
                for n in range(prompts)
            )
            Response.objects.bulk_create(
                Response(
                    prompt=p,
                    text=f"{random.choice(texts)} ({i})",
                    source="synthetic",
                    content_hash=secrets.token_hex(32),
                )
                for p in made
                for i in range(k)
            )
            fixed = {"project_id": project.pk}
            for f in Comparison._meta.concrete_fields:
                if f.name in ("id", "project", "prompt", "response_a", "response_b"):
                    continue
                value = timezone.now() if f.name == "created_at" else f.get_default()
                fixed[f.column] = f.get_db_prep_save(value, connection)
            columns = ", ".join(fixed)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {Comparison._meta.db_table} ({columns}, prompt_id, response_a_id, response_b_id) "
                    f"SELECT {', '.join(['%s'] * len(fixed))}, r1.prompt_id, r1.id, r2.id "
                    f"FROM {Response._meta.db_table} r1 JOIN {Response._meta.db_table} r2 "
                    "ON r2.prompt_id = r1.prompt_id AND r1.id < r2.id "
                    f"WHERE r1.prompt_id IN (SELECT id FROM {Prompt._meta.db_table} WHERE project_id = %s "
                    "AND external_id LIKE %s) "
                    "ORDER BY r1.id, r2.id LIMIT %s",
                    [*fixed.values(), project.pk, FILLER_PREFIX + "%", missing],
                )
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
    return {"project": project.pk, "comparisons": Comparison.objects.filter(project=project).count()}


def _reply_texts() -> list[str]:
    if HH_PAIRS.exists():
        with HH_PAIRS.open() as lines:
            return [json.loads(line)["chosen"].rsplit("Assistant:", 1)[-1].strip() for line in lines][:500]
    return ["A reply of a typical length, saying something helpful about the question asked." * 3]


def _step_raters(project: int, count: int, prefix: str) -> dict:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from labeling.models import Project

    users = get_user_model().objects.bulk_create(
        get_user_model()(username=f"{prefix}{n}", password="!") for n in range(count)
    )
    users = list(get_user_model().objects.filter(username__startswith=prefix))
    Project.objects.get(pk=project).raters.add(*users)
    tokens = Token.objects.bulk_create(Token(user=u, key=secrets.token_hex(20)) for u in users)
    return {"tokens": [t.key for t in tokens]}


def _step_check(project: int, prefix: str) -> dict:
    """Double assignments, from the database: a comparison with more first
    judgments than the overlap, or a comparison leased twice to one rater."""
    from django.db.models import Count

    from labeling.models import Assignment, Judgment, Project

    overlap = Project.objects.get(pk=project).overlap
    judgments = Judgment.objects.filter(project_id=project, repeat_of__isnull=True, rater__username__startswith=prefix)
    over = (
        Judgment.objects.filter(project_id=project, repeat_of__isnull=True)
        .values("comparison")
        .annotate(n=Count("pk"))
        .filter(n__gt=overlap)
        .count()
    )
    twice = (
        Assignment.objects.filter(project_id=project, kind=Assignment.Kind.TASK, rater__username__startswith=prefix)
        .values("comparison", "rater")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    return {"double": over + twice, "judgments": judgments.count()}


def _step_explain(project: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from labeling.assignment import candidates_for
    from labeling.models import Project

    if connection.vendor != "postgresql":
        return {"plan": ""}
    rater = get_user_model().objects.filter(labeling_projects=project).first() or get_user_model().objects.first()
    with transaction.atomic():
        plan = candidates_for(rater=rater, project=Project.objects.get(pk=project), exclude=[])[:1].explain(
            analyze=True
        )
    return {"plan": plan}


STEPS = {"project": _step_project, "raters": _step_raters, "check": _step_check, "explain": _step_explain}


def _run_step(step: str, args: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    print(json.dumps(STEPS[step](**json.loads(args))))


# --- the run --------------------------------------------------------------------------


@dataclass
class Row:
    system: str
    raters: int
    keepalive: bool
    comparisons: int
    stats: Stats
    double: int | str
    rss_mb: float | str
    scale_check: bool = False  # a row of the 2,000 / 100,000 / 1,000,000 comparisons check

    def cells(self) -> list[str]:
        s = self.stats
        errors = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items())) or "0"
        return [
            self.system,
            str(self.raters),
            "yes" if self.keepalive else "no",
            f"{self.comparisons:,}",
            f"{s.cycles / s.elapsed:.1f}",
            " / ".join(f"{pct(s.next_ms, q):.0f}" for q in (50, 95, 99)),
            " / ".join(f"{pct(s.submit_ms, q):.0f}" for q in (50, 95, 99)),
            errors + (f" (204: {s.empty})" if s.empty else ""),
            str(self.double),
            self.rss_mb if isinstance(self.rss_mb, str) else f"{self.rss_mb:.0f}",
        ]


HEADER = [
    "system",
    "raters",
    "keep-alive",
    "comparisons",
    "cycles/s",
    "next p50/p95/p99 ms",
    "submit p50/p95/p99 ms",
    "errors",
    "double-assigned",
    "server RSS MB",
]


def print_table(rows: list[Row]) -> None:
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    sys.stdout.flush()


def print_ratios(rows: list[Row]) -> None:
    """Ours against Label Studio's, setting by setting (the grid project, same raters and keep-alive)."""
    theirs = {(r.raters, r.keepalive): r for r in rows if r.system == "Label Studio"}
    lines = []
    for row in rows:
        peer = theirs.get((row.raters, row.keepalive))
        if row.system == "Label Studio" or peer is None or row.scale_check or not peer.stats.cycles:
            continue
        ours_next, peer_next = pct(row.stats.next_ms, 50), pct(peer.stats.next_ms, 50)
        lines.append(
            f"| {row.system} | {row.raters} | {'yes' if row.keepalive else 'no'} | "
            f"{row.stats.cycles / peer.stats.cycles:.1f}x | {peer_next / ours_next:.1f}x |"
        )
    if lines:
        print("\nAgainst Label Studio in the same run (higher is better for us):\n")
        print("| system | raters | keep-alive | cycles/s, ours / theirs | next p50, theirs / ours |")
        print("|---|---|---|---|---|")
        print("\n".join(lines))


def bench_database(db: str, args, rows: list[Row], plans: dict) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=f"bench_hot_path_{db}_"))
    env = {
        **os.environ,
        "VAR_DIR": str(scratch),
        "API_USER_RATE": "100000000/hour",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    env.pop("DJANGO_ENV", None)
    pg_name = None
    if db == "postgres":
        base = (args.postgres or DEFAULT_PG).rstrip("/")
        base = base.rsplit("/", 1)[0] if urlsplit(base).path not in ("", "/") else base
        pg_name = f"bench_hot_path_{secrets.token_hex(4)}"
        subprocess.run(["psql", f"{base}/postgres", "-qc", f"CREATE DATABASE {pg_name}"], check=True)
        env["DATABASE_URL"] = f"{base}/{pg_name}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{scratch / 'bench.sqlite3'}"
    server = None
    try:
        server = Server(env, scratch / "server.log")
        print(
            f"\n[{db}] make serve on port {server.port} (log {scratch / 'server.log'}); uptime: {uptime()}", flush=True
        )
        settings = [(n, ka) for n in args.raters for ka in ((False, True) if args.keepalive else (False,))]
        # Overlap 1: every cycle uses a comparison up. Room for 300 cycles/s in every setting.
        size = max(2000, 300 * int(args.seconds) * (len(settings) + 1))
        grid = django_step(env, "project", slug=f"grid-{db}", comparisons=size, hh=True)
        # Each worker imports the URLconf (and what it pulls in) on its first request: not measured.
        warm = django_step(env, "raters", project=grid["project"], count=16, prefix="warm-")["tokens"]
        run_load(Ours(grid["project"]), "127.0.0.1", server.port, warm, min(5.0, args.seconds), False)
        for n, keepalive in settings:
            prefix = f"r{n}{'k' if keepalive else ''}-"
            tokens = django_step(env, "raters", project=grid["project"], count=n, prefix=prefix)["tokens"]
            stats = run_load(Ours(grid["project"]), "127.0.0.1", server.port, tokens, args.seconds, keepalive)
            rss = server.rss_mb()
            check = django_step(env, "check", project=grid["project"], prefix=prefix)
            rows.append(Row(f"main, {db}", n, keepalive, grid["comparisons"], stats, check["double"], rss))
            print_table(rows[-1:])
        scale = [] if args.no_scale else [2_000, 100_000] + ([1_000_000] if db == "postgres" and args.million else [])
        for size in scale:
            project = django_step(env, "project", slug=f"scale-{db}-{size}", comparisons=size, hh=False)
            if db == "postgres":
                plans[size] = django_step(env, "explain", project=project["project"])["plan"]
            for n in (1, 16):
                prefix = f"s{size}-{n}-"
                tokens = django_step(env, "raters", project=project["project"], count=n, prefix=prefix)["tokens"]
                stats = run_load(Ours(project["project"]), "127.0.0.1", server.port, tokens, args.seconds, False)
                check = django_step(env, "check", project=project["project"], prefix=prefix)
                rows.append(
                    Row(f"main, {db}", n, False, project["comparisons"], stats, check["double"], server.rss_mb(), True)
                )
                print_table(rows[-1:])
    finally:
        if server is not None:
            server.stop()
        if pg_name:
            subprocess.run(["psql", f"{base}/postgres", "-qc", f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"])
        shutil.rmtree(scratch, ignore_errors=True)


LABEL_STUDIO_CONFIG = """<View>
  <Text name="prompt" value="$prompt"/>
  <Text name="left" value="$left"/>
  <Text name="right" value="$right"/>
  <Pairwise name="comparison" toName="left,right"/>
</View>"""


def label_studio_setup(url: str, token: str, tasks: int) -> int:
    """A pairwise project (one annotation per task, as our overlap 1) with `tasks` HH pairs; its id."""
    import urllib.request

    def call(path, payload):
        request = urllib.request.Request(
            url.rstrip("/") + path,
            data=json.dumps(payload).encode(),
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())

    project = call(
        "/api/projects/",
        {"title": f"hot-path-{secrets.token_hex(3)}", "label_config": LABEL_STUDIO_CONFIG, "maximum_annotations": 1},
    )
    texts = _reply_texts() if HH_PAIRS.exists() else ["A reply."]
    data = [
        {"prompt": f"Question {n}", "left": random.choice(texts), "right": random.choice(texts)} for n in range(tasks)
    ]
    call(f"/api/projects/{project['id']}/import", data)
    return project["id"]


def bench_label_studio(args, rows: list[Row]) -> None:
    url = urlsplit(args.label_studio)
    if args.label_studio_project is None:
        tasks = int(max(args.raters) * args.seconds * 5 + 2000)
        args.label_studio_project = label_studio_setup(args.label_studio, args.label_studio_token, tasks)
        print(f"Label Studio: project {args.label_studio_project} with {tasks} pairwise tasks", flush=True)
    target = LabelStudio(args.label_studio_project, args.label_studio_from_name, args.label_studio_to_name)
    for n in args.raters:
        for keepalive in (False, True) if args.keepalive else (False,):
            tokens = [args.label_studio_token] * n
            stats = run_load(target, url.hostname, url.port or 80, tokens, args.seconds, keepalive)
            rows.append(Row("Label Studio", n, keepalive, 0, stats, "n/a", "n/a"))
            print_table(rows[-1:])


def uptime() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--django-step":
        _run_step(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres, or both comma-separated")
    parser.add_argument("--raters", default="1,4,16,64,200", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--seconds", type=float, default=20.0, help="per setting")
    parser.add_argument("--keepalive", action="store_true", help="also run every setting with kept-alive connections")
    parser.add_argument(
        "--million", action="store_true", help="the scale check at 1,000,000 comparisons too (PostgreSQL)"
    )
    parser.add_argument("--no-scale", action="store_true", help="skip the scale check (2,000 / 100,000 comparisons)")
    parser.add_argument("--postgres", help=f"server for the scratch database (default {DEFAULT_PG})")
    parser.add_argument("--label-studio", help="URL of a running Label Studio")
    parser.add_argument("--label-studio-token")
    parser.add_argument("--label-studio-project", type=int, help="default: make a pairwise project")
    parser.add_argument("--label-studio-from-name", default="comparison")
    parser.add_argument("--label-studio-to-name", default="left,right")
    args = parser.parse_args()
    # A timeout's SIGTERM still stops the server and drops the scratch database (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows: list[Row] = []
    plans: dict[int, str] = {}
    started = time.monotonic()
    print(f"hot path: {args.raters} raters, {args.seconds:g} s a setting; load {uptime()}; cores {os.cpu_count()}")
    if args.label_studio:
        bench_label_studio(args, rows)
    for db in args.db.split(","):
        bench_database(db, args, rows, plans)
    print(f"\nAll settings ({time.monotonic() - started:.0f} s; load at the end {uptime()}):\n")
    print_table(rows)
    print_ratios(rows)
    for size, plan in plans.items():
        print(f"\nCandidate query plan at {size:,} comparisons (PostgreSQL, EXPLAIN ANALYZE):\n{plan}")
    small = [r for r in rows if r.raters == 1 and r.comparisons == 2_000 and "postgres" in r.system]
    big = [r for r in rows if r.raters == 1 and r.comparisons >= 1_000_000]
    if small and big:
        ratio = pct(big[0].stats.next_ms, 50) / pct(small[0].stats.next_ms, 50)
        print(f"\nnext p50 at {big[0].comparisons:,} vs 2,000 comparisons (1 rater, PostgreSQL): {ratio:.2f}x")


if __name__ == "__main__":
    main()
