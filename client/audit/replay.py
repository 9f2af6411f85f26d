"""The stateful half of an audit: each entry admitted and applied in log order over the state
the log itself rebuilds, its recorded verdict compared with the recomputed one, and findings
counted as they are made. A Replay is everything an audit carries from one entry to the next:
what a position file (position.py) holds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from affidavit.client.audit.report import Finding
from affidavit.client.audit.worker import Prepared
from affidavit.merkle.compact import CompactRange
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import ingest, signing
from affidavit.statements.errors import Rejection
from affidavit.statements.state import DictKV, LogState, VerdictRecord


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


class Findings:
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

    def copy(self) -> Findings:
        return Findings(self.limit, self.listed, self.counts)


@dataclass
class Replay:
    """Everything an audit carries from one entry to the next (what a position file holds)."""

    checkpoint_note: str
    findings: Findings
    next_index: int = 0
    compact: CompactRange = field(default_factory=CompactRange)
    kv: DictKV = field(default_factory=DictKV)
    keys: dict[str, bytes] = field(default_factory=dict)
    open_intents: dict[tuple[str, str], int] = field(default_factory=dict)
    """Each INTENT without an OUTCOME so far: (agent, action id) -> its index."""
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
        action = statement.action
        intent = self.state.intent(action.actor.agent_id, action.action_id)
        return None if intent is None else (intent.verdict, intent.reason)

    def _tally(
        self,
        index: int,
        statement: pb.Statement,
        verdict: VerdictRecord | None,
        intent_verdict: tuple[int, str] | None,
    ) -> None:
        if verdict is None:  # not an action (admit() gives every action a verdict, and only them)
            body = str(statement.WhichOneof("body"))
            self.counts[body] = self.counts.get(body, 0) + 1  # sessions: counted if there are any
            return
        action = statement.action
        if action.phase == pb.AgentAction.INTENT:
            self.counts["intent"] += 1
            self.open_intents[action.actor.agent_id, action.action_id] = index
        else:
            self.counts["outcome"] += 1
            self.open_intents.pop((action.actor.agent_id, action.action_id), None)
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

    def closing_findings(self, size: int, root_hash: bytes) -> Findings:
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
        for (agent_id, action_id), index in sorted(
            self.open_intents.items(), key=lambda item: item[1]
        ):
            out.add(index, "missing-outcome", f"{agent_id}'s action {action_id} has no OUTCOME")
        return out
