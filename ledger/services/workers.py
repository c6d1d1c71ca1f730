"""Worker processes that the event loop talks to itself, over one pair of pipes each.

:class:`concurrent.futures.ProcessPoolExecutor` hands each call through two helper threads of the server process
(one pickles and writes it, one reads and unpickles the answer and wakes the event loop). Each of them needs the
interpreter's lock, which a busy event loop hands over only at its switch interval, so a single-event POST's
signature check took 6-10 ms to come back from a worker that spent 2 ms on it, and the helper threads took
a quarter of the server process's time in a large submission. Here the event loop pickles and writes a call to the
worker's pipe (asyncio buffers what the pipe does not take at once) and reads the answer when its pipe becomes
readable, like any socket: no helper thread, no lock to wait for.

A worker reads calls in order and answers them in order. It exits when the server closes its end of the pipe or
goes away (``kill -9`` included: the kernel closes the pipe), so nothing is left behind. If a worker dies, the pool
is broken for good (as a ``ProcessPoolExecutor`` is): every call waiting on it fails with :class:`WorkersGone`,
and the caller falls back to doing the work in process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import functools
import itertools
import multiprocessing
import os
import pickle
import struct
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import IO, Any, TypeVar

T = TypeVar("T")

_LENGTH = struct.Struct("!i")
"""The frame header of :meth:`multiprocessing.connection.Connection.send_bytes`, which the workers use: a signed
32-bit big-endian length (``-1`` announces a 64-bit length, for messages of 2 GiB and more)."""
_LONG_LENGTH = struct.Struct("!Q")

PIPE_BYTES = 1 << 20
"""Capacity asked of each pipe (Linux; the default is 64 KiB): a chunk's call or answer (about 60 KB for 125
envelopes, two of them in flight) fits whole, so that a worker never waits, unable to start its next call, for the
event loop to read the rest of an answer, nor the event loop's writes for a worker to read the rest of a call."""

CALLS_PER_WORKER = 2
"""Calls a worker process has at once: the one it works on and the next, already in its pipe when it answers."""

REAP_SECONDS = 5.0
"""After a shutdown, how long a worker may take to finish its call and exit before it is killed."""


_Call = tuple[int, bytes, "asyncio.Future[Any]"]
"""A call: its number, its pickled message, the future of its answer."""


class WorkersGone(RuntimeError):
    """The worker processes are gone: one died, or the pool was shut down, before the call was answered."""


def _serve(inbox: Connection, outbox: Connection) -> None:
    """A worker's life: read ``(number, function, args)``, answer ``(number, ok, result or exception)``, until the
    server's end of the pipe closes."""
    while True:
        try:
            number, fn, args = pickle.loads(inbox.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)  # the server closed the pipe or is gone: nothing left to do for it
        try:
            answer = pickle.dumps((number, True, fn(*args)), pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # the caller gets it raised, as from a local call
            answer = pickle.dumps((number, False, _portable(error)), pickle.HIGHEST_PROTOCOL)
        try:
            outbox.send_bytes(answer)
        except OSError:
            os._exit(0)


def _widen(fd: int) -> None:
    """Give the pipe ``fd`` :data:`PIPE_BYTES` of capacity where the system allows it (else it keeps its own)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or above /proc/sys/fs/pipe-max-size
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _portable(error: Exception) -> Exception:
    """``error`` if it survives pickling, else a :class:`RuntimeError` that names it."""
    try:
        pickle.loads(pickle.dumps(error, pickle.HIGHEST_PROTOCOL))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


class _Answers(asyncio.Protocol):
    """The read end of a worker's answer pipe: splits the stream into frames and settles the calls in order."""

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer, start)
            header = _LENGTH.size
            if size == -1:
                if len(buffer) - start < header + _LONG_LENGTH.size:
                    break
                (size,) = _LONG_LENGTH.unpack_from(buffer, start + header)
                header += _LONG_LENGTH.size
            end = start + header + size
            if len(buffer) < end:
                break
            self._worker.answered(bytes(buffer[start + header : end]))
            start = end
        if start:
            del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self._worker.lost()


