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
- The child touches no database: it only parses and sends, and leaves with os._exit
  (multiprocessing's), so it never closes the parent's connections or runs its exit
  handlers. The parent ends the child whatever happens (SIGKILL if still running, then join).

Small files (one chunk) never fork. Where fork is not available (or
IMPORT_PARSE_PROCESS=0), everything runs in this process, as before.
"""

import gc
import multiprocessing
import os
import pickle
import signal
from collections.abc import Iterator
from contextlib import contextmanager

_CHUNK, _END, _ERROR = "chunk", "end", "error"


def available() -> bool:
    return os.environ.get("IMPORT_PARSE_PROCESS", "1") != "0" and "fork" in multiprocessing.get_all_start_methods()


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
        self.child = self.pipe = None
        self.first = True
        self.result = None

    def __iter__(self):
        return self

    def __next__(self):
        if self.first:
            # The first item in this process: a file of one chunk needs no child.
            self.first = False
            try:
                item = next(self.items)
            except StopIteration:
                self.result = self.tail() if self.tail else None
                raise
            if self.source_fd is not None and self.more_may_follow(item) and available():
                self._fork()
            return item
        if self.pipe is None:
            try:
                return next(self.items)
            except StopIteration:
                self.result = self.tail() if self.tail else None
                raise
        return self._receive()

    def _fork(self):
        context = multiprocessing.get_context("fork")
        receiving, sending = context.Pipe(duplex=False)
        self.child = context.Process(
            target=_produce, args=(self.items, self.tail, sending, self.source_fd), name="import-parser", daemon=True
        )
        self.child.start()
        sending.close()  # the child's end; EOF on ours if the child dies
        self.pipe = receiving
        # This process never resumes its copy of the iterator: the child owns the rest of the file.
        self.items = iter(())

    def _receive(self):
        try:
            kind, payload = _loads(self.pipe.recv_bytes())
        except EOFError:
            code = self.child.exitcode if self.child is not None else None
            raise RuntimeError(f"The import's parser process ended without finishing (exit code {code}).") from None
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

    def stop(self):
        self._close_pipe()
        if self.child is not None:
            if self.child.is_alive():
                self.child.kill()  # it holds nothing to clean up: only parsed lines
            self.child.join()
            self.child.close()
            self.child = None


def _produce(items: Iterator, tail, sending, source_fd: int) -> None:
    """The child: parse the rest and send it, then the tail's result or the error."""
    # The handlers this process inherited are its parent's (gunicorn's, Celery's): the parent ends
    # this child with SIGKILL anyway, and a Ctrl-C in a terminal is the parent's to handle.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _close_inherited(keep={0, 1, 2, source_fd, sending.fileno()})
    gc.disable()  # see _loads; this process lives for one file, and what it makes is freed by refcount
    try:
        for item in items:
            sending.send_bytes(pickle.dumps((_CHUNK, item), protocol=pickle.HIGHEST_PROTOCOL))
        message = (_END, tail() if tail else None)
    except BaseException as error:  # handed to the parent, which raises it
        message = (_ERROR, _picklable(error))
    try:
        sending.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    except (BrokenPipeError, OSError):
        pass  # the parent has stopped listening (its own error): nothing to tell
    sending.close()


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
