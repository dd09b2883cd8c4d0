"""Django's SQLite backend, with its write transactions queued on an OS file lock.

ENGINE "config.sqlite" (settings.py sets it for a sqlite:// DATABASE_URL). Everything is
Django's sqlite3 backend (vendor "sqlite") but for one thing: before `BEGIN IMMEDIATE`
a connection takes an exclusive flock(2) on `<database>-writelock`, and lets it go when the
transaction commits or rolls back (or the connection closes).

Why: with transaction_mode IMMEDIATE every transaction takes SQLite's write lock at
BEGIN, and a connection that finds it taken waits in SQLite's busy handler, which
polls on a fixed schedule of sleeps (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms...).
A waiter that has backed off to 25 ms sleeps on well after the lock came free, so
under contention the next pair's tail was the busy handler's sleeps, not work
(#13: p99 of `next` at 16 raters). Waiting on the file lock instead, a waiter tries
again within WAIT_STEP of the lock coming free, and SQLite's own lock is then free
at BEGIN (the busy handler stays as the backstop, for writers that come through
no transaction of this backend: the sqlite3 shell, a single autocommit statement).

The wait keeps SQLite's bound: the OPTIONS timeout (settings: 30 s), after which
the transaction fails with OperationalError("database is locked"), as SQLite's
own wait would. In-memory databases have no file to lock and skip all this.
Each connection opens its own lock file description, so the lock also queues
threads of one process (flock locks belong to the open file, not the process).
"""

import fcntl
import os
import time

from django.db import OperationalError
from django.db.backends.sqlite3 import base

WAIT_STEP = 0.001  # seconds between tries while another connection holds the lock


class WriteLock:
    """An exclusive flock on path, taken with a deadline."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.held = False

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OperationalError("database is locked") from None
                time.sleep(WAIT_STEP)
                continue
            self.held = True
            return

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        os.close(self.fd)


class DatabaseWrapper(base.DatabaseWrapper):
    write_lock: WriteLock | None = None

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        self._close_write_lock()
        database = conn_params["database"]
        if not self.creation.is_in_memory_db(database):
            self.write_lock = WriteLock(f"{database}-writelock")
            self._write_lock_timeout = float(conn_params.get("timeout", 5))
        return connection

    def _start_transaction_under_autocommit(self):
        if self.write_lock is None or self.transaction_mode != "IMMEDIATE":
            return super()._start_transaction_under_autocommit()
        self.write_lock.acquire(self._write_lock_timeout)
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self.write_lock.release()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._release_write_lock()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release_write_lock()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._close_write_lock()

    def _release_write_lock(self):
        if self.write_lock is not None:
            self.write_lock.release()

    def _close_write_lock(self):
        if self.write_lock is not None:
            self.write_lock.close()
            self.write_lock = None
