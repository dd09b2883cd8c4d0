"""Login protection (django-axes) as this project wires it: who the client
is, what a locked-out client is told, and the backend that checks lockouts.

Failures are counted per (username, address) pair in the database (axes'
database handler; settings "Login protection"): a guesser is stopped after
LOGIN_FAILURE_LIMIT failures for LOGIN_COOLOFF_MINUTES, the same for a name
that does not exist as for one that does, while the person whose name it is
can still sign in from their own address.
"""

import ipaddress
import math

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from rest_framework.settings import api_settings


def client_address(request) -> str | None:
    """The client's IP address, by the rule DRF's throttles use (NUM_PROXIES).

    With NUM_PROXIES = 0 (the default) X-Forwarded-For is ignored: anyone
    can write it. Behind N proxies of our own, each appends the address it
    saw, so the N-th from the right is the client's; what lies left of it
    came from the client and is not believed. An address that does not parse
    falls back to REMOTE_ADDR (axes stores it in an IP-address column).
    """
    remote = request.META.get("REMOTE_ADDR")
    proxies = api_settings.NUM_PROXIES or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    candidates = [remote]
    if proxies > 0 and forwarded.strip():
        hops = [hop.strip() for hop in forwarded.split(",")]
        candidates.insert(0, hops[-min(proxies, len(hops))])
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


def lockout_message() -> str:
    minutes = math.ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    return (
        f"Too many failed sign-in attempts for this username from your address. "
        f"Sign-in is paused for {minutes} minutes after the last failed attempt."
    )


def lockout_headers() -> dict[str, str]:
    return {"Retry-After": str(int(settings.AXES_COOLOFF_TIME.total_seconds()))}


def lockout_response(request, original_response=None, credentials=None):
    """What axes answers a locked-out client (AXES_LOCKOUT_CALLABLE): JSON under
    /api/, the sign-in page's look elsewhere. Never says whether the username exists."""
    status = settings.AXES_HTTP_RESPONSE_CODE
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": lockout_message()}, status=status, headers=lockout_headers())
    response = render(request, "registration/locked_out.html", {"message": lockout_message()}, status=status)
    for name, value in lockout_headers().items():
        response[name] = value
    return response


class LoginLockoutBackend(AxesStandaloneBackend):
    """axes' check for every authenticate() call that passes its request: the
    sign-in page, the admin's, and the token endpoint all do. A call without
    a request (Client.login in tests, a shell) has no client to count or lock
    out, and axes would raise; it passes on to the next backend instead."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
