"""The auditor: replay a whole log, recompute its root, and report every finding.

    report = audit(client, resume=Path("audit.pos"), progress=print)
    print(report.text())            # or json.dumps(report.to_json())
    sys.exit(0 if report.ok else 1)

What is checked, for every entry up to a verified checkpoint (the log's signature, plus the
witness quorum when the client's policy has one):

- the Merkle root: every leaf hash is recomputed from the entry's bytes and folded into a
  compact range, whose root must be the checkpoint's;
- every statement, by replaying the one implementation of the ingest rules (statements.ingest):
  prepare() (decoding, schema, sizes, the secret guard, the signature) then admit() (the key
  valid at that index, gap-free session chains, every OUTCOME after its INTENT, grants that
  attenuate, approvals bound to the executed parameters, grant windows) over a LogState rebuilt
  from the log itself (statements.state over a DictKV). A statement the log accepted but its
  own rules refuse is a finding;
- every action's scope verdict: recomputed by admit() and compared with the verdict the log
  recorded and serves with the entry.

Findings and their severities (FINDING_KINDS):

    error      the log is not what an honest log would serve — its integrity failed:
               root-mismatch, entries-mismatch (missing, extra or out-of-order entries),
               invalid-statement (accepted, yet refused by the log's own rules on replay),
               verdict-mismatch (the recorded verdict is not the recomputed one)
    violation  the log faithfully recorded an agent acting outside its authority:
               out-of-scope-action, no-grant-action (reported once per action, at its INTENT,
               and again at its OUTCOME only when the outcome adds a reason of its own, such
               as executed-despite-deny or outcome-differs-from-intent)
    info       worth knowing, not wrong: missing-outcome (an INTENT with no OUTCOME up to the
               checkpoint — the action may still be running)

A report is ok when it has neither errors nor violations (the CLI exits non-zero otherwise).

Speed. The history-free half of ingest (prepare: decode, schema, secret scan, signature) and
the leaf hashes run in worker processes on chunks of entries while this process admits and
applies them in log order (admit, apply: the serial part, with the compact range and the
findings). A worker verifies a signature against the public key that the statement's key id
names: a key id is a hash of its key, so it names one key for all time, and admit() still
checks that this key is the one registered to the issuer at that index (verifying again, here,
whenever it is not). This process decodes each chunk before handing it out and sends the worker
every key an identity event has named so far, the chunk's own included; so for an honest log
every signature is verified once, by a worker. Each statement is decoded twice, here and in
its worker: a protobuf message crosses a pipe only as its bytes, so a statement a worker
decoded would be decoded here again anyway (about 1.5 µs), and admit() needs the message.

Resuming. With resume=PATH the audit's position — the next index, the compact range, the
replayed state, the findings so far and the checkpoint audited to — is written to PATH
atomically every save_every seconds and at the end; a later call with the same PATH continues
from it and reaches the same report as one uninterrupted run. The file is the auditor's own
working state: keep it where only the auditor can write.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from affidavit.client.audit.pool import Pool
from affidavit.client.audit.position import (
    PositionError,
    load_position,
    save_position,
    saved_checkpoint,
)
from affidavit.client.audit.replay import EntryLike, EntrySource, Findings, RecordedEntry, Replay
from affidavit.client.audit.report import (
    FAILING,
    FINDING_KINDS,
    MAX_FINDINGS,
    Finding,
    Progress,
    Report,
    Severity,
)
from affidavit.client.verify import Verified, open_checkpoint
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import hashing, keys
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.errors import MerkleError
from affidavit.merkle.note import parse_note
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import ingest, schema
from affidavit.statements.errors import Rejection

if TYPE_CHECKING:
    from affidavit.client.client import Client  # not at run time: workers import this package

__all__ = [
    "FAILING",
    "FINDING_KINDS",
    "MAX_FINDINGS",
    "AuditInterrupted",
    "EntryLike",
    "EntrySource",
    "Finding",
    "PositionError",
    "Progress",
    "RecordedEntry",
    "Report",
    "Severity",
    "audit",
    "audit_entries",
    "load_position",
    "save_position",
    "saved_checkpoint",
]

CHUNK = 1024
"""Entries handed to a worker at once."""
INLINE_BELOW = 10_000
"""Logs with fewer entries left than this are replayed in this process (no worker start-up)."""


def _chunks(entries: Iterable[EntryLike], size: int) -> Iterator[list[EntryLike]]:
    it = iter(entries)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _decode(data: bytes) -> tuple[pb.SignedStatement, pb.Statement] | None:
    try:
        return schema.decode(data)
    except Rejection:
        return None


class AuditInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped an audit between two chunks of entries. With a position file
    the position was saved first (position is its path), and resuming from it continues."""

    def __init__(self, done: int, total: int, position: Path | None) -> None:
        super().__init__(f"audit interrupted after {done} of {total} entries")
        self.done, self.total, self.position = done, total, position


