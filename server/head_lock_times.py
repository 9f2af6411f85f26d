"""How long a scale-out frontend waited for the log's head row, and held it, per batch; and
where the time of its publications (step 3, PublishTimes) goes.

With several frontends on one log, batches are sequenced one at a time under the head row's
lock (server.storage_postgres): total append throughput is at most entries per batch over the
time the lock is held per batch, whatever the number of frontends. These sums say where that
time goes; the frontend logs them when it stops (benchmarks/storage_bench.py prints them).
The grant is stamped by the database's clock, the rest by the frontend's: both are the wall
clock, so the split between waited and held is exact only where they share a machine (as in
the benchmark); elsewhere it is off by the clocks' offset, and their sum stays right.

    waited    from asking for the lock to the database granting it
    held      from the database granting it to the frontend hearing it released (commit, or
              unlock without a batch): the reads sent with the lock, in the same round trip,
              run while it is held and count here
    lookups   the part of held spent reading the database in batches (dedup lookups not
              sent with the lock, statement state)
    gets      the part of held spent reading records one at a time
    tiles     the part of held spent reading tiles and bundles (memory or object store)
    commit    the part of held spent in commit: its entry bundles made (bundles), then one
              round trip (sequence)
    catch_up  the part of held spent taking in the batches other frontends sequenced since
              this one last held it (their rows read with the lock, parsed, the newest one's
              tiles checked against its checkpoint)

Beside each part's milliseconds, its calls per batch (NAME_calls): for lookups, the database
round trips made under the lock beside the lock's own and the commit's.

Step 3 runs with the head unlocked, on the publisher thread; PublishTimes sums its parts
(server.postgres_publish names them) and the object store's requests by kind
(server.objects_s3.ObjectStore.requests), per batch as HeadLockTimes counts them (each time
this frontend released the head).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class _Parts:
    """Seconds and calls summed by part name (thread-safe: every sum under _lock)."""

    parts_s: dict[str, float] = field(default_factory=dict)
    parts_n: dict[str, int] = field(default_factory=dict)  # how many times each part ran
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _add(self, name: str, seconds: float) -> None:
        """Count one run of part name (holding _lock)."""
        self.parts_s[name] = self.parts_s.get(name, 0.0) + seconds
        self.parts_n[name] = self.parts_n.get(name, 0) + 1

    def _per_batch(self, n: int) -> dict[str, float]:
        """Each part's milliseconds and calls per batch, over n batches (holding _lock)."""
        out = {}
        for name, seconds in sorted(self.parts_s.items()):
            out[f"{name}_ms"] = round(1000 * seconds / n, 2)
            out[f"{name}_calls"] = round(self.parts_n.get(name, 0) / n, 2)
        return out


@dataclass
class HeadLockTimes(_Parts):
    """Running sums since the frontend started (thread-safe; one integrator adds to them)."""

    batches: int = 0
    entries: int = 0
    waited_s: float = 0.0
    held_s: float = 0.0
    _since: float | None = field(default=None, repr=False)
    _holder: int | None = field(default=None, repr=False)  # the thread holding the lock

    def asked(self) -> float:
        """The lock is being asked for: the time to pass to holding()."""
        return time.time()

    def holding(self, asked: float, granted: float) -> None:
        """The lock asked for at asked was granted at granted (the database's clock)."""
        granted = min(max(granted, asked), time.time())  # within what this clock saw
        with self._lock:
            self.waited_s += granted - asked
            self._since, self._holder = granted, threading.get_ident()

    def released(self, entries: int) -> None:
        """The lock is released after a batch of entries (0: none was sequenced)."""
        now = time.time()
        with self._lock:
            if self._since is None:
                return
            self.held_s += now - self._since
            self._since = self._holder = None
            self.batches += 1
            self.entries += entries

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Time a part of the held time: counted only in the thread holding the lock (readers
        on other threads make the same calls meanwhile)."""
        start = time.time()
        try:
            yield
        finally:
            with self._lock:
                if self._holder == threading.get_ident():
                    self._add(name, time.time() - start)

    def add(self, name: str, seconds: float) -> None:
        """Count seconds the holder spent in a part before holding() was told of the grant."""
        with self._lock:
            self._add(name, seconds)

    def summary(self) -> dict[str, float]:
        """Per batch, in milliseconds, and entries per batch."""
        with self._lock:
            n = max(self.batches, 1)
            return {
                "batches": float(self.batches),
                "entries_per_batch": round(self.entries / n, 1),
                "waited_ms": round(1000 * self.waited_s / n, 2),
                "held_ms": round(1000 * self.held_s / n, 2),
                **self._per_batch(n),
            }


@dataclass
class PublishTimes(_Parts):
    """Step 3's running sums since the frontend started (thread-safe)."""

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Time a part of step 3 (in whichever thread runs it)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self._add(name, time.perf_counter() - start)

    def summary(self, batches: int, requests: dict[str, int]) -> dict[str, float]:
        """Per batch (of batches), in milliseconds and calls; and each kind of object store
        request per batch (requests: their counts since the frontend started)."""
        n = max(batches, 1)
        with self._lock:
            out = self._per_batch(n)
        for kind, count in sorted(requests.items()):
            out[f"s3_{kind}"] = round(count / n, 2)
        return out
