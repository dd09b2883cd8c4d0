"""Celery: the tasks workers run, and the one place the rest of the app hands them work.

This is the only module of the app that touches Celery. Tasks are thin: they
take ids, call one function of the loop, own their retries, and publish what
the loop says is due. Their names are public (beat entries and routes refer to
them): `rewardmodel.tasks.retrain` and `.refresh` run on queue `gpu` (one at a
time per worker, the model in memory); `.refit_heads` (a linear fit on cached
embeddings, seconds on a CPU), `.reconcile` and
`.retrain_projects_with_new_judgments` on queue `default`.

Publishing (`publish_retrain`, `publish_refresh`, `publish_refit`) is one attempt (retry=False,
the broker's socket timeouts in settings), the error returned in words, and
the database keeps the truth; the periodic reconcile hands over whatever a
publish missed. A rater's request does not even make that attempt: the
retrain its judgment asked for is handed to this process's publisher thread
(`publish_retrain_soon`), so that a broker that is down or silent (a socket
timeout of seconds) holds up that thread, never a rater. So does the head
refit a judgment asks for (`publish_refit_soon`). Even the question whether a
judgment made either due (a few queries: rewardmodel.triggers) is the thread's
(`check_triggers_soon`), asked at most every TRIGGER_CHECK_INTERVAL seconds per
project: at a hundred judgments a second, one check reads them all.
"""

import logging
import os
import threading
import time
from collections.abc import Callable

from celery import shared_task
from celery.signals import worker_process_init
from django.db import OperationalError, connection

from labeling.models import Project
from rewardmodel import loop
from rewardmodel import reconcile as reconcile_module
from rewardmodel.acquisition import refresh_pairs
from rewardmodel.models import Trigger

log = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=5, acks_late=True, reject_on_worker_lost=True)
def retrain(self, project_id: int, trigger: str = Trigger.THRESHOLD) -> str:
    # The pipeline imports torch: it loads here, in the worker that runs a
    # retrain, never in a web process (which imports this module to publish).
    from rewardmodel import pipeline

    try:
        outcome = pipeline.run_retrain(project_id=project_id, owner=self.request.id or "", trigger=trigger)
    except OperationalError as error:
        # The database went away for a moment: back off and try again.
        raise self.retry(exc=error, countdown=_backoff(self.request.retries)) from error
    log.info("retrain of project %s: %s %s", project_id, outcome.status, outcome.detail)
    if outcome.pending_again:
        publish_retrain(project_id=project_id)
    return outcome.status.value


@shared_task(bind=True, max_retries=5, acks_late=True)
def refresh(self, project_id: int) -> int:
    try:
        result = refresh_pairs(project=Project.objects.get(pk=project_id))
    except OperationalError as error:
        raise self.retry(exc=error, countdown=_backoff(self.request.retries)) from error
    return result.comparisons_scored


# A refit lost with its worker is not redelivered: the next judgments ask for
# another (loop.REFIT_REQUEST_TTL), and a refit that kills its worker must not loop.
@shared_task(bind=True, max_retries=3, acks_late=True, reject_on_worker_lost=False, soft_time_limit=600)
def refit_heads(self, project_id: int) -> str:
    # Loads numpy and torch (the head fit); only in the worker that runs it.
    from rewardmodel import refit

    try:
        outcome = refit.run_head_refit(project_id=project_id)
    except OperationalError as error:
        raise self.retry(exc=error, countdown=_backoff(self.request.retries)) from error
    log.info("head refit of project %s: %s %s", project_id, outcome.status, outcome.detail)
    return outcome.status.value


@worker_process_init.connect(dispatch_uid="rewardmodel.preload_refit")
def _preload_refit(**kwargs) -> None:
    # A worker process imports the refit (and so numpy and torch) as it starts, not on its first refit:
    # that import takes seconds (tens on a busy two-core machine, benchmarks/fast_refresh.py), which a
    # refit that should re-rank the queue in about one would pay on top.
    from rewardmodel import refit  # noqa: F401


@shared_task
def reconcile() -> int:
    """Hand the broker what it missed, or what is due (every minute). Returns how many it took."""
    return _publish_retrains(reconcile_module.retrains_to_publish())


@shared_task
def retrain_projects_with_new_judgments() -> int:
    """The schedule (nightly): retrain every project that has any new judgment. Returns how many were handed over."""
    return _publish_retrains(reconcile_module.projects_with_new_judgments())


# --- publishing ----------------------------------------------------------------


def publish_retrain(*, project_id: int) -> str:
    """Hand the project's pending retrain to the broker. Returns "" or why the broker refused.

    Refused, it stays pending with the error on its loop row, and the reconcile
    publishes it once the broker is back.
    """
    error = _publish(retrain, project_id, trigger=loop.pending_reason(project_id) or Trigger.THRESHOLD)
    if error:
        log.warning("could not publish the retrain of project %s: %s (the reconcile will retry)", project_id, error)
        loop.record_enqueue_error(project_id=project_id, error=error)
    else:
        loop.record_enqueued(project_id=project_id)
    return error


def publish_refresh(*, project_id: int) -> str:
    """Hand "refresh this project's pairs" to the workers. Returns "" or why the broker refused.

    Never run in the web process: a refresh scores every candidate pair. There
    is nothing to keep pending when the broker refuses: the next activation
    refreshes the pairs anyway, and the caller says so.
    """
    error = _publish(refresh, project_id)
    if error:
        log.warning("could not publish the pair refresh of project %s: %s", project_id, error)
    return error


def publish_refit(*, project_id: int) -> str:
    """Hand "refit the heads and re-rank" to the workers. Returns "" or why the broker refused.

    Refused, the request is forgotten (loop.forget_refit_request), so the next
    judgment asks again; the next retrain re-ranks the queue anyway.
    """
    error = _publish(refit_heads, project_id)
    if error:
        log.warning("could not publish the head refit of project %s: %s", project_id, error)
        loop.forget_refit_request(project_id=project_id)
    return error


