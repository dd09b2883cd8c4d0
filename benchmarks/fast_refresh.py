"""From the N-th judgment to refreshed priorities on the demo project: the head refit against a full retrain.

Loads the demo (rewardmodel.demo.load_demo: 56 prompts, 155 responses, two
raters) into a throwaway database, starts two real Celery workers as `make
run` does (queue "gpu" trains, queue "default" runs the light tasks), and has
the demo raters answer through the real judgment path (GET .../next/, POST
/api/judgments/, the "judgment recorded" trigger, the publisher thread, the
broker). Simulated raters prefer the longer response.

1. bootstrap: 10 judgments -> the first version (a full fine-tune) is active;
2. "refit": refit_every=N, retrain_every=0. N judgments; the clock starts at
   the N-th POST's 201 and stops when the open comparisons' priorities have
   been rewritten by a refit that read that judgment;
3. "retrain" (the peer: what the loop did before): refit_every=0,
   retrain_every=N. The clock stops when the new version has finished
   (trained, scored, activated, priorities refreshed);
4. "both" (the default: both triggers on the same judgment): the two clocks
   side by side, the refit's on a CPU the retrain is using too.

    createdb -h 127.0.0.1 -U postgres bench_fast_refresh
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_fast_refresh .venv/bin/python benchmarks/fast_refresh.py

It deletes and reloads the demo project in that database. The broker is Redis
(--broker, default redis://127.0.0.1:6379/12, flushed) or, when Redis is not
reachable, the embedded filesystem broker.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _reachable(url: str) -> bool:
    host, _, port = url.split("//", 1)[1].split("/", 1)[0].partition(":")
    try:
        with socket.create_connection((host, int(port or 6379)), timeout=0.5):
            return True
    except OSError:
        return False


def configure(args, work: Path) -> dict:
    """The environment for this process and the workers (before Django starts)."""
    if not os.environ.get("DATABASE_URL"):
        sys.exit("Set DATABASE_URL to a throwaway PostgreSQL database (see the docstring).")
    broker = args.broker if _reachable(args.broker) else "filesystem://"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        CELERY_BROKER_URL=broker,
        VAR_DIR=str(work / "var"),
        MODEL_ROOT=str(work / "models"),
        ALLOWED_HOSTS="testserver,localhost",
        # This process's main thread holds a connection for the whole run; the publisher thread needs its own.
        DB_POOL_SIZE="4",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    if args.training:
        env["REWARD_MODEL_TRAINING"] = args.training
    os.environ.clear()
    os.environ.update(env)
    return env


class Worker:
    def __init__(self, env: dict, queue: str, log: Path):
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--queues", queue, "--concurrency", "1",
             "--prefetch-multiplier", "1", "--hostname", f"{queue}-{uuid.uuid4().hex[:6]}@%h", "--without-gossip",
             "--without-mingle", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait(lambda: "ready." in log.read_text(errors="replace"), 120, f"the {queue} worker to start", self)

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def wait(condition, seconds, what, *workers, poll=0.02):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    sys.exit(f"timed out after {seconds}s waiting for {what}\n" + "\n".join(w.tail() for w in workers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="judgments per batch (refit_every / retrain_every)")
    parser.add_argument("--rounds", type=int, default=3, help="batches timed per path")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--training", default="", help="REWARD_MODEL_TRAINING JSON (default: the project's own)")
    parser.add_argument("--paths", default="refit,retrain,both", help="which of refit,retrain,both to time")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs (the path is printed)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fast-refresh-"))
    env = configure(args, work)

    import django

    django.setup()
    import logging

    logging.getLogger("rewardmodel").setLevel(logging.WARNING)

    from django.core.management import call_command
    from django.db import connection
    from rest_framework.test import APIClient

    from labeling.models import Comparison, Judgment, Project
    from rewardmodel.demo import load_demo
    from rewardmodel.models import LoopSettings, RewardModelVersion
    from rewardmodel.tasks import wait_for_publisher

    call_command("migrate", verbosity=0)
    Project.objects.filter(slug="demo").delete()
    if env["CELERY_BROKER_URL"].startswith("redis://"):
        import redis

        redis.Redis.from_url(env["CELERY_BROKER_URL"]).flushdb()
    demo = load_demo(accounts=True, reset_passwords=True)
    project = demo.project
    raters = list(project.raters.order_by("username"))
    print(
        f"demo: {project.prompts.count()} prompts, {Comparison.objects.filter(project=project).count()} "
        f"comparisons, raters {[r.username for r in raters]}; database {connection.vendor}, broker "
        f"{env['CELERY_BROKER_URL'].split('//')[0]}//, {os.cpu_count()} CPUs"
    )

    clients = []
    for rater in raters:
        client = APIClient()
        client.force_authenticate(rater)
        clients.append(client)
    turn = 0

    def judge(count: int) -> Judgment:
        """count judgments through the API; returns the last one, its 201 just received."""
        nonlocal turn
        judged = None
        for _ in range(count):
            for _attempt in range(len(clients)):
                client = clients[turn % len(clients)]
                turn += 1
                task = client.get(f"/api/projects/{project.pk}/next/")
                if task.status_code == 200:
                    break
            else:
                sys.exit("no rater has anything left to judge in the demo")
            body = task.json()
            longer = "left" if len(body["left"]["text"]) >= len(body["right"]["text"]) else "right"
            response = client.post(
                "/api/judgments/",
                {"comparison": body["comparison"], "outcome": longer, "strength": 2, "time_spent_ms": 4000},
                format="json",
            )
            assert response.status_code == 201, response.content
            judged = response.json()["id"]
        return judged

    def settings(**values):
        LoopSettings.objects.update_or_create(project=project, defaults=values)

    def queue_state():
        return set(
            Comparison.objects.filter(project=project, status="open").values_list("pk", "priority", "selected_by")
        )

    def active():
        return RewardModelVersion.objects.filter(project=project, status="active").first()

    def refitted_after(judgment_id, version_pk=None):
        """Has a refit that read this judgment finished re-ranking (on the given version, else the active one)?"""
        version = RewardModelVersion.objects.filter(pk=version_pk).first() if version_pk else active()
        record = version.head_refit if version else {}
        return "seconds" in record and (record.get("last_judgment_id") or 0) >= judgment_id

    def version_finished(number):
        return RewardModelVersion.objects.filter(project=project, version=number, finished_at__isnull=False).exists()

    gpu = Worker(env, "gpu", work / "gpu.log")
    light = Worker(env, "default", work / "default.log")
    try:
        settings(retrain_every=args.n, refit_every=0)
        started = time.monotonic()
        judge(args.n)
        wait(lambda: version_finished(1), 600, "the first version", gpu, light, poll=0.2)
        v1 = RewardModelVersion.objects.get(project=project, version=1)
        print(f"bootstrap: version 1 {v1.status} after {time.monotonic() - started:.1f} s; steps {v1.durations}")

        refit_times, refit_inside = [], []
        settings(retrain_every=0, refit_every=args.n)
        for _ in range(args.rounds if "refit" in args.paths else 0):
            before = queue_state()
            judgment_id = judge(args.n)
            clock = time.monotonic()
            wait(lambda jid=judgment_id: refitted_after(jid), 120, "a refit", gpu, light)
            refit_times.append(time.monotonic() - clock)
            assert queue_state() != before, "the refit did not rewrite the priorities"
            refit_inside.append(active().head_refit)
            wait_for_publisher()

        retrain_times, retrain_steps = [], []
        settings(retrain_every=args.n, refit_every=0)
        for _ in range(args.rounds if "retrain" in args.paths else 0):
            number = RewardModelVersion.objects.filter(project=project).count() + 1
            judge(args.n)
            clock = time.monotonic()
            wait(lambda n=number: version_finished(n), 600, f"version {number}", gpu, light)
            retrain_times.append(time.monotonic() - clock)
            version = RewardModelVersion.objects.get(project=project, version=number)
            retrain_steps.append((version.status, version.durations))

        both_refit = both_retrain = None
        if "both" in args.paths:
            settings(retrain_every=args.n, refit_every=args.n)
            number = RewardModelVersion.objects.filter(project=project).count() + 1
            serving = active().pk
            judgment_id = judge(args.n)
            clock = time.monotonic()
            wait(lambda: refitted_after(judgment_id, serving), 600, "a refit", gpu, light)
            both_refit = time.monotonic() - clock
            wait(lambda: version_finished(number), 600, f"version {number}", gpu, light, poll=0.1)
            both_retrain = time.monotonic() - clock
    finally:
        light.stop()
        gpu.stop()

    def figures(values):
        if not values:
            return "not run"
        return f"median {statistics.median(values):5.2f} s  (min {min(values):.2f}, max {max(values):.2f})"

    print(f"\nN = {args.n} judgments per batch, {args.rounds} batches per path, demo project")
    print("| path | N-th judgment's 201 -> priorities rewritten |\n|---|---|")
    print(f"| head refit (queue default)  | {figures(refit_times)} |")
    print(f"| full retrain (queue gpu)    | {figures(retrain_times)} |")
    if both_refit is not None:
        print(f"| both on one judgment        | refit {both_refit:.2f} s, retrain {both_retrain:.2f} s |")
    print(f"(each time: {', '.join(f'{t:.2f}' for t in refit_times + retrain_times)} s)")
    if refit_inside:
        print("\ninside the refit task (seconds per step, last round):", json.dumps(refit_inside[-1].get("durations")))
        fields = ("seconds", "train_pairs", "held_out")
        print("refit records:", json.dumps([{k: r.get(k) for k in fields} for r in refit_inside]))
    if retrain_steps:
        print("retrain steps (last round):", retrain_steps[-1][0], json.dumps(retrain_steps[-1][1]))
    if args.keep_logs:
        print(f"worker logs: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
