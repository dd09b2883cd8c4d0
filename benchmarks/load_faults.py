"""Load with faults: 200 simulated raters against the production server while it is broken three ways.

Not a test; run it by hand (one command, bounded: it stops by itself):

    .venv/bin/python benchmarks/load_faults.py                 # 200 raters, 120 s
    .venv/bin/python benchmarks/load_faults.py --raters 50 --seconds 60

What runs, all on this machine (loopback only):
- a scratch PostgreSQL database it creates and drops (bench_faults_<random>, on --pg);
- Redis database --redis-db (default 7) of the machine's Redis on 127.0.0.1:6379, as the
  broker and the shared cache; it must be empty at the start, and is flushed at the end;
- the production web server: `make serve` (gunicorn, config/gunicorn.conf.py) with
  DJANGO_ENV=production, on 127.0.0.1:--port;
- the real workers as `make run` starts them: `celery -A config worker --queues gpu` (the
  trainer, on a tiny 2-layer BERT built here so a version trains in seconds on the CPU) and
  `--queues default --beat` (the every-minute reconcile). Both under `nice`: on a real
  deployment they have machines of their own; here they share the web's cores.

Every simulated rater loops GET /api/projects/<id>/next/ -> think 2-5 s -> POST
/api/judgments/, retrying a request that met a network error or a 5xx with the same body
(the API's idempotency rule: a second POST for a comparison the rater judged returns the
stored judgment with 200). A few tasks (--walkaway) are answered after the lease ran out,
so expired leases are handed to others while their first holders still answer.

During the run: the training worker is SIGKILLed (its whole process group, as a machine
loss would) while a version is training, and a new one is started; Redis is shut down and
started again; one gunicorn worker process is SIGKILLed (the master forks a new one).

Afterwards it checks the database: every 201 the clients received is a stored judgment (0
lost), no rater has two judgments of one comparison (0 duplicated), no comparison was ever
held or judged by more raters at once than its overlap (0 double assignments), each
comparison's judgments_count matches its judgments, and a reward-model version started
training after the last fault and finished. It prints requests/s, p50/p95/p99 of next and
of the submit, the errors, and each check; exit status 1 when an integrity check fails.
"""

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = ROOT / ".venv" / "bin"

# The tiny backbone's whole vocabulary; the synthetic prompts and replies use these words only.
WORDS = (
    "the a model answer question because should could would people time make good know way think help need "
    "explain example data result first second however also which when where what why how this that these "
    "important different often usually simple clear safe risk cost plan step try check change keep start "
    "system user value number problem reason idea point case part place world work life day year water food"
).split()
REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]  # fmt: skip  (the machine's own start command: /work/.library/env/machines/python-svc.md)
RETRIES = 8
REQUEST_TIMEOUT_S = 15


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raters", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=120, help="how long the raters work")
    parser.add_argument("--think", type=float, nargs=2, default=(2.0, 5.0), metavar=("MIN", "MAX"))
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--lease-seconds", type=int, default=30, help="the project's lease (short, so leases expire)")
    parser.add_argument("--walkaway", type=float, default=0.02, help="share of tasks answered after the lease ran out")
    parser.add_argument("--retrain-every", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=2, help="of the tiny backbone: how long a training takes")
    parser.add_argument(
        "--settle", type=float, default=150, help="seconds to wait, after the raters stop, for a version"
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="server for the scratch database")
    parser.add_argument("--redis-db", type=int, default=7)
    parser.add_argument("--web-workers", type=int, default=0, help="WEB_CONCURRENCY (0: the server's default)")
    parser.add_argument("--no-redis-restart", action="store_true", help="skip that fault (a shared Redis in use)")
    parser.add_argument("--worker-nice", type=int, default=10, help="the workers' nice value (0: as the web's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the database and the scratch folder")
    return parser.parse_args()


# --- processes ------------------------------------------------------------------