class _Calls(asyncio.Protocol):
    """The write end of a worker's call pipe (asyncio keeps what the pipe cannot take yet)."""

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker

    def connection_lost(self, exc: Exception | None) -> None:
        self._worker.lost()


def _frame(message: bytes) -> bytes:
    """``message`` framed as :meth:`multiprocessing.connection.Connection.recv_bytes` reads it."""
    if len(message) > 0x7FFFFFFF:
        return _LENGTH.pack(-1) + _LONG_LENGTH.pack(len(message)) + message
    return _LENGTH.pack(len(message)) + message


class _Worker:
    def __init__(self, pool: WorkerPool, process: BaseProcess, pipes: tuple[IO[bytes], IO[bytes]]) -> None:
        self.pool = pool
        self.process = process
        self.pipes = pipes
        """The server's ends (calls written, answers read)."""
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.calls: asyncio.WriteTransport | None = None
        self.answers: asyncio.ReadTransport | None = None
        self.closed = False

    def call(self, number: int, message: bytes, future: asyncio.Future[Any]) -> None:
        if self.calls is None:
            raise WorkersGone("the worker processes are gone (one exited, or the pool was shut down)")
        self.waiting[number] = future
        self.calls.write(_frame(message))

    def answered(self, frame: bytes) -> None:
        try:
            number, ok, value = pickle.loads(frame)
        except Exception as error:  # an answer that does not unpickle here: that call fails, the others go on
            number, ok, value = next(iter(self.waiting), -1), False, error
        future = self.waiting.pop(number, None)
        if future is not None and not future.done():  # else its caller went away
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self.pool.feed(self)

    def lost(self) -> None:
        """A pipe closed: the worker is gone (or the pool is shutting down)."""
        self.pool.shutdown()

    def close(self, reason: str) -> None:
        self.closed = True
        # a transport owns its pipe and closes it (not at once: the pipe's number stays taken until the event loop has
        # forgotten it); a pipe the event loop never took is closed here
        if self.calls is not None:
            self.calls.abort()  # calls not yet written are not worth finishing: their callers are told now
        else:
            self.pipes[0].close()
        if self.answers is not None:
            self.answers.close()
        else:
            self.pipes[1].close()
        self.calls = self.answers = None
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(WorkersGone(reason))


