"""Test settings: PostgreSQL when it is reachable, SQLite otherwise.

DATABASE_URL wins when set. Otherwise the suite probes the local PostgreSQL
(127.0.0.1:5432) that CI has, so the concurrency tests run on a database
that really locks rows; on a machine without it, the suite runs on SQLite.
"""

import os
import socket


def _postgres_reachable(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


if not os.environ.get("DATABASE_URL") and os.environ.get("TEST_DB", "auto") != "sqlite":
    if _postgres_reachable():
        os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/labeling"

os.environ.setdefault("VAR_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), "var", "test"))

from config.settings import *  # noqa: E402,F403
from config.settings import DATABASES  # noqa: E402

# Fast hashing in tests; Argon2 stays first in production settings.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}  # noqa: F405
# Throttle counts in the test database: shared by the threads of a test (as
# the real caches are by processes) and rolled back with it, so no count
# leaks from one test into the next. Django creates the table with the test
# database. tests/test_login_protection.py checks the real choice (_caches).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache"}}
if DATABASES["default"]["ENGINE"] != "config.sqlite":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # The production pool (settings.py), sized for the concurrency tests' threads (32 raters at once),
    # with a patient timeout: opening 33 connections on a busy machine can take seconds.
    DATABASES["default"]["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 40, "timeout": 60}
    # TEST_DB_SUFFIX lets several suites run at once on one server.
    DATABASES["default"]["TEST"] = {"NAME": "test_labeling" + os.environ.get("TEST_DB_SUFFIX", "")}
else:
    # A file, not :memory:, so that threads (live server, concurrency tests)
    # get their own connections and real SQLite locking.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(os.environ["VAR_DIR"], "test" + os.environ.get("TEST_DB_SUFFIX", "") + ".sqlite3")
    }
