"""The worker processes the event loop drives through pipes (ledger.services.workers): answers as from a local call,
in any size and any number in flight; errors raised where they were raised; a dead worker or a shut-down pool
fails what waits on it (never leaves it waiting); and workers never outlive the server, even a killed one. Each
scenario runs on asyncio's own loop and on uvloop (what ``ledger serve`` uses), whose pipe transports differ."""

from __future__ import annotations

import asyncio
import operator
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from ledger.services.workers import CALLS_PER_WORKER, PIPE_BYTES, REAP_SECONDS, WorkerPool, WorkersGone

ROOT = Path(__file__).resolve().parent.parent

LOOPS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    return LOOPS[request.param]


class Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("this exception does not pickle")


def raise_unpicklable() -> None:
    raise Unpicklable("raised in the worker")


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    # reaped before the open, or between the open and the read
    except (FileNotFoundError, ProcessLookupError):
        return True


def pids(pool: WorkerPool) -> list[int]:
    return [process.pid for process in pool.processes if process.pid is not None]


def wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    """The pids still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(gone(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if not gone(pid)]


def test_answers_are_those_of_a_local_call_whatever_their_size(run: Any) -> None:
    async def scenario() -> list[int]:
        pool = await WorkerPool.start(2, warm_up=os.getpid)
        try:
            # 1 byte to 3 MB each way: under and over the 16 KiB that Connection frames differently and the 1 MiB a
            # widened pipe holds, so answers arrive split across many reads and calls wait in asyncio's write buffer
            sizes = [1, 16_383, 16_385, 65_537, 3_000_000]
            answers = await asyncio.gather(*(pool.submit(operator.mul, b"ab", n) for n in sizes))
            assert answers == [b"ab" * n for n in sizes]
            # 200 calls in flight at once, over both workers, each answer back to its own caller
            many = await asyncio.gather(*(pool.submit(operator.add, i, 1_000) for i in range(200)))
            assert many == [i + 1_000 for i in range(200)]
            assert len({*await asyncio.gather(*(pool.submit(os.getpid) for _ in range(20)))}) == 2
        finally:
            pool.shutdown()
        return pids(pool)

    assert wait_gone(run(scenario())) == []  # told to go, each exits (the loop has closed their pipes by now)


def test_an_error_raised_in_a_worker_is_raised_to_its_caller_only(run: Any) -> None:
    async def scenario() -> None:
        pool = await WorkerPool.start(1)
        try:
            bad, good = pool.submit(int, "twelve"), pool.submit(int, "12")
            with pytest.raises(ValueError, match="invalid literal for int"):
                await bad
            assert await good == 12
            with pytest.raises(RuntimeError, match="Unpicklable: raised in the worker"):
                await pool.submit(raise_unpicklable)
            with pytest.raises(
                TypeError, match="cannot pickle"
            ):  # an answer that does not pickle: that call fails
                await pool.submit(threading_lock)
            assert await pool.submit(operator.neg, 5) == -5
            assert not pool.broken
        finally:
            pool.shutdown()

    run(scenario())


def threading_lock() -> Any:
    import threading

    return threading.Lock()


def test_a_killed_worker_fails_what_waits_and_breaks_the_pool_for_good(run: Any) -> None:
    async def scenario() -> list[int]:
        pool = await WorkerPool.start(2)
        waiting = [pool.submit(time.sleep, 30) for _ in range(4)]  # two on each worker
        await asyncio.sleep(0.2)
        os.kill(pool.processes[0].pid or 0, signal.SIGKILL)
        for call in waiting:
            with pytest.raises(WorkersGone):
                await asyncio.wait_for(call, 10)
        assert pool.broken
        with pytest.raises(WorkersGone):
            pool.submit(operator.neg, 1)
        return pids(pool)

    # the other worker, told to go in the middle of a 30 s call, is killed after REAP_SECONDS
    assert wait_gone(run(scenario())) == []


def test_a_shutdown_fails_the_calls_still_waiting(run: Any) -> None:
    async def scenario() -> list[int]:
        pool = await WorkerPool.start(1)
        slow = pool.submit(time.sleep, 0.5)
        queued = pool.submit(operator.neg, 1)
        pool.shutdown()
        for call in (slow, queued):
            with pytest.raises(WorkersGone):
                await call
        return pids(pool)

    started = time.monotonic()
    assert wait_gone(run(scenario())) == []
    # it finished its call, found the pipe closed and left: well before it would have been killed
    assert time.monotonic() - started < REAP_SECONDS


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def pid_once_released(path: str) -> int:
    """Hold a worker until the test creates ``path`` (at most 60 s)."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def test_calls_beyond_what_the_workers_hold_go_to_the_first_worker_free(run: Any, tmp_path: Path) -> None:
    """Each worker holds CALLS_PER_WORKER calls; the rest wait in the pool for whichever worker answers first, so
    a worker kept busy (here by a call held until the others are answered) is not handed calls the other could do."""
    release = tmp_path / "release"

    async def scenario() -> None:
        pool = await WorkerPool.start(2, warm_up=os.getpid)
        try:
            held = pool.submit(pid_once_released, str(release))  # the first worker: busy until released
            await asyncio.sleep(0.1)
            quick = [pool.submit(sleep_then_pid, 0.01) for _ in range(8)]
            # all but what fitted beside the held call (CALLS_PER_WORKER - 1) are answered by the free worker
            free = CALLS_PER_WORKER - 1
            pending: set[asyncio.Future[int]] = set(quick)
            async with asyncio.timeout(30):
                while len(pending) > free:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0.2)  # and no more than those: the rest wait for the held worker
            assert sum(call.done() for call in quick) == len(quick) - free
            release.touch()
            busy = await held
            answered = await asyncio.gather(*quick)
            # handed out by fewest calls alone, the held worker would have had 3 or 4 of the 8
            assert sum(pid == busy for pid in answered) == free
        finally:
            pool.shutdown()

    run(scenario())