class WorkerPool:
    """``count`` spawned worker processes, each called through its own pipes by the event loop (see the module's
    docstring). Calls go to the worker with the fewest calls outstanding."""

    def __init__(self, workers: list[_Worker]) -> None:
        self._workers = workers
        self._numbers = itertools.count()
        self._backlog: collections.deque[_Call] = collections.deque()
        """Calls waiting for a worker (see :meth:`submit`), in order."""
        self._urgent: collections.deque[_Call] = collections.deque()
        """Urgent calls waiting for a worker, in order: each goes before any of :attr:`_backlog`."""
        self.broken = False
        """Shut down, or a worker died: every later call raises :class:`WorkersGone`."""

    @classmethod
    async def start(cls, count: int, warm_up: Callable[[], Any] | None = None) -> WorkerPool:
        """Spawn ``count`` workers (spawned, not forked: forking a process that runs an event loop and threads is
        not safe) and wait until each has answered one call of ``warm_up`` (so that each has imported what it
        runs before a request needs it)."""
        context = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        pool = cls([])
        try:
            for _ in range(count):
                calls_read, calls_write = os.pipe()
                answers_read, answers_write = os.pipe()
                _widen(calls_write)
                _widen(answers_write)
                # the worker's ends, closed here once it has them: then EOF on a pipe means the other side is gone
                inbox, outbox = (
                    Connection(calls_read, writable=False),
                    Connection(answers_write, readable=False),
                )
                process = context.Process(
                    target=_serve, args=(inbox, outbox), name="ledger-worker", daemon=True
                )
                pipes = (
                    os.fdopen(calls_write, "wb", buffering=0),
                    os.fdopen(answers_read, "rb", buffering=0),
                )
                try:
                    process.start()
                except BaseException:
                    for pipe in pipes:
                        pipe.close()
                    raise
                finally:
                    inbox.close()
                    outbox.close()
                worker = _Worker(pool, process, pipes)
                try:
                    worker.calls, _ = await loop.connect_write_pipe(
                        functools.partial(_Calls, worker), pipes[0]
                    )
                    worker.answers, _ = await loop.connect_read_pipe(
                        functools.partial(_Answers, worker), pipes[1]
                    )
                finally:
                    # in the pool only once connected (a shutdown meanwhile would close pipes being connected), or
                    # to be shut down with the others
                    pool._workers.append(worker)
                if pool.broken:  # a worker exited while this one was being connected
                    raise WorkersGone("a worker process exited as it started")
            if warm_up is not None:
                calls = [(worker, pool._call(warm_up, ())) for worker in pool._workers]
                for worker, call in calls:
                    worker.call(*call)
                await asyncio.gather(*(future for _, (_, _, future) in calls))
        except BaseException:
            pool.shutdown()
            raise
        return pool

    @property
    def processes(self) -> list[BaseProcess]:
        return [worker.process for worker in self._workers]

    def submit(self, fn: Callable[..., T], *args: Any, urgent: bool = False) -> asyncio.Future[T]:
        """``fn(*args)`` in a worker process; the future fails with :class:`WorkersGone` if the pool cannot answer
        it, or with what ``fn`` raised. ``fn`` and its arguments must pickle (a function by its module's name).

        The call goes to the worker with the fewest calls outstanding if it has fewer than
        :data:`CALLS_PER_WORKER`; else it waits in the pool's backlog for the first worker to answer one (an
        ``urgent`` call ahead of the others): a worker that falls behind (the system gave it less of a core) is
        not handed more, and the other takes what it would have had to do."""
        if self.broken:
            raise WorkersGone("the worker processes are shut down")
        call = self._call(fn, args)
        worker = min(self._workers, key=lambda w: len(w.waiting))
        if len(worker.waiting) < CALLS_PER_WORKER:
            worker.call(*call)
        else:
            (self._urgent if urgent else self._backlog).append(call)
        return call[2]

    def feed(self, worker: _Worker) -> None:
        """``worker`` answered a call: hand it the next waiting (urgent ones first; a call whose caller went away
        is dropped). A call that cannot be sent fails at once, never left waiting."""
        while len(worker.waiting) < CALLS_PER_WORKER and not worker.closed:
            waiting = self._urgent or self._backlog
            if not waiting:
                return
            call = waiting.popleft()
            if call[2].done():
                continue
            try:
                worker.call(*call)
            except (
                Exception
            ) as error:  # the worker's pipe is gone: the pool breaks with it (see _Worker.lost)
                worker.waiting.pop(call[0], None)
                if not call[2].done():
                    call[2].set_exception(error)
                return

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> _Call:
        """A call's number, its pickled message and the future of its answer."""
        number = next(self._numbers)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        return number, pickle.dumps((number, fn, args), pickle.HIGHEST_PROTOCOL), future

    def shutdown(self) -> None:
        """Close every worker's pipes (each exits once its current call is done; killed if it takes longer than
        :data:`REAP_SECONDS`); every call still waiting fails with :class:`WorkersGone`."""
        self.broken = True
        closing = [worker for worker in self._workers if not worker.closed]
        reason = "the worker processes are gone (one exited, or the pool was shut down)"
        for worker in closing:
            worker.close(reason)
        waiting = [*self._urgent, *self._backlog]
        self._urgent.clear()
        self._backlog.clear()
        for _, _, future in waiting:
            if not future.done():
                future.set_exception(WorkersGone(reason))
        processes = [worker.process for worker in closing]
        if processes:
            threading.Thread(target=_reap, args=(processes,), name="reap-workers", daemon=True).start()


def _reap(processes: list[BaseProcess]) -> None:
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(REAP_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
