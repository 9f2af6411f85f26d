"""The log's record of refused attempts (statements.refusals), bounded against flooding.

Each refusal with a reason code is noted with where it came from. Per source and window, the
first MAX_DISTINCT distinct (key id, issuer, reason) attempts are recorded at once, one entry
each; the rest are counted, and when the window closes each source's uncounted remainder goes
on the record as one aggregate entry per (key, issuer, reason) while there are few, else one
per source (claimed key and issuer empty) with the total. So a flood from one source costs the
log at most MAX_DISTINCT + MAX_DISTINCT entries per window, and every refused attempt is
counted in some entry.

Entries are signed by the log's own key and appended through the sequencer like any other, in
one session of the log's (a new one each start); one writer, so the chain stays whole. They
are written after the refused caller is answered: a crash may lose the last window's record
(never an admitted entry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from affidavit.merkle import hashing
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build, refusals
from affidavit.statements.errors import Rejection
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey

MAX_DISTINCT = 8
"""Distinct attempts per source and window recorded one by one."""

_log = logging.getLogger("affidavit.refusals")

Attempt = tuple[str, str, str]
"""(claimed key id, claimed issuer, reason code)."""


@dataclass
class _Tally:
    """Refusals of one attempt (or one source's remainder) not yet on the record."""

    count: int = 0
    first_ms: int = 0
    last_ms: int = 0
    leaf_hash: bytes = b""

    def add(self, leaf_hash: bytes, now: int) -> None:
        self.count += 1
        self.first_ms = self.first_ms or now
        self.last_ms = now
        self.leaf_hash = leaf_hash


@dataclass
class _Window:
    recorded: set[Attempt] = field(default_factory=set)
    pending: dict[Attempt, _Tally] = field(default_factory=dict)


class RefusalRecorder:
    """Notes refusals (note) and appends the log's Refusal statements (through append)."""

    def __init__(
        self,
        log_seed: bytes,
        append: Callable[[bytes], Awaitable[object]],
        *,
        window_s: float = 10.0,
        clock: Callable[[], int] = build.now_ms,
    ) -> None:
        self._signer = build.SessionSigner(IdentityKey(refusals.LOG_ISSUER, log_seed))
        self._append = append
        self._window_s = window_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flusher(), name="refusals")

    async def stop(self) -> None:
        """Put what is counted on the record, then stop (before the sequencer stops)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await self.flush()

    def note(self, leaf: bytes, rejection: Rejection, source: str) -> None:
        """A statement was refused; record it now, or count it for the window's end."""
        if not rejection.reason:
            return  # malformed: it claims nothing (statements.refusals)
        claimed = refusals.attempt(leaf)
        if claimed is None:
            return
        attempt = (*claimed, rejection.reason)
        if claimed[1] == refusals.LOG_ISSUER:
            return  # the log's own entry refused (it never should be): no record of a record
        window = self._windows.setdefault(source, _Window())
        now = self._clock()
        leaf_hash = hashing.leaf_hash(leaf)
        if attempt not in window.recorded and len(window.recorded) < MAX_DISTINCT:
            window.recorded.add(attempt)
            tally = _Tally()
            tally.add(leaf_hash, now)
            self._write(source, attempt, tally)
            return
        window.pending.setdefault(attempt, _Tally()).add(leaf_hash, now)

    def _write(self, source: str, attempt: Attempt, tally: _Tally) -> None:
        task = asyncio.get_running_loop().create_task(self._record(source, attempt, tally))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def flush(self) -> None:
        """Close every window: each source's counted remainder goes on the record."""
        windows, self._windows = self._windows, {}
        for source, window in windows.items():
            if len(window.pending) <= MAX_DISTINCT:
                for attempt, tally in window.pending.items():
                    await self._record(source, attempt, tally)
                continue
            total = _Tally()
            for tally in window.pending.values():
                total.count += tally.count
                total.first_ms = min(total.first_ms or tally.first_ms, tally.first_ms)
                total.last_ms = max(total.last_ms, tally.last_ms)
                total.leaf_hash = tally.leaf_hash
            reasons = {a[2] for a in window.pending}
            reason = reasons.pop() if len(reasons) == 1 else "several"
            await self._record(source, ("", "", reason), total)

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self._window_s)
            await self.flush()

    async def _record(self, source: str, attempt: Attempt, tally: _Tally) -> None:
        key_id, issuer, reason = attempt
        body = pb.Refusal(
            leaf_hash=tally.leaf_hash,
            key_id=key_id,
            identity_id=issuer,
            reason=reason,
            source=source,
            count=tally.count,
            first_ms=tally.first_ms,
            last_ms=tally.last_ms,
        )
        async with self._lock:  # one writer: the log's session chain stays whole
            leaf = self._signer.sign(body, statement_id=uuid7())
            try:
                await self._append(leaf)
            except Exception as e:
                _log.warning("could not record a refusal (%s): %s", reason, e)
                return
            self._signer.advance(leaf)
