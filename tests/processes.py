"""Looking at real processes from a test: a process's children, whether one still runs, and
waiting for something they do."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def children(pid: int) -> set[int]:
    """The pids of pid's child processes (from /proc, every thread's children)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def alive(pid: int) -> bool:
    """True while pid runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pids: set[int], timeout: float = 60) -> set[int]:
    """Wait until none of pids runs, or timeout seconds; the ones still running."""
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return {p for p in pids if alive(p)}


def wait_for(what: str, ok: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ok until it holds; AssertionError naming what after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