def publish_refit_soon(*, project_id: int) -> str:
    """publish_refit, by this process's publisher thread: returns at once ("" or why it was not taken)."""
    if _publisher.submit(project_id, kind=_REFIT):
        return ""
    loop.forget_refit_request(project_id=project_id)
    return "this web process's publisher is still waiting for the broker"


def publish_retrain_soon(*, project_id: int) -> str:
    """Hand the project's pending retrain to this process's publisher thread and
    return at once. Returns "" or why it could not be handed over.

    The thread publishes it within moments (publish_retrain, recording on the
    loop row what the broker said). Its queue holds PUBLISH_QUEUE_CAPACITY
    projects: when a stuck broker has filled it, the retrain stays pending
    with that reason, and the reconcile publishes it.
    """
    if _publisher.submit(project_id, kind=_RETRAIN):
        return ""
    error = "this web process's publisher is still waiting for the broker"
    loop.record_enqueue_error(project_id=project_id, error=error)
    return error


def check_triggers_soon(*, project_id: int, check: Callable[..., object]) -> bool:
    """Have this process's publisher thread call check(project_id=...) within TRIGGER_CHECK_INTERVAL
    seconds: triggers.check_triggers, which asks whether the project's judgments make a retrain or a
    head refit due, and hands over what is (passed in: triggers imports this module).

    Returns at once, without a query: the rater's request pays nothing for it. However many judgments
    arrive meanwhile, the project is checked once, after all of them committed. False when the queue is
    full (a stuck broker): the next judgment asks again, and the reconcile and the schedule stay.
    """
    return _publisher.submit(project_id, kind=_CHECK, run=check)


def wait_for_publisher(timeout: float = 10.0) -> bool:
    """Block until the publisher thread has nothing left to do (tests, shutdown); False on timeout."""
    return _publisher.wait_until_idle(timeout)


def _publish(task, project_id: int, **kwargs) -> str:
    try:
        task.apply_async(args=[project_id], kwargs=kwargs, retry=False)
    except Exception as error:  # kombu and redis raise OperationalError, OSError, ConnectionError...
        return f"{type(error).__name__}: {error}"
    return ""


def _publish_retrains(project_ids: list[int]) -> int:
    return sum(not publish_retrain(project_id=project_id) for project_id in project_ids)


def _backoff(retries: int) -> int:
    return min(600, 10 * 2**retries)


# At most this many hand-overs wait for the publisher thread; there is one entry per (kind, project)
# however many ask.
PUBLISH_QUEUE_CAPACITY = 100
_RETRAIN, _REFIT, _CHECK = "retrain", "refit", "check"
# A project's triggers are checked at most this often per process: a retrain or refit starts at most this
# much later than the judgment that made it due, and the checks cost a few queries a second, not one set
# per judgment.
TRIGGER_CHECK_INTERVAL = 0.5
_MIN_INTERVAL = {_CHECK: TRIGGER_CHECK_INTERVAL}


class _Publisher:
    """One daemon thread per process, started on first use, publishing the
    retrains and refits handed to it (and checking the triggers judgments
    ask it to check) one at a time, oldest first; a kind in _MIN_INTERVAL
    runs at most that often per project, later jobs waiting their turn.

    Losing what it holds is harmless: a retrain handed over here is already
    pending in the database, and the reconcile publishes any pending retrain
    that was never handed to the broker (a full queue, a process that died);
    a lost refit's request runs out (loop.REFIT_REQUEST_TTL) and the next
    judgment asks again.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._reset()
        # Threads do not survive a fork (gunicorn --preload): a child starts its own.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self):
        # (kind, project id) -> (when it may run (time.monotonic()), what a _CHECK job calls), each once,
        # in arrival order.
        self._waiting: dict[tuple[str, int], tuple[float, Callable[..., object] | None]] = {}
        self._last_run: dict[tuple[str, int], float] = {}
        self._busy = False
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, project_id: int, *, kind: str = _RETRAIN, run: Callable[..., object] | None = None) -> bool:
        job = (kind, project_id)
        with self._condition:
            if job not in self._waiting:
                if len(self._waiting) >= self.capacity:
                    return False
                self._waiting[job] = (self._last_run.get(job, -1e9) + _MIN_INTERVAL.get(kind, 0.0), run)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="retrain-publisher", daemon=True)
                self._thread.start()
            self._condition.notify()
        return True

    def wait_until_idle(self, timeout: float) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: not self._waiting and not self._busy, timeout)

    def _next_job(self) -> tuple[str, int, Callable[..., object] | None]:
        # With the condition held: the first job whose time has come, waiting for one if none has.
        while True:
            now = time.monotonic()
            ready = next((job for job, (at, _) in self._waiting.items() if at <= now), None)
            if ready is not None:
                _, run = self._waiting.pop(ready)
                self._last_run[ready] = now
                return (*ready, run)
            self._condition.wait(min(at for at, _ in self._waiting.values()) - now if self._waiting else None)

    def _run(self):
        while True:
            with self._condition:
                kind, project_id, run = self._next_job()
                self._busy = True
            try:
                # Publishers are looked up when they run (tests replace them); a check comes with its job.
                (run or (publish_refit if kind == _REFIT else publish_retrain))(project_id=project_id)
            except Exception:  # a database error while recording the outcome: the row stays pending
                log.exception("publishing the %s of project %s failed", kind, project_id)
            finally:
                connection.close()  # this thread's own; no connection is held between publishes
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()


_publisher = _Publisher(PUBLISH_QUEUE_CAPACITY)
