"""config.sqlite: Django's SQLite backend with write transactions queued on a file lock.

These tests make their own SQLite connections (a file under tmp_path), whatever
database the suite runs on, and drive them through the wrapper's own transaction
calls, the ones transaction.atomic makes on SQLite.
"""

import fcntl
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import OperationalError
from django.db.utils import ConnectionHandler

ROOT = Path(__file__).resolve().parent.parent


def _wrapper(path: Path, timeout: float = 5):
    handler = ConnectionHandler(
        {
            "default": {
                "ENGINE": "config.sqlite",
                "NAME": str(path),
                "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": timeout},
            }
        }
    )
    return handler["default"]


@contextmanager
def _transaction(wrapper):
    """What transaction.atomic does on SQLite: BEGIN (IMMEDIATE) under autocommit, then commit or roll back."""
    wrapper.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
    try:
        yield
    except BaseException:
        wrapper.rollback()
        raise
    else:
        wrapper.commit()
    finally:
        wrapper.set_autocommit(True)


def _lock_is_free(path: Path) -> bool:
    fd = os.open(f"{path}-writelock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing the description releases a lock it took
    return True


@pytest.fixture(autouse=True)
def own_connections(django_db_blocker):
    # These connections are not the suite's database; pytest-django's guard is for that one.
    with django_db_blocker.unblock():
        yield


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "db.sqlite3"
    setup = _wrapper(path)
    with setup.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("CREATE TABLE t (n INTEGER)")
    setup.close()
    return path


def test_a_write_transaction_holds_the_lock_until_it_commits(database):
    wrapper = _wrapper(database)
    with _transaction(wrapper):
        with wrapper.cursor() as cursor:
            cursor.execute("INSERT INTO t VALUES (1)")
        assert not _lock_is_free(database)
    assert _lock_is_free(database)
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM t")
        assert cursor.fetchone() == (1,)
    wrapper.close()


def test_a_rolled_back_or_closed_transaction_lets_the_lock_go(database):
    wrapper = _wrapper(database)
    with pytest.raises(RuntimeError), _transaction(wrapper):
        with wrapper.cursor() as cursor:
            cursor.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("the request failed")
    assert _lock_is_free(database)
    wrapper.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
    assert not _lock_is_free(database)
    wrapper.close()  # mid-transaction: a worker's connection closed after an error
    assert _lock_is_free(database)
    with _wrapper(database).cursor() as cursor:
        cursor.execute("SELECT count(*) FROM t")
        assert cursor.fetchone() == (0,)


def test_a_second_writer_waits_for_the_first_and_then_goes_on(database):
    first, order = _wrapper(database), []
    inside = threading.Event()

    def second_writer():
        second = _wrapper(database)
        inside.wait()
        with _transaction(second):
            order.append("second began")
            with second.cursor() as cursor:
                cursor.execute("INSERT INTO t VALUES (2)")
        second.close()

    thread = threading.Thread(target=second_writer)
    thread.start()
    with _transaction(first):
        with first.cursor() as cursor:
            cursor.execute("INSERT INTO t VALUES (1)")
        inside.set()
        # The second writer is blocked on the lock: it can only begin after this commit.
        thread.join(timeout=0.3)
        assert thread.is_alive()
        order.append("first committing")
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert order == ["first committing", "second began"]
    with first.cursor() as cursor:
        cursor.execute("SELECT n FROM t ORDER BY rowid")
        assert cursor.fetchall() == [(1,), (2,)]
    first.close()


def test_a_writer_that_waits_past_the_timeout_fails_as_sqlite_would(database):
    holder = os.open(f"{database}-writelock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        wrapper = _wrapper(database, timeout=0.2)
        with pytest.raises(OperationalError, match="database is locked"), _transaction(wrapper):
            pass
        assert wrapper.write_lock is not None and not wrapper.write_lock.held
    finally:
        os.close(holder)
    with _transaction(wrapper):  # and works once the lock is free
        pass
    wrapper.close()


def test_an_in_memory_database_needs_no_lock():
    wrapper = _wrapper(":memory:")
    with _transaction(wrapper):
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
    assert wrapper.write_lock is None
    wrapper.close()


def test_settings_choose_this_backend_for_a_sqlite_url(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}", "VAR_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    code = "from config import settings; print(settings.DATABASES['default']['ENGINE'])"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "config.sqlite"
