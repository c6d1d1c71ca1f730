"""Summarise a py-spy profile in collapsed-stack form (``py-spy record --format raw``), for ``tests.bench``.

    python -m tests.bench_profile var/prof/ingest-postgresql.folded [--top 20]

Prints the share of samples in which the server was waiting (in the event loop's ``select`` or a worker thread's
queue), then, of the busy samples, the hottest functions by self time and by inclusive time, and self time by
package (ledger, api, sqlalchemy, asyncpg, litestar, ...).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_IDLE_FILES = ("selectors.py", "threading.py", "queue.py")
_IDLE_FUNCS = {"select", "poll", "wait", "get", "_wait_for_tstate_lock", "acquire"}


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


def _is_idle(func: str, file: str) -> bool:
    return func.rsplit(".", 1)[-1] in _IDLE_FUNCS and file.endswith(_IDLE_FILES)


def summarize(path: Path, *, top: int = 20, title: str | None = None) -> str:
    total = idle = 0
    threads: Counter[str] = Counter()
    threads_idle: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        raw = [f for f in stack.split(";") if f]
        thread = "(all)"
        while raw and raw[0].startswith(("thread (", "process ")):
            thread = raw.pop(0) if raw[0].startswith("thread (") else thread
            if raw and raw[0].startswith("process "):
                raw.pop(0)
        if not raw:
            continue
        frames = [_parse(f) for f in raw]
        total += n
        threads[thread] += n
        func, file = frames[-1]
        if _is_idle(func, file):
            idle += n
            threads_idle[thread] += n
            continue
        self_time[f"{func} ({file})"] += n
        packages[_package(file)] += n
        for name in {f"{f} ({p})" for f, p in frames}:
            inclusive[name] += n
    if total == 0:
        return f"{path}: no samples"
    busy = max(1, total - idle)
    lines = [
        f"--- {title or path}",
        f"  {total} samples, {idle / total:.0%} idle (event loop select, threads waiting); "
        "percentages below are of busy samples",
    ]
    if len(threads) > 1:
        lines += [
            f"    thread {name}: {n} samples, {threads_idle[name] / n:.0%} idle"
            for name, n in threads.most_common(6)
        ]
    lines.append("  self time by package:")
    lines += [f"    {n / busy:6.1%}  {name}" for name, n in packages.most_common(14)]
    lines.append("  hottest functions, self time:")
    lines += [f"    {n / busy:6.1%}  {name}" for name, n in self_time.most_common(top)]
    lines.append("  hottest functions in ledger/ and api/, inclusive time:")
    ours = [(k, v) for k, v in inclusive.most_common() if "(ledger/" in k or "(api/" in k]
    lines += [f"    {n / busy:6.1%}  {name}" for name, n in ours[:top]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_profile")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    print(summarize(args.profile, top=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
