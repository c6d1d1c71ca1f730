"""Summarise a py-spy profile in collapsed-stack form (``py-spy record --format raw``), for ``tests.bench``.

    python -m tests.bench_profile var/prof/ingest-postgresql.folded [--top 20]

Prints how busy each thread was, then the hottest functions by self time and by inclusive time, and self time by
package (ledger, api, sqlalchemy, asyncpg, litestar, ...). py-spy drops samples of idle threads (waiting in
``select``, on a lock or on I/O), so what is left is time on the CPU.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    """py-spy already shortens most paths; cut what is left of an absolute one."""
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _package(path: str) -> str:
    parts = _short(path).split("/")
    if parts[0] in {"ledger", "api"} and len(parts) > 1:
        return ".".join(parts[:2]).removesuffix(".py")
    return parts[0].removesuffix(".py") or "?"


def _parse(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["func"], _short(match["file"])


def summarize(
    path: Path, *, top: int = 20, title: str | None = None, wall_samples: float | None = None
) -> str:
    """Hotspots of a py-spy profile recorded without ``--idle`` (so every sample is a thread on the CPU or in a
    system call other than waiting). With ``wall_samples`` (seconds x sampling rate) percentages are of the wall
    time of the recording, per thread; otherwise of all samples."""
    total = 0
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        raw = [f for f in stack.split(";") if f]
        process, thread = "", "(all threads)"
        while raw and raw[0].startswith(("thread (", "process ")):
            frame = raw.pop(0)
            if frame.startswith("thread ("):
                thread = frame.removeprefix("thread ")
            else:
                process = frame.split(":", 1)[0] + " "
        thread = process + thread
        if not raw:
            continue
        frames = [_parse(f) for f in raw]
        total += n
        threads[thread] += n
        func, file = frames[-1]
        self_time[f"{func} ({file})"] += n
        packages[_package(file)] += n
        for name in {f"{f} ({p})" for f, p in frames}:
            inclusive[name] += n
    if total == 0:
        return f"{path}: no samples"
    base = wall_samples or total
    unit = "of wall time (one thread = 100%)" if wall_samples else "of samples"
    lines = [f"--- {title or path}", f"  {total} samples; percentages are {unit}"]
    lines += [f"    {n / base:6.1%}  busy: thread {name}" for name, n in threads.most_common(6)]
    lines.append("  self time by package:")
    lines += [f"    {n / base:6.1%}  {name}" for name, n in packages.most_common(14)]
    lines.append("  hottest functions, self time:")
    lines += [f"    {n / base:6.1%}  {name}" for name, n in self_time.most_common(top)]
    lines.append("  hottest functions in ledger/ and api/, inclusive time:")
    ours = [(k, v) for k, v in inclusive.most_common() if "(ledger/" in k or "(api/" in k]
    lines += [f"    {n / base:6.1%}  {name}" for name, n in ours[:top]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_profile")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--seconds", type=float, help="length of the recording, for %% of wall time")
    parser.add_argument("--rate", type=float, default=200, help="py-spy's sampling rate (default 200)")
    args = parser.parse_args(argv)
    wall = args.seconds * args.rate if args.seconds else None
    print(summarize(args.profile, top=args.top, wall_samples=wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
