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

Speed. The history-free half of ingest (prepare: decode, schema, secret scan, signature) runs
in worker processes on chunks of entries while this process admits and applies them in log
order (admit, apply: the serial part). A worker verifies a signature against the public key
that the statement's key id names: a key id is a hash of its key, so it names one key for all
time, and admit() still checks that this key is the one registered to the issuer at that index
(verifying again, here, whenever it is not). This process decodes each chunk before handing it
out and sends the worker every key an identity event has named so far, the chunk's own
included; so for an honest log every signature is verified once, by a worker.

Resuming. With resume=PATH the audit's position — the next index, the compact range, the
replayed state, the findings so far and the checkpoint audited to — is written to PATH
atomically every save_every seconds and at the end; a later call with the same PATH continues
from it and reaches the same report as one uninterrupted run. The file is the auditor's own
working state: keep it where only the auditor can write.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import queue
import signal
import struct
import sys
import threading
import time
import traceback
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from affidavit.client.client import Client
from affidavit.client.trust import write_atomic
from affidavit.client.verify import Verified, open_checkpoint
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import hashing, keys
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.compact import CompactRange
from affidavit.merkle.errors import MerkleError
from affidavit.merkle.note import parse_note
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import ingest, schema, signing
from affidavit.statements.errors import Rejection
from affidavit.statements.state import DictKV, KeyRecord, LogState, VerdictRecord

Severity = Literal["error", "violation", "info"]

FINDING_KINDS: Final[dict[str, Severity]] = {
    "root-mismatch": "error",
    "entries-mismatch": "error",
    "invalid-statement": "error",
    "verdict-mismatch": "error",
    "out-of-scope-action": "violation",
    "no-grant-action": "violation",
    "missing-outcome": "info",
}
"""Every kind of finding and its severity (see the module docstring)."""

FAILING: Final[frozenset[Severity]] = frozenset({"error", "violation"})
"""Severities that make a report fail."""

CHUNK = 1024
"""Entries handed to a worker at once."""
INLINE_BELOW = 10_000
"""Logs with fewer entries left than this are replayed in this process (no worker start-up)."""
MAX_FINDINGS = 10_000
"""Findings kept in a report by default; beyond it they are only counted."""

_POSITION_MAGIC = b"affidavit-audit-position/2\n"
_POSITION_MAGIC_V1 = b"affidavit-audit-position/1\n"
"""Version 1 held the records uncompressed (about 370 bytes an entry); it is still read."""


# ---------------------------------------------------------------------------------------------
# What goes in and what comes out.
# ---------------------------------------------------------------------------------------------


