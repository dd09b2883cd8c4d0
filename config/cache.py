"""The shared cache (DRF's throttle counts) on Redis, failing open.

Throttles are a brake, not a lock: while Redis cannot be reached the API
keeps answering unthrottled instead of answering 500 to every request, and
stops asking Redis for a few seconds so that a silent server costs each
request nothing. Password guessing stays bounded meanwhile: login lockouts
live in the database (axes), not here.
"""

import logging
import threading
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# After a failure, how long every process thread skips Redis.
PAUSE_SECONDS = 30.0


class FailOpenRedisCache(RedisCache):
    _paused_until = 0.0  # shared by the instances of all threads (Django keeps one per thread)
    _lock = threading.Lock()

    def get(self, key, default=None, version=None):
        return self._try(lambda: super(FailOpenRedisCache, self).get(key, default, version), default)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        self._try(lambda: super(FailOpenRedisCache, self).set(key, value, timeout, version), None)

    # The throttles' counters (labeling.api.throttling): add() says "created" and incr() counts 0 while
    # Redis is away, so every request is let through.
    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._try(lambda: super(FailOpenRedisCache, self).add(key, value, timeout, version), True)

    def incr(self, key, delta=1, version=None):
        return self._try(lambda: super(FailOpenRedisCache, self).incr(key, delta, version), 0)

    def _try(self, call, fallback):
        if time.monotonic() < FailOpenRedisCache._paused_until:
            return fallback
        try:
            return call()
        except RedisError as error:
            with FailOpenRedisCache._lock:
                FailOpenRedisCache._paused_until = time.monotonic() + PAUSE_SECONDS
            log.warning("cache: Redis unreachable (%s); throttles are off for %ss", error, PAUSE_SECONDS)
            return fallback
