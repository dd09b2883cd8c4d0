"""gunicorn's settings for `make serve` / `make run` (the bind comes from the Makefile's HOST and PORT).

WEB_CONCURRENCY worker processes (default: 2 per core plus one, at most 9),
each with WEB_THREADS threads (default 1: a sync worker). Measured on 2 cores
(README, "The hot path"): a request is CPU-bound Python, so more processes
beat more threads; threads only help when requests wait on something slow.
"""

import os

from django.core.exceptions import ImproperlyConfigured


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    if number < 1:
        raise ImproperlyConfigured(f"{name}={value!r} must be at least 1")
    return number


def default_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(2 * cores + 1, 9)


workers = _env_int("WEB_CONCURRENCY", default_workers())
threads = _env_int("WEB_THREADS", 1)
worker_class = "gthread" if threads > 1 else "sync"
# Kept-alive connections (gthread only; a sync worker closes after each response).
keepalive = 5
# A worker silent this long is killed and replaced (a request stuck in a lock wait).
timeout = 30
graceful_timeout = 10
# Errors to stderr; no access log by default (a line per request costs on the hot path).
errorlog = "-"
accesslog = os.environ.get("WEB_ACCESS_LOG") or None
# No preload: each worker imports Django after the fork, so no database
# connection or pool is ever shared across processes.
preload_app = False