class EntryLike(Protocol):
    """An entry as the log serves it (pb.Entry has these): its index, its exact bytes, and the
    verdict the log recorded for it (0 and "" for statements that are not actions)."""

    @property
    def index(self) -> int: ...

    @property
    def data(self) -> bytes: ...

    @property
    def verdict(self) -> int: ...

    @property
    def verdict_reason(self) -> str: ...

    @property
    def admitted_ms(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RecordedEntry:
    """An entry from any source: index, bytes, and the verdict (with the admission time its
    grant windows were judged at) recorded for it."""

    index: int
    data: bytes
    verdict: int = 0
    verdict_reason: str = ""
    admitted_ms: int = 0


EntrySource = Callable[[int, int], Iterable[EntryLike]]
"""source(start, end) yields the entries [start, end) in order."""


@dataclass(frozen=True)
class Finding:
    """One thing the audit found: at index (None for the log as a whole), of a kind (a key of
    FINDING_KINDS, which gives its severity), in words."""

    index: int | None
    kind: str
    message: str

    @property
    def severity(self) -> Severity:
        return FINDING_KINDS[self.kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass(frozen=True)
class Progress:
    """How far an audit is: entries done of total, the rate of this run (entries/s) and the
    estimated seconds left (None until there is a rate)."""

    done: int
    total: int
    rate: float
    eta: float | None


@dataclass
class Report:
    """The outcome of an audit up to one verified checkpoint.

    counts holds statements by kind (identity, grant, approval, intent, outcome) and recomputed
    verdicts (in_scope, out_of_scope, no_grant); finding_counts every finding by kind, including
    those beyond the ones listed in findings (findings_not_listed of them).
    """

    origin: str
    size: int
    checkpoint_root: bytes
    witnesses: tuple[str, ...]
    root: bytes
    entries: int
    counts: dict[str, int]
    findings: list[Finding]
    finding_counts: dict[str, int]
    findings_not_listed: int = 0
    resumed_from: int = 0
    previous_size: int | None = None
    """When resumed from a position saved at an older checkpoint: that checkpoint's size."""
    elapsed: float = 0.0

    @property
    def root_ok(self) -> bool:
        return self.root == self.checkpoint_root

    def severity_counts(self) -> dict[Severity, int]:
        out: dict[Severity, int] = {"error": 0, "violation": 0, "info": 0}
        for kind, n in self.finding_counts.items():
            out[FINDING_KINDS[kind]] += n
        return out

    @property
    def ok(self) -> bool:
        """No errors and no violations (info findings do not fail an audit)."""
        counts = self.severity_counts()
        return not any(counts[s] for s in FAILING)

    @property
    def rate(self) -> float:
        """Entries per second audited by this run (resumed entries excluded)."""
        done = self.entries - self.resumed_from
        return done / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (hashes in lowercase hex)."""
        return {
            "ok": self.ok,
            "origin": self.origin,
            "checkpoint": {
                "size": self.size,
                "root": self.checkpoint_root.hex(),
                "witnesses": list(self.witnesses),
            },
            "root": self.root.hex(),
            "root_ok": self.root_ok,
            "entries": self.entries,
            "counts": dict(self.counts),
            "severity_counts": dict(self.severity_counts()),
            "finding_counts": dict(self.finding_counts),
            "findings": [f.to_json() for f in self.findings],
            "findings_not_listed": self.findings_not_listed,
            "resumed_from": self.resumed_from,
            "previous_size": self.previous_size,
            "elapsed_s": round(self.elapsed, 3),
            "rate": round(self.rate, 1),
        }

    def text(self) -> str:
        """The report for a person to read."""
        c, s = self.counts, self.severity_counts()
        cosigned = f", cosigned by {', '.join(self.witnesses)}" if self.witnesses else ""
        lines = [
            f"audit of {self.origin} up to tree size {self.size}{cosigned}",
            f"  root       {'matches' if self.root_ok else 'DOES NOT MATCH'} the checkpoint "
            f"({self.checkpoint_root.hex()[:16]}…)",
            f"  entries    {self.entries}: {c['identity']} identity, {c['grant']} grant, "
            f"{c.get('grant_revocation', 0)} grant revocation, {c['approval']} approval, "
            f"{c['intent']} action intent, {c['outcome']} outcome, "
            f"{c.get('refusal', 0)} refusal record",
            f"  verdicts   {c['in_scope']} in scope, {c['out_of_scope']} out of scope, "
            f"{c['no_grant']} without a grant",
            f"  findings   {s['error']} error(s), {s['violation']} violation(s), {s['info']} info",
        ]
        if self.resumed_from:
            since = (
                f"; {self.size - self.previous_size} entries added since it was saved at size "
                f"{self.previous_size}, proven consistent"
                if self.previous_size is not None
                else ""
            )
            lines.insert(
                3, f"  resumed    at entry {self.resumed_from} from a saved position{since}"
            )
        for f in self.findings:
            where = "log" if f.index is None else f"#{f.index}"
            lines.append(f"  {f.severity.upper():<9} {where:>9}  {f.kind}: {f.message}")
        if self.findings_not_listed:
            lines.append(f"  … and {self.findings_not_listed} more finding(s) not listed")
        if s["error"]:
            verdict = "FAILED: the log's integrity is broken"
        elif s["violation"]:
            verdict = "FAILED: the log records actions outside their authority"
        else:
            verdict = "OK"
        lines.append(f"result: {verdict}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The history-free half, in worker processes (or inline).
# ---------------------------------------------------------------------------------------------

Prepared = bytes | None | tuple[str, str]
"""What prepare() gave for one entry: the public key its signature verified with, None when
its key was not known yet, or a Rejection as (code, message)."""


def _candidate(keys: dict[str, bytes]) -> Callable[[str], KeyRecord | None]:
    """known_key for prepare(): the public key a key id names. prepare() reads only the public
    key of the record; admit() checks it is the key registered at that index."""

    def known(key_id: str) -> KeyRecord | None:
        public_key = keys.get(key_id)
        return None if public_key is None else KeyRecord(key_id, "", public_key, 0)

    return known


def _prepare_chunk(leaves: Sequence[bytes], keys: dict[str, bytes]) -> list[Prepared]:
    """prepare() each leaf, with the keys named so far."""
    known = _candidate(keys)
    out: list[Prepared] = []
    for leaf in leaves:
        try:
            out.append(ingest.prepare(leaf, known).verified_with)
        except Rejection as e:
            out.append((e.code, e.message))
    return out


def _worker_main(jobs: Queue[Any], results: Queue[Any]) -> None:
    """A worker process: prepare chunks until told to stop (None). A failure is sent back as
    its traceback (text) for the auditor to raise."""
    keys: dict[str, bytes] = {}
    # Ctrl-C reaches the whole process group: the auditor decides when to stop (and saves its
    # position first); a worker dying of it mid-chunk would only turn that into a failure.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while (job := jobs.get()) is not None:
            new_keys, leaves = job
            keys.update(new_keys)
            results.put(_prepare_chunk(leaves, keys))
    except BaseException:
        results.put(traceback.format_exc())


class _Pool:
    """Worker processes, each with its own queues, fed round-robin so results come back in
    order and each worker is sent exactly the keys learned since its previous chunk. Queues
    (not bare pipes) so that neither side ever blocks sending while the other does too."""

    def __init__(self, workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process holding gRPC channels
        self._jobs: list[Queue[Any]] = []
        self._results: list[Queue[Any]] = []
        self._procs: list[BaseProcess] = []
        for i in range(workers):
            jobs, results = ctx.Queue(), ctx.Queue()
            proc = ctx.Process(
                target=_worker_main,
                args=(jobs, results),
                name=f"affidavit-audit-{i}",
                daemon=True,
            )
            proc.start()
            self._jobs.append(jobs)
            self._results.append(results)
            self._procs.append(proc)
        self._key_cursor = [0] * workers
        self._next = 0

    def submit(self, leaves: list[bytes], key_log: list[tuple[str, bytes]]) -> int:
        """Hand a chunk to the next worker; the ticket to collect it with."""
        w = self._next % len(self._jobs)
        self._next += 1
        new_keys = key_log[self._key_cursor[w] :]
        self._key_cursor[w] = len(key_log)
        self._jobs[w].put((new_keys, leaves))
        return w

    def collect(self, ticket: int) -> list[Prepared]:
        """The results of the oldest chunk handed to that worker."""
        while True:
            try:
                result: list[Prepared] | str = self._results[ticket].get(timeout=1.0)
            except queue.Empty:
                if not self._procs[ticket].is_alive():
                    raise RuntimeError(f"audit worker {ticket} died") from None
                continue
            if isinstance(result, str):
                raise RuntimeError(f"audit worker {ticket} failed:\n{result}")
            return result

    def close(self) -> None:
        """Stop the workers (they finish their chunk; any still running after 5 s is ended)."""
        for jobs in self._jobs:
            jobs.put(None)
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for q in (*self._jobs, *self._results):
            q.cancel_join_thread()  # what is left unread is not needed
            q.close()


# ---------------------------------------------------------------------------------------------
# The stateful half: admit and apply in log order.
# ---------------------------------------------------------------------------------------------

_COUNTS = (
    "identity",
    "grant",
    "grant_revocation",
    "refusal",
    "approval",
    "intent",
    "outcome",
    "in_scope",
    "out_of_scope",
    "no_grant",
)
_VERDICT_COUNT: dict[int, str] = {
    pb.IN_SCOPE: "in_scope",
    pb.OUT_OF_SCOPE: "out_of_scope",
    pb.NO_GRANT: "no_grant",
}
_VIOLATION_KIND: dict[int, str] = {
    pb.OUT_OF_SCOPE: "out-of-scope-action",
    pb.NO_GRANT: "no-grant-action",
}


def _verdict_text(verdict: int, reason: str) -> str:
    known = verdict in pb.Verdict.values()
    name = pb.Verdict.Name(pb.Verdict.ValueType(verdict)) if known else f"verdict {verdict}"
    return f"{name} ({reason})" if reason else name


class _Findings:
    """Findings as they are made: listed up to a limit, counted by kind always."""

    def __init__(
        self,
        limit: int,
        listed: Iterable[Finding] = (),
        counts: dict[str, int] | None = None,
    ) -> None:
        self.limit = limit
        self.listed = list(listed)
        self.counts = dict(counts or {})

    def add(self, index: int | None, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.listed) < self.limit:
            self.listed.append(Finding(index, kind, message))

    def copy(self) -> _Findings:
        return _Findings(self.limit, self.listed, self.counts)


@dataclass
class _Replay:
    """Everything an audit carries from one entry to the next (what a position file holds)."""

    checkpoint_note: str
    findings: _Findings
    next_index: int = 0
    compact: CompactRange = field(default_factory=CompactRange)
    kv: DictKV = field(default_factory=DictKV)
    keys: dict[str, bytes] = field(default_factory=dict)
    open_intents: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTS, 0))
    log_key: bytes | None = None  # the log's public key: its refusal records verify with it

    def __post_init__(self) -> None:
        self.state = LogState(self.kv)
        self.key_log: list[tuple[str, bytes]] = list(self.keys.items())
        self.add = self.findings.add

    def learn(self, statement: pb.Statement) -> None:
        """Note the key an identity event names, for the workers (before its chunk is handed
        out): any statement's, admitted or not — admit() judges whether the key was valid."""
        if statement.WhichOneof("body") != "identity" or not statement.identity.public_key:
            return
        public_key = statement.identity.public_key
        key_id = signing.key_id(public_key)
        if key_id not in self.keys:
            self.keys[key_id] = public_key
            self.key_log.append((key_id, public_key))

    def replay(
        self,
        entry: EntryLike,
        leaf_hash: bytes,
        decoded: tuple[pb.SignedStatement, pb.Statement] | None,
        prepared: Prepared,
    ) -> None:
        """Admit, apply and check one entry (decoded and prepared by the caller)."""
        index = entry.index
        self.compact.append(leaf_hash)
        self.next_index = index + 1
        if isinstance(prepared, tuple) or decoded is None:
            code, message = prepared if isinstance(prepared, tuple) else ("?", "does not decode")
            self.add(index, "invalid-statement", f"{code}: {message}")
            return
        signed, statement = decoded
        try:
            verdict = ingest.admit(
                ingest.Prepared(signed, statement, prepared),
                self.state,
                entry.admitted_ms or None,
                self.log_key,
            )
        except Rejection as e:
            self.add(index, "invalid-statement", f"{e.code}: {e.message}")
            return
        intent_verdict = self._intent_verdict(statement, verdict)
        self.state.apply(index, leaf_hash, statement, verdict)
        self._tally(index, statement, verdict, intent_verdict)
        recorded = (entry.verdict, entry.verdict_reason)
        computed = (0, "") if verdict is None else (verdict.verdict, verdict.reason)
        if recorded != computed:
            self.add(
                index,
                "verdict-mismatch",
                f"the log recorded {_verdict_text(*recorded)}; its rules give "
                f"{_verdict_text(*computed)}",
            )

    def _intent_verdict(
        self, statement: pb.Statement, verdict: VerdictRecord | None
    ) -> tuple[int, str] | None:
        """For an OUTCOME outside scope, its INTENT's verdict (to report a violation once)."""
        if verdict is None or verdict.verdict == pb.IN_SCOPE:
            return None
        if statement.action.phase != pb.AgentAction.OUTCOME:
            return None
        intent = self.state.intent(statement.action.action_id)
        return None if intent is None else (intent.verdict, intent.reason)

    def _tally(
        self,
        index: int,
        statement: pb.Statement,
        verdict: VerdictRecord | None,
        intent_verdict: tuple[int, str] | None,
    ) -> None:
        body = statement.WhichOneof("body")
        if body != "action":  # a session event is counted only where there is one
            self.counts[str(body)] = self.counts.get(str(body), 0) + 1
            return
        assert verdict is not None  # admit() gives every action a verdict
        action = statement.action
        if action.phase == pb.AgentAction.INTENT:
            self.counts["intent"] += 1
            self.open_intents[action.action_id] = index
        else:
            self.counts["outcome"] += 1
            self.open_intents.pop(action.action_id, None)
        self.counts[_VERDICT_COUNT[verdict.verdict]] += 1
        kind = _VIOLATION_KIND.get(verdict.verdict)
        if kind is None or intent_verdict == (verdict.verdict, verdict.reason):
            return
        op = action.operation
        phase = "intent" if action.phase == pb.AgentAction.INTENT else "outcome"
        self.add(
            index,
            kind,
            f"{action.actor.agent_id} {phase} {op.tool_name} on {op.resource} "
            f"(action {action.action_id}): {_verdict_text(verdict.verdict, verdict.reason)}",
        )

    def closing_findings(self, size: int, root_hash: bytes) -> _Findings:
        """The findings so far and those only the end can judge: the root, and intents left
        without an outcome (the state itself is left as it is, to be resumed or reported)."""
        out = self.findings.copy()
        if self.next_index != size:
            if "entries-mismatch" not in out.counts:
                out.add(
                    self.next_index,
                    "entries-mismatch",
                    f"the log served entries only up to index {self.next_index}; "
                    f"its checkpoint has {size}",
                )
        elif self.compact.root() != root_hash:
            out.add(
                None,
                "root-mismatch",
                f"the entries hash to root {self.compact.root().hex()}; the checkpoint "
                f"of size {size} says {root_hash.hex()}",
            )
        for action_id, index in sorted(self.open_intents.items(), key=lambda item: item[1]):
            out.add(index, "missing-outcome", f"action {action_id} has no OUTCOME")
        return out


# ---------------------------------------------------------------------------------------------
# Position files.
# ---------------------------------------------------------------------------------------------


def save_position(path: Path, replay: _Replay) -> None:
    """Write the audit's position to path, atomically (a crash leaves the old file or the new
    one), with a SHA-256 trailer so a damaged file is refused rather than trusted."""
    header = json.dumps(
        {
            "checkpoint": replay.checkpoint_note,
            "next_index": replay.next_index,
            "compact": {
                "size": replay.compact.size,
                "hashes": [h.hex() for h in replay.compact.hashes],
            },
            "keys": {k: v.hex() for k, v in replay.keys.items()},
            "open_intents": replay.open_intents,
            "counts": replay.counts,
            "findings": [[f.index, f.kind, f.message] for f in replay.findings.listed],
            "finding_counts": replay.findings.counts,
            "max_findings": replay.findings.limit,
            "records": len(replay.kv.data),
        },
        separators=(",", ":"),
    ).encode()
    keys, values = list(replay.kv.data), list(replay.kv.data.values())
    # The replayed state is JSON records keyed by ids and hashes: zlib's fastest level makes
    # it about a quarter of its size (a tenth of a second per 50,000 entries).
    records = zlib.compress(
        b"".join([_lengths(keys), _lengths(values), *keys, *values]), _POSITION_ZLIB_LEVEL
    )
    body = b"".join([_POSITION_MAGIC, struct.pack(">Q", len(header)), header, records])
    write_atomic(path, body + hashlib.sha256(body).digest())


_POSITION_ZLIB_LEVEL = 1


def _lengths(items: list[bytes]) -> bytes:
    """The length of each item, as little-endian u32s."""
    lengths = array("I", map(len, items))
    if sys.byteorder != "little":
        lengths.byteswap()
    return lengths.tobytes()


def _split(blob: bytes, at: int, lengths: array[int]) -> tuple[list[bytes], int]:
    """Consecutive pieces of blob from at, of the given lengths; and where they end."""
    ends = list(itertools.accumulate(lengths, initial=at))
    return [blob[a:b] for a, b in itertools.pairwise(ends)], ends[-1]


class PositionError(Exception):
    """A position file that cannot be resumed from: damaged, or of another format."""


def load_position(path: Path) -> _Replay:
    """Read a position file written by save_position; PositionError if it cannot be used."""
    raw = path.read_bytes()
    end = len(raw) - 32
    if not raw.startswith((_POSITION_MAGIC, _POSITION_MAGIC_V1)):
        raise PositionError(f"{path} is not an affidavit audit position file")
    if hashlib.sha256(memoryview(raw)[:end]).digest() != raw[end:]:
        raise PositionError(f"{path} is damaged (its checksum does not match); delete it")
    try:
        return _parse_position(raw, end)
    except (KeyError, TypeError, ValueError, struct.error, zlib.error) as e:
        raise PositionError(f"{path} is not a position file this version reads: {e}") from None


def _parse_position(body: bytes, end: int) -> _Replay:
    """The position in body[:end] (the part of a position file before its checksum)."""
    at = len(_POSITION_MAGIC)
    (length,) = struct.unpack_from(">Q", body, at)
    at += 8
    h = json.loads(body[at : at + length])
    at += length
    if body.startswith(_POSITION_MAGIC):
        body = zlib.decompress(body[at:end])  # version 2: the records are compressed
        at, end = 0, len(body)
    n = h["records"]
    key_lengths, value_lengths = array("I"), array("I")
    key_lengths.frombytes(body[at : at + 4 * n])
    value_lengths.frombytes(body[at + 4 * n : at + 8 * n])
    if sys.byteorder != "little":
        key_lengths.byteswap()
        value_lengths.byteswap()
    keys, at = _split(body, at + 8 * n, key_lengths)
    values, at = _split(body, at, value_lengths)
    if at != end or len(keys) != n:
        raise ValueError("its records do not add up to its length")
    kv = DictKV()
    kv.data = dict(zip(keys, values, strict=True))
    return _Replay(
        checkpoint_note=h["checkpoint"],
        next_index=h["next_index"],
        compact=CompactRange(
            h["compact"]["size"], [bytes.fromhex(x) for x in h["compact"]["hashes"]]
        ),
        kv=kv,
        keys={k: bytes.fromhex(v) for k, v in h["keys"].items()},
        open_intents=h["open_intents"],
        counts=h["counts"],
        findings=_Findings(
            h["max_findings"],
            [Finding(i, k, m) for i, k, m in h["findings"]],
            h["finding_counts"],
        ),
    )


def saved_checkpoint(path: Path) -> str | None:
    """The checkpoint note a position file audits to (read from its header only), or None when
    there is no file yet. The whole file is checked when the audit loads it."""
    try:
        with path.open("rb") as f:
            magic = f.read(len(_POSITION_MAGIC))
            (length,) = struct.unpack(">Q", f.read(8))
            note = json.loads(f.read(length))["checkpoint"]
    except FileNotFoundError:
        return None
    except (KeyError, TypeError, ValueError, struct.error):
        magic = b""
    if magic not in (_POSITION_MAGIC, _POSITION_MAGIC_V1) or not isinstance(note, str):
        raise PositionError(f"{path} is not an affidavit audit position file")
    return note


# ---------------------------------------------------------------------------------------------
# The audit.
# ---------------------------------------------------------------------------------------------


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
    at once, as usual. Signals reach only the main thread: elsewhere, the event never fires."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.getsignal(signal.SIGINT)
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
    replay = _Replay(checkpoint.note, _Findings(max_findings))
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
    entries: Iterable[EntryLike], start: int, end: int, replay: _Replay
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


def _run_inline(entries: Iterable[EntryLike], replay: _Replay, clock: _Clock) -> None:
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


def _run_pooled(entries: Iterable[EntryLike], replay: _Replay, clock: _Clock, workers: int) -> None:
    """Prepare in worker processes, replay here in order; workers keep 2 chunks each queued."""
    pool = _Pool(workers)
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
    pool: _Pool,
    replay: _Replay,
    clock: _Clock,
) -> None:
    prepared = pool.collect(ticket)
    hashes = hashing.leaf_hashes([e.data for e in chunk])
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