@contextmanager
def _stop_on_sigint() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C while the audit runs, so it stops where its state is
    whole (between chunks) rather than wherever the signal lands; a second Ctrl-C interrupts
    at once, as usual. Signals reach only the main thread: elsewhere, the event never fires;
    nor when Ctrl-C is ignored (an audit started with nohup, or in the background)."""
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous == signal.SIG_IGN:
        yield stop
        return
    restore = previous if previous is not None else signal.default_int_handler

    def first(signum: int, frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, restore)

    signal.signal(signal.SIGINT, first)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, restore)


class _Clock:
    """Progress reports, periodic saves, and stopping on Ctrl-C."""

    def __init__(
        self,
        start: int,
        total: int,
        progress: Callable[[Progress], None] | None,
        save: Callable[[], None] | None,
        save_every: float,
        stop: threading.Event,
        position: Path | None,
    ) -> None:
        self.start, self.total = start, total
        self.began = self.last_save = time.monotonic()
        self._progress, self._save, self._save_every = progress, save, save_every
        self._stop, self._position = stop, position

    def tick(self, done: int) -> None:
        """Save if it is time (first: a progress callback may stop the audit), then report;
        after a Ctrl-C, save and raise AuditInterrupted."""
        if self._stop.is_set():
            if self._save is not None:
                self._save()
            raise AuditInterrupted(done, self.total, self._position)
        if self._save is not None and time.monotonic() - self.last_save >= self._save_every:
            self._save()
            self.last_save = time.monotonic()
        self.report(done)

    def report(self, done: int) -> None:
        if self._progress is not None:
            elapsed = time.monotonic() - self.began
            rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - done) / rate if rate > 0 else None
            self._progress(Progress(done, self.total, rate, eta))


def audit_entries(
    source: EntrySource,
    checkpoint: Verified,
    *,
    resume: Path | None = None,
    progress: Callable[[Progress], None] | None = None,
    workers: int | None = None,
    save_every: float = 30.0,
    max_findings: int = MAX_FINDINGS,
    log_key: bytes | None = None,
) -> Report:
    """Audit the entries [0, checkpoint size) that source serves against a verified checkpoint.

    source(start, end) yields the entries of [start, end) in order, each with its index, bytes
    and recorded verdict (pb.Entry or RecordedEntry). resume: a position file, continued from
    when it exists and written every save_every seconds, on Ctrl-C and at the end. A position
    saved at an older checkpoint of the same log continues to this one: the caller has proved
    the two consistent (audit() does), and the root recomputed over every entry must match
    this checkpoint's. progress is called after every chunk. workers: processes preparing
    entries (None: one per CPU when at least INLINE_BELOW entries are left and there are two
    CPUs or more, else 0 — everything in this process). Raises PositionError for an unusable
    position file, AuditInterrupted on Ctrl-C (after saving the position) and RuntimeError if
    a worker process fails; what the source raises passes through.
    log_key is the log's Ed25519 public key, which the log's own refusal records must verify
    with (without it, any refusal record is a finding).
    """
    began = time.monotonic()
    replay = Replay(checkpoint.note, Findings(max_findings))
    cp = checkpoint.checkpoint
    previous_size: int | None = None
    if resume is not None and resume.exists():
        replay = load_position(resume)
        if replay.checkpoint_note != checkpoint.note:
            previous_size = _continuable(resume, replay.checkpoint_note, cp)
            replay.checkpoint_note = checkpoint.note
    replay.log_key = log_key
    start = replay.next_index
    left = cp.size - start
    if workers is None:
        cpus = os.cpu_count() or 1
        workers = cpus if left >= INLINE_BELOW and cpus >= 2 else 0
    save = None if resume is None else (lambda: save_position(resume, replay))
    with _stop_on_sigint() as stop:
        clock = _Clock(start, cp.size, progress, save, save_every, stop, resume)
        if left > 0:
            entries = _checked_order(source(start, cp.size), start, cp.size, replay)
            if workers > 0:
                _run_pooled(entries, replay, clock, workers)
            else:
                _run_inline(entries, replay, clock)
    if save is not None:
        save()
    clock.report(replay.next_index)
    findings = replay.closing_findings(cp.size, cp.root_hash)
    return Report(
        origin=cp.origin,
        size=cp.size,
        checkpoint_root=cp.root_hash,
        witnesses=checkpoint.witnesses,
        root=replay.compact.root(),
        entries=replay.next_index,
        counts=dict(replay.counts),
        findings=sorted(findings.listed, key=_finding_order),
        finding_counts=findings.counts,
        findings_not_listed=sum(findings.counts.values()) - len(findings.listed),
        resumed_from=start,
        previous_size=previous_size,
        elapsed=time.monotonic() - began,
    )


def _continuable(resume: Path, saved_note: str, cp: Checkpoint) -> int:
    """The size of the checkpoint a position was saved at, when an audit can continue from it
    to cp: the same log, no larger. PositionError otherwise."""
    try:
        saved = checkpoints.parse(parse_note(saved_note)[0])
    except MerkleError as e:
        raise PositionError(f"{resume} holds a checkpoint that does not parse: {e}") from None
    if saved.origin != cp.origin:
        raise PositionError(
            f"{resume} is an audit of {saved.origin}, not {cp.origin}; use another file"
        )
    if saved.size > cp.size:
        raise PositionError(
            f"{resume} was saved at tree size {saved.size}, beyond this checkpoint's "
            f"{cp.size}: the log was rolled back, or the file belongs to another log"
        )
    return saved.size


def _finding_order(finding: Finding) -> tuple[bool, int]:
    """By index; findings about the whole log last."""
    return (finding.index is None, finding.index or 0)


def _checked_order(
    entries: Iterable[EntryLike], start: int, end: int, replay: Replay
) -> Iterator[EntryLike]:
    """The entries, stopping (with a finding) at the first one out of place or past end."""
    expected = start
    for entry in entries:
        if entry.index != expected or expected >= end:
            replay.add(
                entry.index,
                "entries-mismatch",
                f"the log served index {entry.index} where index {expected} was expected"
                if expected < end
                else f"the log served index {entry.index} beyond the checkpoint's size {end}",
            )
            return
        expected += 1
        yield entry


def _run_inline(entries: Iterable[EntryLike], replay: Replay, clock: _Clock) -> None:
    """Prepare and replay in this process, as the server does (keys from the replayed state)."""
    known = replay.state.key
    for chunk in _chunks(entries, CHUNK):
        hashes = hashing.leaf_hashes([e.data for e in chunk])
        for entry, leaf_hash in zip(chunk, hashes, strict=True):
            try:
                p = ingest.prepare(entry.data, known)
            except Rejection as e:
                replay.replay(entry, leaf_hash, _decode(entry.data), (e.code, e.message))
                continue
            replay.learn(p.statement)
            replay.replay(entry, leaf_hash, (p.signed, p.statement), p.verified_with)
        clock.tick(replay.next_index)


def _run_pooled(entries: Iterable[EntryLike], replay: Replay, clock: _Clock, workers: int) -> None:
    """Prepare in worker processes, replay here in order; workers keep 2 chunks each queued."""
    pool = Pool(workers)
    inflight: deque[tuple[list[EntryLike], list[Any], int]] = deque()
    try:
        for chunk in _chunks(entries, CHUNK):
            leaves = [e.data for e in chunk]
            decoded = [_decode(leaf) for leaf in leaves]
            for d in decoded:
                if d is not None:
                    replay.learn(d[1])
            inflight.append((chunk, decoded, pool.submit(leaves, replay.key_log)))
            if len(inflight) > 2 * workers:
                _replay_chunk(*inflight.popleft(), pool, replay, clock)
        while inflight:
            _replay_chunk(*inflight.popleft(), pool, replay, clock)
    finally:
        pool.close()


def _replay_chunk(
    chunk: list[EntryLike],
    decoded: list[Any],
    ticket: int,
    pool: Pool,
    replay: Replay,
    clock: _Clock,
) -> None:
    prepared, hashes = pool.collect(ticket)
    for entry, leaf_hash, d, p in zip(chunk, hashes, decoded, prepared, strict=True):
        replay.replay(entry, leaf_hash, d, p)
    clock.tick(replay.next_index)


def audit(
    client: Client,
    *,
    resume: Path | None = None,
    progress: Callable[[Progress], None] | None = None,
    workers: int | None = None,
    save_every: float = 30.0,
    max_findings: int = MAX_FINDINGS,
) -> Report:
    """Audit a log through a client (which needs an auditor token to read entries).

    The audit goes up to client.checkpoint(): the newest checkpoint the client's policy
    accepts (signed by the log; with a witness quorum when the policy has one), checked for
    consistency with the last one the client trusted. Resuming continues from the position
    file to that same newest checkpoint: the checkpoint the position was saved at is verified
    again under the policy and the log must prove the newest one consistent with it, so the
    entries audited before are the start of the log audited now. Raises VerificationError when
    no such checkpoint can be had, the two are not consistent, or the log serves an entry that
    is not what it claims; PositionError for an unusable position file; AuditInterrupted on
    Ctrl-C (the position saved first); and the client's errors when the log cannot be read.
    """
    saved = saved_checkpoint(resume) if resume is not None else None
    checkpoint = client.checkpoint()
    if saved is not None and saved != checkpoint.note:
        # The log's signature on it again (the file is not trusted), then a consistency proof
        # between it and the newest checkpoint, from the log.
        client.observe(open_checkpoint(saved, client.policy, require_quorum=False))

    def source(start: int, end: int) -> Iterator[pb.Entry]:
        return client.entries(start, end)

    return audit_entries(
        source,
        checkpoint,
        resume=resume,
        progress=progress,
        workers=workers,
        save_every=save_every,
        max_findings=max_findings,
        log_key=keys.parse_verifier_key(client.policy.log_key).public_key,
    )
