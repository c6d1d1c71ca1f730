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
    for marker in ("site-packages/", "/work/main/", "/lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" and "/" in tail else tail
    return path


def _package(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/work/main/" in path or path.startswith(("ledger/", "api/")):
        parts = _short(path).split("/")
        return ".".join(parts[:2]).removesuffix(".py")
    if "/lib/python3" in path:
        return "stdlib:" + _short(path).split("/", 1)[0].removesuffix(".py")
    return path or "?"


def _parse(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["func"], match["file"]


def _is_thread(frame: str) -> bool:
    return frame.startswith(("thread (", "process ")) or (frame.startswith("process") and ":" in frame)


def summarize(path: Path, *, top: int = 20, title: str | None = None) -> str:
    samples: list[tuple[list[tuple[str, str]], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not _is_thread(f)]
        samples.append(([_parse(f) for f in frames], int(count)))
    total = sum(n for _, n in samples)
    if total == 0:
        return f"{path}: no samples"
    idle = 0
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for frames, n in samples:
        if not frames:
            continue
        func, file = frames[-1]
        if func in _IDLE_FUNCS and file.endswith(_IDLE_FILES):
            idle += n
            continue
        self_time[f"{func} ({_short(file)})"] += n
        packages[_package(file)] += n
        for name in {f"{f} ({_short(p)})" for f, p in frames}:
            inclusive[name] += n
    busy = total - idle
    lines = [
        f"--- {title or path}",
        f"  {total} samples, {idle / total:.0%} waiting (event loop select / worker queues), "
        f"{busy / total:.0%} busy; percentages below are of busy samples",
        "  self time by package:",
    ]
    lines += [f"    {n / busy:6.1%}  {name}" for name, n in packages.most_common(12)]
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
