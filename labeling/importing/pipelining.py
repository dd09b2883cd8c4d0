"""Parse the rest of a file in a child process while this one writes: parse_ahead.

An import is two CPU-bound halves: parsing (JSON, checks, hashes: formats.py) and
writing (matching, the bulk writer, and on SQLite the database engine itself). In
one process they take turns. A parse thread does not help, as both halves are
Python under one GIL (measured: 13.8 -> 12.9 s on PostgreSQL, and slower on
SQLite, where every row's sqlite3_step gives the GIL up and waits to get it back).
So once the first chunk shows the file is bigger than one chunk, the process
forks: the child continues the very same chunk iterator (its generator, the
Parser's state and the open file are copied by the fork, at the position the
parent had reached) and hands each parsed chunk back over a pipe, pickled as plain
tuples (ParsedFile.__reduce__), while the parent writes the previous one.
benchmarks/import_pairs.py, 100,000 pairs on 2 cores: SQLite 10.2 -> 4.5 s,
PostgreSQL 13.7 -> 7.6 s (there the server's own 5.6 s of CPU is what is left).

What stays as it was:
- Order and errors. Chunks arrive in file order. A malformed line (ImportFileError,
  with its line number) or any other error the parser raises reaches the parent at
  that chunk, after every chunk before it, exactly as in one process; the parent's
  transaction then rolls back.
- Memory: the pipe holds about one chunk (a send blocks until the parent reads), so
  there are at most three in memory: the one being written, one in the pipe, and the
  one being parsed.
- The child touches no database: it only parses and sends, and leaves with os._exit,
  so it never closes the parent's connections or runs its exit handlers. The parent
  ends the child whatever happens (SIGKILL if still running) and reaps it.

Small files (one chunk) never fork. Where fork is not available (or
IMPORT_PARSE_PROCESS=0), everything runs in this process, as before.
"""

import gc
import logging
import os
import pickle
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager

_CHUNK, _END, _ERROR = "chunk", "end", "error"
log = logging.getLogger(__name__)


def available() -> bool:
    return os.environ.get("IMPORT_PARSE_PROCESS", "1") != "0" and hasattr(os, "fork")


@contextmanager
def parse_ahead(items: Iterator, *, source_fd: int | None, more_may_follow, tail=None):
    """Yield an iterator over items; after the first, when more_may_follow(first), the rest are
    made in a forked child. source_fd is the file descriptor items read from: the one the child
    keeps open (with its pipe and the standard streams; it closes every other it inherited, so
    that it holds no copy of a socket, or of the writing end of a pipe this process reads from).
    None (items read no file of their own: a list, a generator) parses everything here.

    items must not touch the database (the child shares the parent's connections' sockets).
    Each item is sent pickled. tail(), when given, is called where the last item was made
    (the child, or here) once items are exhausted; its (picklable) result is the `result`
    attribute of the iterator yielded here, once that is exhausted.
    """
    reader = _Reader(items, tail, more_may_follow, source_fd)
    try:
        yield reader
    finally:
        reader.stop()


class _Reader:
    def __init__(self, items: Iterator, tail, more_may_follow, source_fd):
        self.items, self.tail, self.more_may_follow, self.source_fd = items, tail, more_may_follow, source_fd
        self.pid = None  # the child's, once forked
        self.pipe = None  # our end of its pipe
        self.first = True
        self.result = None

    def __iter__(self):
        return self

    def __next__(self):
        if self.first:
            # The first item in this process: a file of one chunk needs no child.
            self.first = False
            item = self._next_here()
            if self.source_fd is not None and self.more_may_follow(item) and available():
                self._fork()
            return item
        return self._next_here() if self.pipe is None else self._receive()

    def _next_here(self):
        try:
            return next(self.items)
        except StopIteration:
            self.result = self.tail() if self.tail else None
            raise

    def _fork(self):
        # os.fork, not multiprocessing.Process: Celery's pool processes are daemonic to
        # multiprocessing, which refuses to start children from one.
        reading, writing = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.close(reading)
                _produce(self.items, self.tail, writing, self.source_fd)
                code = 0
            finally:
                os._exit(code)
        os.close(writing)  # the child's end: EOF on ours if the child dies
        self.pid, self.pipe = pid, os.fdopen(reading, "rb")
        log.info("import: the rest of the file is parsed ahead in process %s", pid)
        # This process never resumes its copy of the iterator: the child owns the rest of the file.
        self.items = iter(())

    def _receive(self):
        header = self.pipe.read(_HEADER.size)
        body = self.pipe.read(_HEADER.unpack(header)[0]) if len(header) == _HEADER.size else b""
        if not body:
            code = self._reap()
            raise RuntimeError(f"The import's parser process ended without finishing (exit code {code}).")
        kind, payload = _loads(body)
        if kind == _CHUNK:
            return payload
        self._close_pipe()
        if kind == _END:
            self.result = payload
            raise StopIteration
        raise payload  # _ERROR: what the parser raised, in the child

    def _close_pipe(self):
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None

    def _reap(self, kill: bool = False) -> int | None:
        """Wait for the child (killing it first if asked) and return its exit code."""
        if self.pid is None:
            return None
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)  # it holds nothing to clean up: only parsed lines
            except ProcessLookupError:
                pass
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        return os.waitstatus_to_exitcode(status)

    def stop(self):
        self._close_pipe()
        if self.pid is not None:
            finished, _ = os.waitpid(self.pid, os.WNOHANG)
            if finished:
                self.pid = None
            else:
                self._reap(kill=True)


_HEADER = struct.Struct("!Q")  # each message: its length, then the pickle


def _produce(items: Iterator, tail, writing: int, source_fd: int) -> None:
    """The child: parse the rest and send it, then the tail's result or the error."""
    # The handlers this process inherited are its parent's (gunicorn's, Celery's): the parent ends
    # this child with SIGKILL anyway, and a Ctrl-C in a terminal is the parent's to handle.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _close_inherited(keep={0, 1, 2, source_fd, writing})
    gc.disable()  # see cyclic_gc_paused; this process lives for one file, and refcounting frees its objects
    with os.fdopen(writing, "wb") as pipe:

        def send(message) -> None:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            pipe.write(_HEADER.pack(len(data)))
            pipe.write(data)
            pipe.flush()

        try:
            for item in items:
                send((_CHUNK, item))
            message = (_END, tail() if tail else None)
        except BaseException as error:  # handed to the parent, which raises it
            message = (_ERROR, _picklable(error))
        try:
            send(message)
        except OSError:
            pass  # the parent has stopped listening (its own error): nothing to tell


@contextmanager
def cyclic_gc_paused():
    """Python's cyclic garbage collector off for a while (and back as it was).

    A chunk is a few hundred thousand new objects (rows, tuples, dicts), none of them in a
    reference cycle, and making that many sets the collector off over and over, each time
    walking every object of the process. Measured on 100,000 pairs: loading the chunks took
    a fifth of the time without it, and an import on SQLite went from 5.7 to 4.7 s. What the
    import frees is freed by reference counting as before; a cycle made meanwhile (in this or
    another thread) waits until the collector is back. Not reentrant across threads: two
    imports at once may turn it back on early, which costs only speed.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _loads(data: bytes):
    with cyclic_gc_paused():
        return pickle.loads(data)


def _close_inherited(keep: set[int]) -> None:
    # The child opens no file of its own, so no descriptor number is reused behind an object that
    # still names it.
    start = 0
    for fd in sorted(keep):
        if fd > start:
            os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, os.sysconf("SC_OPEN_MAX"))


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error.with_traceback(None)
    except Exception:
        return RuntimeError(f"The import's parser failed: {error!r}")
