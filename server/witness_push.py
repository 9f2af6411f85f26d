"""The log pushes its checkpoints to witnesses over C2SP tlog-witness (c2sp.org/tlog-witness).

One task per configured witness follows the sequencer: whenever the log has a checkpoint the
witness has not cosigned, it POSTs <witness URL>/add-checkpoint with ``old <size>``, the
consistency proof from that size (built from the log's own tiles), and the signed checkpoint.

- 200: the cosignature lines are checked against the witness's key and stored with the
  checkpoint (server.published), which publishes the newest checkpoint meeting the quorum.
- 409 (text/x.tlog.size): the witness's size differs from what was assumed; resubmit at once
  from the size it names (the log does not know it after a restart). A 409 naming the very size
  just sent means the roots differ at that size: the witness holds a fork of this log.
- anything else, a timeout or no answer: logged, and retried with exponential back-off.

Submissions to one witness are at most one per MIN_INTERVAL_S; a checkpoint superseded while
waiting is skipped (cosigning the newest covers the older ones). Appends never wait for any of
this: a slow or dead witness only delays its own cosignatures.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import note, proofs
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.cosignature import CosignatureV1Verifier
from affidavit.merkle.errors import MerkleError
from affidavit.merkle.tiles import TileCache, TileHashReader
from affidavit.server.logstore import LogStore
from affidavit.server.metrics import Metrics
from affidavit.server.published import Published
from affidavit.server.sequencer import Sequencer

log = logging.getLogger("affidavit.server.witnesses")

MIN_INTERVAL_S = 0.1
"""Least time between two submissions to one witness."""
TIMEOUT_S = 10.0
"""How long one submission may take."""
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 60.0
SIZE_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class WitnessTarget:
    """A witness the log pushes to: its name, submission URL prefix and verifier key."""

    name: str
    url: str
    verifier: CosignatureV1Verifier


def parse_target(text: str) -> WitnessTarget:
    """NAME=URL@VKEY (VKEY a cosignature/v1 verifier key text, or @FILE holding one);
    ValueError saying what is wrong."""
    name, eq, rest = text.partition("=")
    url, at, key = rest.partition("@")
    if not eq or not at or not name or not url or not key:
        raise ValueError(f"--witness takes NAME=URL@VKEY, not {text[:80]!r}")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--witness {name}: the URL must be http:// or https://, not {url!r}")
    if key.startswith("@"):
        key = Path(key[1:]).read_text().strip()
    try:
        verifier = CosignatureV1Verifier.from_key_text(key)
    except MerkleError as e:
        raise ValueError(f"--witness {name}: not a witness (cosignature/v1) key: {e}") from None
    return WitnessTarget(name, url.rstrip("/"), verifier)


class Pusher:
    """Pushes the sequencer's checkpoints to targets; start() in the serving loop, stop() at
    shutdown (before the sequencer stops)."""

    def __init__(
        self,
        storage: LogStore,
        sequencer: Sequencer,
        published: Published,
        targets: list[WitnessTarget],
        *,
        min_interval: float = MIN_INTERVAL_S,
        metrics: Metrics | None = None,
    ) -> None:
        self._storage = storage
        self._metrics = metrics
        self._sequencer = sequencer
        self._published = published
        self._targets = targets
        self._min_interval = min_interval
        self._tiles = TileCache(storage.read_tiles, max_bytes=4 << 20)
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if not self._targets:
            return
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        self._tasks = [
            asyncio.get_running_loop().create_task(self._follow(t), name=f"witness {t.name}")
            for t in self._targets
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    async def _follow(self, target: WitnessTarget) -> None:
        known = 0  # the witness's size for this log, as far as this process knows
        cosigned = -1  # the newest size this witness cosigned for this process
        last_sent = 0.0
        backoff = 0.0
        failing: str | None = None  # why the last submission failed
        while True:
            caught_up = self._sequencer.checkpoint.size <= cosigned
            if caught_up and not await self._sequencer.wait_beyond(cosigned):
                return
            wait = max(last_sent + self._min_interval, time.monotonic() + backoff)
            await asyncio.sleep(max(0.0, wait - time.monotonic()))
            # The note is the one source: checkpoint and note are one consistent pair.
            signed = self._sequencer.note
            cp = checkpoints.parse(note.parse_note(signed)[0])
            last_sent = time.monotonic()
            try:
                outcome = await self._submit(target, known, cp, signed)
                if isinstance(outcome, int) and outcome != known:  # 409: resync, at once
                    known = outcome
                    outcome = await self._submit(target, known, cp, signed)
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                outcome = f"no answer ({e or type(e).__name__})"
                self._count(target, "unreachable")
            else:
                if outcome is not None:
                    self._count(target, "refused")
            if outcome is None:
                known = cosigned = cp.size
                backoff = 0.0
                if failing is not None:
                    log.info("witness %s cosigns again (size %d)", target.name, cp.size)
                failing = None
                continue
            if isinstance(outcome, int):
                outcome = (
                    f"it holds a different tree of size {outcome} (a fork of this log?)"
                    if outcome == known
                    else f"it reports size {outcome}"
                )
            backoff = min(max(FIRST_BACKOFF_S, backoff * 2), MAX_BACKOFF_S)
            # Loud once per kind of failure, not once per retry.
            level = logging.DEBUG if outcome == failing else logging.WARNING
            failing = outcome
            log.log(
                level,
                "witness %s did not cosign %s@%d: %s; retrying in %.1fs",
                target.name,
                cp.origin,
                cp.size,
                outcome,
                backoff,
            )

    def _count(self, target: WitnessTarget, result: str) -> None:
        if self._metrics is not None:
            self._metrics.witness_pushes.labels(target.verifier.name, result).inc()

    async def _submit(
        self, target: WitnessTarget, old: int, cp: Checkpoint, signed: str
    ) -> int | str | None:
        """One add-checkpoint: None when cosigned (and stored), the size a 409 names, or why
        it failed."""
        if old > cp.size:
            return f"it has cosigned size {old}, beyond this log's {cp.size}"
        proof = []
        if 0 < old < cp.size:
            proof = proofs.prove_consistency(old, cp.size, TileHashReader(cp.size, self._tiles))
        lines = "".join(base64.b64encode(h).decode() + "\n" for h in proof)
        body = f"old {old}\n{lines}\n{signed}".encode()
        assert self._session is not None
        async with self._session.post(
            f"{target.url}/add-checkpoint", data=body, headers={"Content-Type": "text/plain"}
        ) as r:
            text = (await r.read()).decode("utf-8", errors="replace")
            content_type = r.headers.get("Content-Type", "")
            status = r.status
        if status == 409 and content_type.split(";")[0].strip() == SIZE_TYPE:
            size = text.strip()
            if size.isdigit():
                return int(size)
        if status != 200:
            return f"HTTP {status}: {text.strip()[:200]}"
        body_text = cp.format()
        try:
            opened = note.open_note(f"{body_text}\n{text}", [target.verifier])
        except MerkleError as e:
            return f"its answer holds no valid cosignature by its key: {e}"
        lines_ok = "".join(s.line() for s in opened.signatures)
        if self._metrics is not None:
            for sig in opened.signatures:
                self._metrics.witness_cosigned(sig.name, sig.timestamp or 0)
        loop = asyncio.get_running_loop()
        # A synced write: off the event loop, so appends do not wait for it.
        await loop.run_in_executor(
            None, self._published.add, cp.size, signed, f"{body_text}\n{lines_ok}"
        )
        return None