def test_an_urgent_call_goes_ahead_of_the_calls_waiting(run: Any) -> None:
    """Small submissions gathered from single POSTs (urgent) do not wait behind a large submission's chunks."""

    async def scenario() -> None:
        pool = await WorkerPool.start(1)
        try:
            order: list[str] = []
            held = [pool.submit(time.sleep, 0.2) for _ in range(CALLS_PER_WORKER)]  # what the worker holds
            bulk = [pool.submit(operator.neg, i) for i in range(3)]
            urgent = [pool.submit(operator.neg, 100 + i, urgent=True) for i in range(2)]
            for name, calls in (("bulk", bulk), ("urgent", urgent)):
                for number, call in enumerate(calls):
                    call.add_done_callback(lambda _, name=f"{name}{number}": order.append(name))
            await asyncio.gather(*held, *bulk, *urgent)
            assert order == ["urgent0", "urgent1", "bulk0", "bulk1", "bulk2"]  # each kind in its own order
            assert [await call for call in bulk] == [0, -1, -2]
            assert [await call for call in urgent] == [-100, -101]
        finally:
            pool.shutdown()

    run(scenario())


def test_a_call_whose_caller_went_away_is_never_sent(run: Any) -> None:
    async def scenario() -> None:
        pool = await WorkerPool.start(1)
        try:
            held = [pool.submit(time.sleep, 0.2) for _ in range(CALLS_PER_WORKER)]
            abandoned = pool.submit(os._exit, 1)  # were it ever sent, the worker would die and the pool break
            abandoned.cancel()
            kept = pool.submit(operator.neg, 7)
            assert await kept == -7
            await asyncio.gather(*held)
            assert not pool.broken
        finally:
            pool.shutdown()

    run(scenario())


def test_a_call_that_cannot_be_handed_on_fails_and_the_answers_go_on(run: Any) -> None:
    """A worker answered and the next call waiting cannot be written to it: that call fails at once (never left
    waiting), and the answer that freed the worker still reaches its caller."""

    async def scenario() -> None:
        pool = await WorkerPool.start(1)
        try:
            held = [pool.submit(operator.neg, i) for i in range(CALLS_PER_WORKER)]
            waiting = pool.submit(operator.neg, 99)
            (worker,) = pool._workers

            def broken(*_: Any) -> None:
                raise OSError("the pipe is gone")

            worker.call = broken  # type: ignore[method-assign]
            assert await asyncio.gather(*held) == [-i for i in range(CALLS_PER_WORKER)]
            with pytest.raises(OSError, match="the pipe is gone"):
                await asyncio.wait_for(waiting, 10)
        finally:
            pool.shutdown()

    run(scenario())