class Processes:
    """What this run started, each in its own process group, with its log under the scratch folder."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs, self.procs = env, logs, {}

    def start(self, name: str, cmd: list[str], nice: int = 0, env: dict | None = None) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        prefix = ["nice", "-n", str(nice)] if nice else []
        proc = subprocess.Popen(
            prefix + cmd, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def kill_group(self, name: str, sig=signal.SIGKILL) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            proc.wait()

    def stop_all(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                self.kill_group(name, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill_group(name)


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def gunicorn_workers(make_pid: int) -> list[int]:
    """The worker processes under `make serve`: make -> gunicorn master (exec'd by the recipe) -> workers."""
    for pid in [make_pid, *children_of(make_pid)]:
        if "gunicorn" in cmdline(pid):
            return [kid for kid in children_of(pid) if "gunicorn" in cmdline(kid)]
    return []


def redis_cli(*args: str) -> str:
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", *args], capture_output=True, text=True)
    return out.stdout.strip()


def redis_is_up() -> bool:
    return redis_cli("PING") == "PONG"


def restart_redis() -> float:
    """Shut the machine's Redis down and start it again; returns how long it did not answer."""
    started = time.monotonic()
    redis_cli("SHUTDOWN", "NOSAVE")
    while redis_is_up() and time.monotonic() - started < 5:
        time.sleep(0.05)
    time.sleep(1.0)  # down for a moment, as a crash and its restart would be
    subprocess.run(REDIS_START, check=True, capture_output=True)
    while not redis_is_up():
        if time.monotonic() - started > 15:
            raise RuntimeError("Redis did not come back within 15 s")
        time.sleep(0.05)
    return time.monotonic() - started


# --- setup ---------------------------------------------------------------------


def build_tiny_backbone(directory: Path) -> str:
    """A 2-layer, 64-wide BERT with a word-level vocabulary: trains in seconds on one core."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(w.lower() for w in WORDS)), ".", "?"]
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, model_max_length=128)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
        num_labels=1,
        pad_token_id=0,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def pairs_file(n: int, rng: random.Random, gold_share: float) -> list[str]:
    def text(low: int, high: int, tag: str) -> str:
        return f"{tag} " + " ".join(rng.choices(WORDS, k=rng.randint(low, high))) + "."

    lines = []
    for i in range(n):
        gold = rng.random() < gold_share
        lines.append(
            json.dumps(
                {
                    "prompt": text(8, 30, f"q{i}"),
                    "response_a": text(10, 40, f"a{i}"),
                    "response_b": text(10, 40, f"b{i}"),
                    # Gold items carry their known answer; the rest no label at all (raters decide).
                    **({"label": rng.choice("ab"), "gold": True} if gold else {}),
                }
            )
        )
    return lines


def build_project(args, rng: random.Random):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from labeling.api import tokens
    from labeling.importing import import_pairs
    from labeling.models import Project
    from rewardmodel.models import LoopSettings

    # Enough work that the queue never runs dry: a judgment every ~3.5 s per rater, `overlap` per comparison.
    n = max(1000, int(1.5 * args.raters * args.seconds / sum(args.think) * 2 / args.overlap))
    import_pairs(project_slug="bench-faults", lines=pairs_file(n, rng, 0.02), format="pairs")
    project = Project.objects.get(slug="bench-faults")
    project.overlap = args.overlap
    project.lease_duration = timedelta(seconds=args.lease_seconds)
    project.repeat_rate = 0.03
    project.save()
    LoopSettings.objects.update_or_create(project=project, defaults={"retrain_every": args.retrain_every})
    User = get_user_model()
    unusable = make_password(None)  # they sign in with tokens; no password hashing at setup
    User.objects.bulk_create([User(username=f"rater{i:03d}", password=unusable) for i in range(args.raters)])
    raters = list(User.objects.filter(username__startswith="rater").order_by("username"))
    project.raters.add(*raters)
    return project, n, [tokens.issue_token(user=u).key for u in raters]


# --- the raters ----------------------------------------------------------------


@dataclass
class Stats:
    latency: dict = field(default_factory=lambda: {"next": [], "submit": []})  # (monotonic end, ms)
    statuses: Counter = field(default_factory=Counter)  # (kind, status)
    errors: list = field(default_factory=list)  # (monotonic, kind, what)
    created: dict = field(default_factory=dict)  # judgment id -> (rater, comparison), from every 201
    existing: dict = field(default_factory=dict)  # judgment id -> (rater, comparison), from a retry's 200
    conflicts: int = 0
    walkaways: int = 0
    gave_up: Counter = field(default_factory=Counter)  # kind -> requests abandoned after RETRIES attempts


async def request(session, stats: Stats, kind: str, method: str, url: str, headers: dict, body=None):
    """One API call with retries on network errors, timeouts and 5xx; (status, json) or (None, None)."""
    for attempt in range(RETRIES):
        started = time.monotonic()
        try:
            async with session.request(method, url, headers=headers, json=body) as reply:
                data = await reply.json() if reply.status not in (204,) and reply.content_length != 0 else None
                status = reply.status
        except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as error:
            stats.errors.append((time.monotonic(), kind, type(error).__name__))
        else:
            done = time.monotonic()
            stats.latency[kind].append((done, (done - started) * 1000))
            stats.statuses[kind, status] += 1
            if status < 500:
                return status, data
            stats.errors.append((done, kind, f"HTTP {status}"))
        await asyncio.sleep(min(2.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.5))
    stats.gave_up[kind] += 1
    return None, None


async def rater(index: int, token: str, base: str, project_id: int, args, stats: Stats, deadline: float, session):
    rng = random.Random(args.seed * 1000 + index)
    headers = {"Authorization": f"Token {token}"}
    await asyncio.sleep(rng.uniform(0, min(5.0, args.seconds / 10)))  # they do not all arrive in the same instant
    while time.monotonic() < deadline:
        status, task = await request(session, stats, "next", "GET", f"{base}/api/projects/{project_id}/next/", headers)
        if status == 204:  # nothing left for this rater
            await asyncio.sleep(5)
            continue
        if status != 200:
            await asyncio.sleep(1)
            continue
        think = rng.uniform(*args.think)
        if rng.random() < args.walkaway and time.monotonic() + args.lease_seconds + 15 < deadline:
            think = args.lease_seconds + rng.uniform(2, 15)  # back from a break after the lease ran out
            stats.walkaways += 1
        await asyncio.sleep(think)
        outcome = rng.choice(("left", "right", "left", "right", "tie"))
        body = {
            "comparison": task["comparison"],
            "outcome": outcome,
            "strength": rng.randint(1, 3) if outcome in ("left", "right") else None,
            "time_spent_ms": int(think * 1000),
        }
        status, judgment = await request(session, stats, "submit", "POST", f"{base}/api/judgments/", headers, body)
        if status == 201:
            stats.created[judgment["id"]] = (index, task["comparison"])
        elif status == 200:
            stats.existing[judgment["id"]] = (index, task["comparison"])
        elif status == 409:
            stats.conflicts += 1


# --- faults --------------------------------------------------------------------


@dataclass
class Faults:
    events: list = field(default_factory=list)  # (seconds into the run, words)
    last_at: datetime | None = None  # wall clock of the last fault, for the database's timestamps

    def note(self, t0: float, words: str) -> None:
        self.events.append((time.monotonic() - t0, words))
        self.last_at = datetime.now(UTC)


def training_version():
    """The version a worker is in the middle of training (some steps done, not all), or None."""
    from django.db.models import F

    from rewardmodel.models import RewardModelVersion

    return (
        RewardModelVersion.objects.filter(status=RewardModelVersion.Status.TRAINING, progress_step__gt=0)
        .filter(progress_step__lt=F("progress_total"))
        .first()
    )


def inject_faults(args, procs: Processes, t0: float, faults: Faults, start_gpu_worker) -> None:
    """The three faults, in a thread of its own (it blocks: database polls, Redis' restart)."""
    from django.db import connection

    T = args.seconds
    try:
        # 1. The training worker, SIGKILLed while a version is mid-training; a new one takes its place.
        caught = None
        while caught is None and time.monotonic() - t0 < 0.55 * T:
            caught = training_version()
            time.sleep(0.05)
        if caught is None:
            faults.note(t0, "no version was mid-training by 0.55 of the run: the training worker was NOT killed")
        else:
            procs.kill_group("gpu-1")
            faults.note(
                t0,
                f"training worker SIGKILLed while v{caught.version} trained (step {caught.progress_step}/"
                f"{caught.progress_total}); a new worker started",
            )
            start_gpu_worker("gpu-2")
    finally:
        connection.close()
    # 2. Redis (broker and cache) shut down and started again.
    time.sleep(max(0.0, t0 + 0.45 * T - time.monotonic(), 5.0))
    if not args.no_redis_restart:
        down = restart_redis()
        faults.note(t0, f"Redis shut down and started again (not answering for {down:.1f} s)")
    # 3. One web process SIGKILLed; the gunicorn master forks a replacement.
    time.sleep(max(0.0, t0 + 0.65 * T - time.monotonic(), 5.0))
    workers = gunicorn_workers(procs.procs["web"].pid)
    if workers:
        victim = random.Random(args.seed).choice(workers)
        os.kill(victim, signal.SIGKILL)
        faults.note(t0, f"web worker {victim} SIGKILLed (1 of {len(workers)})")
    else:
        faults.note(t0, "no gunicorn worker found: the web process was NOT killed")


async def sample_load(samples: list, stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(os.getloadavg()[0])
        await asyncio.sleep(1)


async def run_raters(args, tokens: list[str], project_id: int, procs, start_gpu_worker):
    stats, faults, load = Stats(), Faults(), []
    base = f"http://127.0.0.1:{args.port}"
    t0 = time.monotonic()
    deadline = t0 + args.seconds
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)  # one connection per rater in flight, as real raters have
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sampler = asyncio.create_task(sample_load(load, stop))
        injector = asyncio.create_task(asyncio.to_thread(inject_faults, args, procs, t0, faults, start_gpu_worker))
        await asyncio.gather(
            *(rater(i, tok, base, project_id, args, stats, deadline, session) for i, tok in enumerate(tokens))
        )
        elapsed = time.monotonic() - t0
        await injector
        stop.set()
        await sampler
    return stats, faults, load, t0, elapsed


async def wait_until_serving(base: str, token: str, limit_s: float = 120) -> None:
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < limit_s:
            try:
                async with session.get(f"{base}/api/projects/", headers={"Authorization": f"Token {token}"}) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the web server did not answer within {limit_s:.0f} s (see its log)")


def wait_until_ready(*logs: Path, limit_s: float = 180) -> None:
    """Celery workers log "ready." once they consume (at INFO)."""
    started = time.monotonic()
    while not all(" ready." in log.read_text(errors="replace") for log in logs):
        if time.monotonic() - started > limit_s:
            raise RuntimeError(f"the workers were not ready within {limit_s:.0f} s (see {logs})")
        time.sleep(0.5)


def logged_errors(log: Path) -> int:
    """Tracebacks and ERROR lines (a 500 logs one; so do a lost broker and a killed worker)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return sum(1 for line in text.splitlines() if "Traceback" in line or " ERROR " in line or "[ERROR]" in line)


# --- checks --------------------------------------------------------------------


def max_concurrent_holders(project) -> tuple[int, int]:
    """(comparisons ever held or judged by more raters at once than the overlap, the worst count).

    A task lease takes a slot from issue until it expires, or until its rater's judgment
    (which keeps the slot for good); gold and repeat leases take none (assignment.py).
    """
    from labeling.models import Assignment, Judgment

    judged = {
        (c, r): t
        # Gold comparisons too are left out here: every rater may judge a gold item (the overlap does not cap
        # gold), and counting their judgments made gold items look "held by 5 at once".
        for c, r, t in Judgment.objects.filter(
            project=project, repeat_of__isnull=True, comparison__is_gold=False
        ).values_list("comparison_id", "rater_id", "created_at")
    }
    events: dict[int, list] = {}
    for c, r, issued, expires in Assignment.objects.filter(
        project=project, kind=Assignment.Kind.TASK, comparison__is_gold=False
    ).values_list("comparison_id", "rater_id", "issued_at", "expires_at"):
        at = judged.get((c, r))
        end = expires if at is None or at > expires else at
        events.setdefault(c, []).extend([(issued, 1), (end, -1)])
    far = datetime.max.replace(tzinfo=UTC)
    for (c, _r), at in judged.items():
        events.setdefault(c, []).extend([(at, 1), (far, -1)])
    over, worst = 0, 0
    for changes in events.values():
        held = peak = 0
        for _, delta in sorted(changes, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
            held += delta
            peak = max(peak, held)
        worst = max(worst, peak)
        over += peak > project.overlap
    return over, worst


def check_database(project, stats: Stats, faults: Faults) -> dict:
    from django.db.models import Count, F, Q

    from labeling.models import Comparison, Judgment

    acked = {**stats.created, **stats.existing}
    stored = dict(
        (pk, (r, c))
        for pk, r, c in Judgment.objects.filter(pk__in=list(acked)).values_list("pk", "rater_id", "comparison_id")
    )
    usernames = dict(project.raters.values_list("pk", "username"))
    lost = [pk for pk in stats.created if pk not in stored]
    wrong = [
        pk
        for pk, (rater, comparison) in acked.items()
        if pk in stored and (usernames[stored[pk][0]] != f"rater{rater:03d}" or stored[pk][1] != comparison)
    ]
    duplicates = (
        Judgment.objects.filter(project=project, repeat_of__isnull=True)
        .values("comparison_id", "rater_id")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    first = Count("judgments", filter=Q(judgments__repeat_of__isnull=True))
    counted = Comparison.objects.filter(project=project).annotate(n=first)
    miscounted = counted.exclude(judgments_count=F("n")).count()
    over_judged = counted.filter(is_gold=False, n__gt=project.overlap).count()
    over_held, worst = max_concurrent_holders(project)
    return {
        "acked_201": len(stats.created),
        "acked_200": len(stats.existing),
        "lost": len(lost),
        "wrong": len(wrong),
        # (A rater's answer to a repeat is a second judgment of the comparison, by design: repeat_of says so.)
        "duplicates": duplicates,
        "over_judged": over_judged,
        "over_held": over_held,
        "worst_held": worst,
        "miscounted": miscounted,
        "judgments": Judgment.objects.filter(project=project).count(),
    }


def version_after(project, since: datetime):
    from rewardmodel.models import RewardModelVersion

    return (
        RewardModelVersion.objects.filter(project=project, started_at__gt=since, finished_at__isnull=False)
        .filter(status__in=[RewardModelVersion.Status.READY, RewardModelVersion.Status.ACTIVE])
        .order_by("version")
        .first()
    )


def loop_state(project) -> str:
    from rewardmodel.models import ProjectLoop, RewardModelVersion

    rows = [
        f"  v{v.version}: {v.status}, trigger {v.trigger or '-'}, attempts {v.attempts}, started "
        f"{v.started_at:%H:%M:%S}"
        + (f", finished {v.finished_at:%H:%M:%S}" if v.finished_at else "")
        + (f", error: {v.error[:120]}" if v.error else "")
        if v.started_at
        else f"  v{v.version}: {v.status}, trigger {v.trigger or '-'}, attempts {v.attempts}, not started"
        for v in RewardModelVersion.objects.filter(project=project).order_by("version")
    ]
    loop = ProjectLoop.objects.filter(project=project).first()
    if loop is not None:
        rows.append(
            f"  loop row: pending={loop.retrain_pending} ({loop.pending_reason or '-'}), enqueued_at="
            f"{loop.enqueued_at and f'{loop.enqueued_at:%H:%M:%S}'}, lock_owner={loop.lock_owner or '-'}, "
            f"enqueue_error={loop.enqueue_error[:80] or '-'}, coalesced={loop.coalesced_triggers}"
        )
    return "\n".join(rows)


# --- the report ----------------------------------------------------------------


def percentiles(values: list[float]) -> str:
    if not values:
        return "       -       -       -       -"
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return f"{p50:8.1f}{p95:8.1f}{p99:8.1f}{max(values):8.1f}"


def report(args, env_info: str, stats, faults, load, elapsed, checks, version, t0, fault_end_s) -> bool:
    print(env_info)
    total = sum(len(v) for v in stats.latency.values())
    print(
        f"requests: {total} answered in {elapsed:.1f} s = {total / elapsed:.1f} requests/s "
        f"(load average 1 min: before {load[0]:.1f}, max during {max(load):.1f})"
    )
    print(f"{'':10}{'n':>7}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}  ms  (every answered attempt)")
    for kind, rows in stats.latency.items():
        print(f"{kind:10}{len(rows):7d}{percentiles([ms for _, ms in rows])}")
    for kind, rows in stats.latency.items():
        after = [ms for t, ms in rows if t - t0 > fault_end_s]
        print(f"{kind + ' *':10}{len(after):7d}{percentiles(after)}")
    print(f"  * after the last fault (t > {fault_end_s:.0f} s)")
    statuses = ", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(stats.statuses.items()))
    print(f"statuses: {statuses}")
    errors = Counter((kind, what) for _, kind, what in stats.errors)
    late = Counter((kind, what) for t, kind, what in stats.errors if t - t0 > fault_end_s + 5)
    print(
        "errors (each failed attempt; retried): "
        + (", ".join(f"{k} {w}: {n}" for (k, w), n in sorted(errors.items())) or "none")
    )
    print(
        "errors later than 5 s after the last fault: "
        + (", ".join(f"{k} {w}: {n}" for (k, w), n in sorted(late.items())) or "none")
    )
    print(f"409 lease gone: {stats.conflicts} (walk-aways answered after their lease: {stats.walkaways})")
    print(
        f"requests given up after {RETRIES} attempts: "
        + (", ".join(f"{k} {n}" for k, n in stats.gave_up.items()) or "none")
    )
    print("faults:")
    for at, words in faults.events:
        print(f"  t={at:5.1f} s  {words}")
    print("checks against the database:")
    ok = {
        "lost": checks["lost"] == 0,
        "wrong": checks["wrong"] == 0,
        "dup": checks["duplicates"] == 0,
        "double": checks["over_held"] == 0 and checks["over_judged"] == 0,
        "count": checks["miscounted"] == 0,
        "version": version is not None,
    }
    mark = {True: "ok", False: "FAIL"}
    print(
        f"  201s received {checks['acked_201']} (+{checks['acked_200']} 200s for a retried submit); "
        f"stored judgments {checks['judgments']}"
    )
    print(f"  lost (a 201 with no stored judgment): {checks['lost']}  {mark[ok['lost']]}")
    print(f"  stored for another rater or comparison than acknowledged: {checks['wrong']}  {mark[ok['wrong']]}")
    print(f"  duplicated (two judgments of one comparison by one rater): {checks['duplicates']}  {mark[ok['dup']]}")
    print(
        f"  double assignments (held or judged beyond the overlap {args.overlap}): {checks['over_held']} "
        f"held, {checks['over_judged']} judged (most at once: {checks['worst_held']})  {mark[ok['double']]}"
    )
    print(f"  judgments_count different from the judgments: {checks['miscounted']}  {mark[ok['count']]}")
    if version is not None:
        print(
            f"  version trained after the faults: v{version.version} ({version.status}, trigger {version.trigger}, "
            f"started {version.started_at:%H:%M:%S}, finished {version.finished_at:%H:%M:%S})  ok"
        )
    else:
        print(f"  version trained after the faults: none within {args.settle:.0f} s of the raters stopping  FAIL")
    p99 = {k: np.percentile([ms for _, ms in v], 99) if v else float("inf") for k, v in stats.latency.items()}
    print(
        f"goals: p99 next {p99['next']:.1f} ms < 100 {mark[p99['next'] < 100]}; p99 submit {p99['submit']:.1f} ms"
        f" < 100 {mark[p99['submit'] < 100]}"
    )
    return all(ok.values())


# --- main ----------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    rng = random.Random(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="load_faults_"))
    db_name = f"bench_faults_{secrets.token_hex(4)}"
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    if not redis_is_up():
        sys.exit("Redis on 127.0.0.1:6379 does not answer")
    if redis_cli("-n", str(args.redis_db), "DBSIZE") != "0":
        sys.exit(f"Redis database {args.redis_db} is not empty: someone else uses it; pick another with --redis-db")
    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db_name}"')
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback; TLS is the proxy's in production
        "DATABASE_URL": f"{args.pg}/{db_name}",
        "REDIS_URL": redis_url,
        "VAR_DIR": str(scratch / "var"),
        "MODEL_ROOT": str(scratch / "models"),
        "HOST": "127.0.0.1",
        "PORT": str(args.port),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "LOG_LEVEL": "WARNING",
        # The trainer's single-flight lease: short, so a killed worker's slot frees within the run.
        "REWARD_MODEL_LOCK_TTL_SECONDS": "15",
        "REWARD_MODEL_BACKBONE": build_tiny_backbone(scratch / "tiny-bert"),
        "REWARD_MODEL_TRAINING": json.dumps(
            {"max_length": 64, "batch_size": 8, "epochs": args.epochs, "learning_rate": 1e-3, "device": "cpu"}
        ),
    }
    if args.web_workers:
        env["WEB_CONCURRENCY"] = str(args.web_workers)
    os.environ.update(env)
    procs = Processes(env, scratch)
    worker_env = {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    celery = [str(BIN / "celery"), "-A", "config", "worker", "--loglevel", "INFO"]

    # As `make run` starts them.
    gpu = ["--queues", "gpu", "--concurrency", "1", "--prefetch-multiplier", "1"]
    default = ["--queues", "default", "--concurrency", "1", "--beat", "--schedule", str(scratch / "celerybeat")]

    def start_gpu_worker(name: str) -> None:
        procs.start(name, [*celery, *gpu, "--hostname", f"{name}@bench-faults"], nice=args.worker_nice, env=worker_env)

    ok = False
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        project, n_comparisons, tokens = build_project(args, rng)
        connection.close()
        before = os.getloadavg()[0]
        procs.start("web", ["make", "--no-print-directory", "serve"])
        start_gpu_worker("gpu-1")
        procs.start(
            "default", [*celery, *default, "--hostname", "default@bench-faults"], nice=args.worker_nice, env=worker_env
        )
        base = f"http://127.0.0.1:{args.port}"
        asyncio.run(wait_until_serving(base, tokens[0]))
        wait_until_ready(scratch / "gpu-1.log", scratch / "default.log")
        workers = gunicorn_workers(procs.procs["web"].pid)
        print(
            f"{args.raters} raters for {args.seconds:.0f} s against {base} ({len(workers)} gunicorn workers) ...",
            flush=True,
        )
        stats, faults, load, t0, elapsed = asyncio.run(run_raters(args, tokens, project.pk, procs, start_gpu_worker))
        load.insert(0, before)
        fault_end_s = faults.events[-1][0] if faults.events else 0.0
        since = faults.last_at or datetime.now(UTC)
        version, waited = None, time.monotonic()
        while version is None and time.monotonic() - waited < args.settle:
            version = version_after(project, since)
            connection.close()
            if version is None:
                time.sleep(2)
        checks = check_database(project, stats, faults)
        info = (
            f"load with faults: {args.raters} raters, think {args.think[0]:g}-{args.think[1]:g} s, "
            f"{args.seconds:.0f} s; `make serve` (DJANGO_ENV=production, {len(workers)} gunicorn workers) on "
            f"PostgreSQL {connection.pg_version // 10000}, Redis db {args.redis_db}; "
            f"{n_comparisons} comparisons, overlap {args.overlap}, lease {args.lease_seconds} s; "
            f"{os.cpu_count()} cores"
        )
        ok = report(args, info, stats, faults, load, elapsed, checks, version, t0, fault_end_s)
        logged = {name: logged_errors(scratch / f"{name}.log") for name in procs.procs}
        print(
            "error lines in the processes' logs (the faults' own included): "
            + ", ".join(f"{name} {n}" for name, n in logged.items())
        )
        print("versions and the loop row at the end:\n" + loop_state(project))
    finally:
        procs.stop_all()
        if not redis_is_up():
            subprocess.run(REDIS_START, check=False)
        redis_cli("-n", str(args.redis_db), "FLUSHDB")
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django never started
            pass
        if args.keep:
            print(f"kept: database {db_name}, logs and models under {scratch}")
        else:
            with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
