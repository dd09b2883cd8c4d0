"""API rate limits counted in fixed windows: one counter per client and period in the shared cache.

DRF's own throttles keep, per client, the list of every request's time in the
last period (6,000 entries at 6000/hour), and read, trim, pickle and write
that list back on every request: on the file cache that is a compressed file
rewritten per request, on Redis the whole list over the network both ways.
Here a request costs one increment of a small counter (Redis: INCR, atomic
across processes). The price: a fixed window lets a client that used its
whole allowance at the end of one period use it again at the start of the
next (at most twice the rate over any one period), which a brake on runaway
scripts can live with. Password guessing has its own limit per account and
address on top (django-axes, config/security.py).
"""

from rest_framework import throttling


class FixedWindowThrottle(throttling.SimpleRateThrottle):
    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        now = self.timer()
        window = int(now // self.duration)
        self.retry_after = (window + 1) * self.duration - now
        key = f"{self.key}:{window}"
        # add() is atomic: the first request of a window creates the counter, every later one increments it.
        count = 1 if self.cache.add(key, 1, self.duration + 1) else self._increment(key)
        return count <= self.num_requests

    def _increment(self, key) -> int:
        try:
            return self.cache.incr(key)
        except ValueError:  # expired between add() and incr(): this request opens the window again
            self.cache.set(key, 1, self.duration + 1)
            return 1

    def wait(self):
        return self.retry_after


class UserRateThrottle(FixedWindowThrottle, throttling.UserRateThrottle):
    """DRF's per-user rate (API_USER_RATE; anonymous callers by address), in fixed windows."""