def test_a_shutdown_fails_the_calls_waiting_in_the_pool(run: Any) -> None:
    async def scenario() -> list[int]:
        pool = await WorkerPool.start(1)
        held = [pool.submit(time.sleep, 0.3) for _ in range(CALLS_PER_WORKER)]
        waiting = [pool.submit(operator.neg, 1), pool.submit(operator.neg, 2, urgent=True)]
        pool.shutdown()
        for call in [*held, *waiting]:
            with pytest.raises(WorkersGone):
                await call
        return pids(pool)

    assert wait_gone(run(scenario())) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipe capacity is set on Linux")
def test_the_pipes_hold_a_whole_chunk(run: Any) -> None:
    """The pipes are widened to PIPE_BYTES (a default pipe holds 64 KiB, less than two chunks' calls)."""
    import fcntl

    async def scenario() -> list[int]:
        pool = await WorkerPool.start(1)
        try:
            (worker,) = pool._workers
            return [fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ) for pipe in worker.pipes]
        finally:
            pool.shutdown()

    sizes = run(scenario())
    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) >= PIPE_BYTES:
        assert sizes == [PIPE_BYTES] * 2
    else:  # the system allows less (root may still be given PIPE_BYTES): at least a default pipe's 64 KiB
        assert all(size >= 65_536 for size in sizes)


def test_a_worker_that_dies_while_the_pool_starts_fails_the_start_and_leaves_no_process() -> None:
    """The first worker killed while the second is being connected: the start fails with :class:`WorkersGone`
    (not an assertion deep inside), and the second worker, connected to a pool already broken, is told to go as
    well. Only asyncio's loop: the test wraps the loop's ``connect_write_pipe``, which uvloop does not let it."""
    import multiprocessing

    started: list[int] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        connect = loop.connect_write_pipe
        before = {child.pid for child in multiprocessing.active_children()}  # other tests' pools, if any

        async def connect_then_lose_the_first(factory: Any, pipe: Any) -> Any:
            worker = factory.args[0]  # functools.partial(_Calls, worker)
            if started:  # the second worker: the first dies meanwhile, and its pipe's end is noticed
                os.kill(started[0], signal.SIGKILL)
                async with asyncio.timeout(30):
                    while not worker.pool.broken:  # noqa: ASYNC110 (the pool has no event to wait on)
                        await asyncio.sleep(0.01)
            started.append(worker.process.pid)
            return await connect(factory, pipe)

        loop.connect_write_pipe = connect_then_lose_the_first  # type: ignore[method-assign]
        with pytest.raises(WorkersGone, match="exited as it started"):
            await WorkerPool.start(2, warm_up=os.getpid)
        assert not set(started) & before

    asyncio.run(scenario())
    assert len(started) == 2
    assert wait_gone(started) == []


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_workers_exit_when_their_server_is_killed(loop: str) -> None:
    """kill -9 of the process that started the pool (no clean-up runs in it): its workers see their pipes close
    and exit, busy or idle."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time, uvloop
        from ledger.services.workers import WorkerPool

        async def main():
            pool = await WorkerPool.start(2)
            pool.submit(time.sleep, 2)  # one worker busy, one idle, when the server dies
            print(*(p.pid for p in pool.processes), flush=True)
            await asyncio.sleep(3600)

        {"uvloop" if loop == "uvloop" else "asyncio"}.run(main())
        """
    )
    server = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert server.stdout is not None
        workers = [int(pid) for pid in server.stdout.readline().split()]
        assert len(workers) == 2 and not any(gone(pid) for pid in workers)
        server.kill()
        server.wait()
        assert wait_gone(workers) == []
    finally:
        server.kill()
        server.wait()
