"""Evidence bundles: one file that proves an agent's action and its authority, offline.

    bundle = export(client, action_id="0197…")         # or export(client, index=42)
    Path("evidence.json").write_text(bundle.to_json())
    report = verify(Path("evidence.json").read_text(), TrustPolicy(log_key, witnesses, 2))
    print(report.summary())

Format `affidavit-bundle/1`: UTF-8 JSON (Bundle.to_json writes it with a 2-space indent, keys
in this order, non-ASCII characters as they are, a final newline)::

    {
      "format": "affidavit-bundle/1",
      "checkpoint": "<signed note: checkpoint body, blank line, the log's signature line and
                     the witnesses' cosignature/v1 lines>",
      "entries": [
        {
          "index": <0-based log index>,
          "leaf": "<standard padded base64 of the exact leaf bytes (a SignedStatement)>",
          "proof": ["<base64 of a 32-byte hash>", ...],
          "tlog_proof": "<the same as c2sp.org/tlog-proof@v1 text: index, proof, checkpoint>",
          "decoded": {"key_id": "<signing key id>", "statement": {<the statement, proto3 JSON>}}
        },
        ...
      ]
    }

entries ascend strictly by index; each proof is the RFC 9162 inclusion proof (from the leaf up)
of its leaf at its index in the tree of the checkpoint's size. tlog_proof repeats index, proof
and checkpoint as one C2SP tlog-proof, so each entry can be checked on its own by any tlog-proof
verifier (`affidavit verify-proof`); it must be exactly that text. "decoded" is the leaf decoded,
for a person reading the file beside the exact bytes (optional; when present it must be exactly
what the leaf decodes to, so it can never tell a story the leaf does not). The file makes no
claim of its own: which action it is about, who did what, on whose authority — everything
verify reports is read from leaves and a note whose bytes it has verified.

What verify reads is the file's content, not its layout: indentation, key order and line
endings (CRLF) may change, as editors and tools change them. Every value is held to one
spelling — base64 (in the JSON and in the note's signature lines) must be canonical, no key may
repeat or be unknown — so changing any value fails verification, except inside a signature line
by a key the verifier's policy does not know, which it ignores (as Go's note.Open does) and
only counts.

What export puts in (entries up to the checkpoint's size): the action's INTENT and OUTCOME and
every approval of it (Search action_id); the approval the INTENT names; every grant the INTENT
names and each one's parents up to the human grantor (Search statement_id); and every identity
event (register, rotate, revoke) about each signer of those statements, each grantee, the acting
agent's owner and, in turn, the admins who signed those events — back to the genesis admin,
self-registered at index 0 (Search subject). The checkpoint is the newest one the client's
policy accepts: with a witness quorum, the newest cosigned one.

What verify checks, offline, with only the log's and the witnesses' public keys:
  - the checkpoint note carries the log's signature and a quorum of witness cosignatures
    (client.verify.open_checkpoint), and no key signs it twice;
  - every entry's leaf hash, recomputed from its bytes, is included at its index in that
    checkpoint's tree;
  - the entries replay, in index order, through the log's own admission rules
    (statements.ingest.prepare and admit over a statements.state.LogState): schema and secret
    guard; each signature under the key its issuer held at that index, the key history derived
    from the bundled identity events starting with the genesis admin; each identity event signed
    by an admin known at that point; each grant by a human or by the grantee of its parent,
    within that parent (statements.scope.attenuation_problem); each approval by a human; the
    action's scope verdict recomputed (grantee is the actor, tool / operation / resource /
    access within the grant, client time inside every window of the chain, the chain rooted in
    a human, and where the policy decision was allow-if-approved, a human's approval bound to
    the action id and its exact parameter digest); the OUTCOME linked to the INTENT by leaf hash;
  - completeness: the bundle holds one action, its INTENT, every grant the INTENT names with all
    its parents, and the approval it names; and nothing else — an entry the action's evidence
    does not need is refused.

What it cannot check offline (a full replay, `affidavit audit`, can):
  - session chains: a bundle holds a few statements of each session, not the chain. A link is
    checked where two bundled statements of one session are adjacent (and a replayed or forked
    sequence is refused); a gap is accepted;
  - absence: that no revocation of a signer, grantor or approver lies between the entries
    shown, that a grant was not already used up (max uses: uses are counted over the bundled
    action only), that no OUTCOME or other approval exists when none is bundled. Nothing signed
    points to these entries, so a bundle stripped of one still verifies (without it in the
    story); export always includes them, and an honest log refuses statements signed with a
    retired key at ingest — only the full log proves it did. (A dropped key rotation is caught:
    the key that signed later statements is then unknown.);
  - the verdict the log recorded at ingest: it is not in the leaf; verify recomputes it from the
    bundled entries, which gives the log's verdict unless one of the above intervened.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from affidavit.client.client import Client
from affidavit.client.errors import NotFoundError, VerificationError
from affidavit.client.verify import TrustPolicy, Verified, check_inclusion, open_checkpoint
from affidavit.merkle import note, tlogproof
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.errors import MerkleError
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build, ingest
from affidavit.statements.errors import Rejection
from affidavit.statements.scope import MAX_CHAIN
from affidavit.statements.state import DictKV, KeyRecord, LogState, SessionHead, VerdictRecord
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from affidavit import merkle

FORMAT = "affidavit-bundle/1"
MAX_ENTRIES = 10_000
"""Most entries a bundle may hold (a hostile file cannot make verify work without bound)."""

_KEYS = ("format", "checkpoint", "entries")
_ENTRY_KEYS = ("index", "leaf", "proof", "tlog_proof")
_ACTION_ENTRY_KEYS = (*_ENTRY_KEYS, "admitted_ms")
"""An agent action's entry also carries the log's admission time, which its windows are
judged at (the log's word, like the verdict it recorded: not in the leaf)."""
_ENTRY_VIEW = "decoded"


class ExportError(NotFoundError):
    """The log does not hold what a bundle of this action needs (e.g. a grant it names)."""


@dataclass(frozen=True)
class BundleEntry:
    """One leaf, as the log holds it, with its index and inclusion proof."""

    index: int
    leaf: bytes
    proof: tuple[bytes, ...]
    admitted_ms: int = 0

    def tlog_proof(self, checkpoint: str) -> str:
        """This entry's proof as c2sp.org/tlog-proof@v1 text, to checkpoint."""
        return tlogproof.format_proof(self.index, self.proof, checkpoint)


@dataclass(frozen=True)
class Bundle:
    """A checkpoint note and entries proven included in it (see the module docstring)."""

    checkpoint: str
    entries: tuple[BundleEntry, ...]

    def to_json(self) -> str:
        """The bundle file's text: the only form verify accepts."""
        entries = []
        for e in self.entries:
            item: dict[str, Any] = {
                "index": e.index,
                "leaf": _b64(e.leaf),
                "proof": [_b64(h) for h in e.proof],
                "tlog_proof": e.tlog_proof(self.checkpoint),
            }
            if e.admitted_ms:
                item["admitted_ms"] = e.admitted_ms
            decoded = _decoded(e.leaf)
            if decoded is not None:
                item[_ENTRY_VIEW] = decoded
            entries.append(item)
        data = {"format": FORMAT, "checkpoint": self.checkpoint, "entries": entries}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Bundle:
        """Parse a bundle file strictly (its content: any layout); VerificationError says what
        is wrong with it."""
        try:
            data = json.loads(text, object_pairs_hook=_object)
        except ValueError as e:
            raise VerificationError(f"the bundle is not valid JSON: {e}") from None
        if not isinstance(data, dict) or set(data) != set(_KEYS):
            raise VerificationError(f"the bundle must be a JSON object with keys {list(_KEYS)}")
        if data["format"] != FORMAT:
            raise VerificationError(
                f"the bundle's format is {data['format']!r}; this verifier reads {FORMAT!r}"
            )
        if not isinstance(data["checkpoint"], str):
            raise VerificationError("the bundle's checkpoint must be a signed note (a string)")
        raw = data["entries"]
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_ENTRIES:
            raise VerificationError(f"the bundle's entries must be a list of 1-{MAX_ENTRIES}")
        entries = tuple(_entry(item, n) for n, item in enumerate(raw))
        for before, after in itertools.pairwise(entries):
            if after.index <= before.index:
                raise VerificationError(
                    f"entry {after.index} follows entry {before.index}: entries must ascend "
                    "strictly by index"
                )
        bundle = cls(data["checkpoint"], entries)
        for item, entry in zip(raw, entries, strict=True):
            if item["tlog_proof"] != entry.tlog_proof(bundle.checkpoint):
                raise VerificationError(
                    f"entry {entry.index}'s tlog_proof is not its index and proof to the "
                    "bundle's checkpoint"
                )
        return bundle


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise VerificationError(f"{what} must be a base64 string")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{what} is not valid base64") from None
    if _b64(data) != text:
        raise VerificationError(f"{what} is not canonical base64")
    return data


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise VerificationError(f"the bundle repeats the key {key!r}")
        out[key] = value
    return out


def _decoded(leaf: bytes) -> dict[str, Any] | None:
    """A leaf decoded for reading: its key id and statement (proto3 JSON); None when it does
    not decode (verify then says why)."""
    try:
        signed = pb.SignedStatement.FromString(leaf)
        statement = build.statement_of(leaf)
    except DecodeError:
        return None
    view = json_format.MessageToDict(statement, preserving_proto_field_name=True)
    return {"key_id": signed.key_id, "statement": view}


def _entry(item: object, n: int) -> BundleEntry:
    if not isinstance(item, dict) or set(item) - {_ENTRY_VIEW} not in (
        set(_ENTRY_KEYS),
        set(_ACTION_ENTRY_KEYS),
    ):
        raise VerificationError(
            f"entries[{n}] must be an object with keys {list(_ENTRY_KEYS)} (and admitted_ms, "
            f"for an agent action; optionally {_ENTRY_VIEW!r})"
        )
    index = item["index"]
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise VerificationError(f"entries[{n}].index must be a non-negative integer")
    leaf = _unb64(item["leaf"], f"entry {index}'s leaf")
    if not isinstance(item["proof"], list) or len(item["proof"]) > 64:
        raise VerificationError(f"entry {index}'s proof must be a list of at most 64 hashes")
    proof = tuple(_unb64(h, f"a hash in entry {index}'s proof") for h in item["proof"])
    if any(len(h) != merkle.HASH_SIZE for h in proof):
        raise VerificationError(f"entry {index}'s proof holds a hash that is not 32 bytes")
    if not isinstance(item["tlog_proof"], str):
        raise VerificationError(f"entry {index}'s tlog_proof must be a string")
    admitted_ms = item.get("admitted_ms", 0)
    if isinstance(admitted_ms, bool) or not isinstance(admitted_ms, int) or admitted_ms < 0:
        raise VerificationError(f"entry {index}'s admitted_ms must be Unix milliseconds")
    if _ENTRY_VIEW in item and item[_ENTRY_VIEW] != _decoded(leaf):
        raise VerificationError(
            f"entry {index}'s {_ENTRY_VIEW!r} is not what its leaf decodes to: the readable "
            "copy was edited (the leaf's bytes are the evidence)"
        )
    return BundleEntry(index, leaf, proof, admitted_ms)


# Export.


def export(client: Client, *, action_id: str | None = None, index: int | None = None) -> Bundle:
    """The evidence bundle of one action, by its action id or the index of its INTENT or OUTCOME.

    The proofs are to the newest checkpoint client.policy accepts (with a witness quorum, the
    newest cosigned one); the action must be in it. Needs an auditor credential (the client's
    token) to read entries. The bundle is verified before it is returned: VerificationError if
    what the log sent does not verify, ExportError if the log lacks what the bundle needs.
    """
    if (action_id is None) == (index is None):
        raise ValueError("give exactly one of action_id or index")
    verified = client.checkpoint()
    size = verified.checkpoint.size
    which = "newest cosigned checkpoint" if client.policy.quorum else "latest checkpoint"
    leaves: dict[int, bytes] = {}
    admitted: dict[int, int] = {}

    def fetch(i: int) -> pb.Statement:
        if i not in leaves:
            for entry in client.entries(i, i + 1):
                leaves[i] = entry.data
                admitted[i] = entry.admitted_ms
        return build.statement_of(leaves[i])

    def search(**criteria: str) -> list[int]:
        return [hit.index for hit in client.search(**criteria) if hit.index < size]

    if index is not None:
        if index >= size:
            wait = "; wait until witnesses cosign it" if client.policy.quorum else ""
            raise ExportError(f"entry {index} is beyond the {which} (size {size}){wait}")
        st = fetch(index)
        if st.WhichOneof("body") != "action":
            raise ExportError(f"entry {index} is {_kind(st)}, not an agent action")
        action_id = st.action.action_id
    assert action_id is not None

    intent: pb.AgentAction | None = None
    for i in search(action_id=action_id):
        st = fetch(i)
        if st.WhichOneof("body") == "action" and st.action.phase == pb.AgentAction.INTENT:
            intent = st.action
    if intent is None:
        raise ExportError(
            f"no INTENT of action {action_id} in the log up to the {which} (size {size})"
        )

    def by_id(statement_id: str, what: str) -> pb.Statement:
        found = search(statement_id=statement_id)
        if not found:
            raise ExportError(
                f"{what} {statement_id}, named by action {action_id}, is not in the log up to "
                f"size {size}: its evidence cannot be bundled"
            )
        return fetch(found[0])

    if intent.approval_id:
        by_id(intent.approval_id, "approval")
    for grant_id in intent.grant_ids:
        for _ in range(MAX_CHAIN):
            # A revocation of a grant of the chain is part of its story, whenever it came.
            for i in search(subject=grant_id):
                fetch(i)
            grant_id = by_id(grant_id, "grant").grant.parent_grant_id
            if not grant_id:
                break

    done: set[str] = set()
    todo = _principals(fetch(i) for i in list(leaves))
    while todo - done:
        identity = min(todo - done)
        done.add(identity)
        for i in search(subject=identity):
            event = fetch(i)
            todo.add(event.header.issuer)
            if identity == intent.actor.agent_id and event.identity.owner:
                todo.add(event.identity.owner)

    entries = []
    for i in sorted(leaves):
        proof = client.call(
            client.stub.GetInclusionProof, pb.GetInclusionProofRequest(index=i, tree_size=size)
        )
        leaf_hash = merkle.leaf_hash(leaves[i])
        if (proof.index, proof.tree_size, proof.leaf_hash) != (i, size, leaf_hash):
            raise VerificationError(f"the log sent a proof of another entry when asked for {i}")
        check_inclusion(leaf_hash, i, proof.hashes, verified.checkpoint)
        entries.append(BundleEntry(i, leaves[i], tuple(proof.hashes), admitted.get(i, 0)))
    bundle = Bundle(verified.note, tuple(entries))
    verify(bundle.to_json(), client.policy)
    return bundle


def _kind(st: pb.Statement) -> str:
    body = st.WhichOneof("body")
    if body == "action":
        return f"the {pb.AgentAction.Phase.Name(st.action.phase)} of action {st.action.action_id}"
    return {
        "identity": "an identity event",
        "grant": "a grant",
        "approval": "an approval",
        "session": "a session event",
        "grant_revocation": "a grant revocation",
    }.get(body or "", "an empty statement")


def _principals(statements: Iterable[pb.Statement]) -> set[str]:
    """Issuers of the non-identity statements and grantees of the grants."""
    out = set()
    for st in statements:
        body = st.WhichOneof("body")
        if body != "identity":
            out.add(st.header.issuer)
        if body == "grant":
            out.add(st.grant.grantee)
    return out


# Verification.


@dataclass(frozen=True)
class GrantLink:
    """One grant of an action's chain of authority."""

    grant_id: str
    index: int
    grantor: str
    grantor_kind: str
    grant: pb.Grant
    revoked_at: int | None = None
    revoked_by: str = ""


@dataclass(frozen=True)
class ApprovalInfo:
    """An approval in the bundle; problem is None when it is a human's approval bound to the
    action's id and exact parameter digest."""

    approval_id: str
    index: int
    approver: str
    approver_kind: str
    time_ms: int
    approval: pb.Approval
    named_by_action: bool
    problem: str | None


@dataclass(frozen=True)
class Report:
    """What a verified bundle proves: the action's story, and what was checked to prove it.

    verdict is the scope verdict recomputed offline (IN_SCOPE, OUT_OF_SCOPE, NO_GRANT); findings
    say in words why the action was not properly authorised, empty when it was.
    """

    action_id: str
    agent: str
    owner: str
    owner_kind: str
    intent: pb.AgentAction
    intent_index: int
    intent_time_ms: int
    outcome: pb.AgentAction | None
    outcome_index: int | None
    outcome_time_ms: int | None
    authority: tuple[GrantLink, ...]
    approvals: tuple[ApprovalInfo, ...]
    verdict: str
    verdict_reason: str
    findings: tuple[str, ...]
    checkpoint: Checkpoint
    witnesses: tuple[tuple[str, int], ...]
    quorum: int
    witnesses_known: int
    unknown_signatures: int
    entries: int
    identity_events: int
    key_rotations: int
    session_links: int
    genesis_admin: str

    @property
    def in_scope(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        """The story and the checks, in plain words."""
        a, op = self.intent, self.intent.operation
        who = f"agent {self.agent!r}"
        details = [x for x in (a.actor.agent_name, a.actor.agent_version, a.actor.model) if x]
        if details:
            who += f" ({', '.join(details)}: the producer's claim)"
        owner = f"{self.owner!r}" + (f" ({self.owner_kind})" if self.owner_kind else "")
        lines = [
            f"Action {self.action_id}: "
            + ("IN SCOPE" if self.in_scope else f"NOT AUTHORISED ({self.verdict})"),
            f"  Who:       {who}, owned by {owner if self.owner else 'no one named'}",
            f"  Did:       {op.tool_name} / {op.operation_name or '-'} "
            f"({pb.AccessKind.Name(op.access)}) on {op.resource}",
            f"  When:      {_utc(self.intent_time_ms)} by the agent's clock (INTENT, log index "
            f"{self.intent_index}); in the log by {self._witnessed_by()}",
            f"  Parameters: {_clip(op.parameters_json or '-')} (digest {op.parameters_digest}"
            + (f", {len(op.redactions)} secret(s) redacted" if op.redactions else "")
            + ")",
        ]
        if a.credential.kind or a.credential.key_id or a.credential.token_jti:
            c = a.credential
            lines.append(
                f"  Credential: {c.kind or '-'} {c.key_id or c.token_jti}"
                + (f" from {c.issuer}" if c.issuer else "")
            )
        lines.append(
            "  Authority: "
            + (
                "none (the action names no grant)"
                if not self.authority
                else "grant chain, human first:"
            )
        )
        for n, link in enumerate(self.authority, 1):
            g = link.grant
            lines.append(
                f"    {n}. grant {link.grant_id} (log index {link.index}) by {link.grantor!r} "
                f"({link.grantor_kind}) to {g.grantee!r}, ticket {g.ticket or '-'}"
                + (f", justification {g.justification!r}" if g.justification else "")
            )
            lines.append(f"       scope: {_scope(g)}")
            if link.revoked_at is not None:
                lines.append(
                    f"       REVOKED at log index {link.revoked_at} by {link.revoked_by!r}"
                )
        if a.principal_chain:
            lines.append(
                f"  Principal chain: {' -> '.join(a.principal_chain)} (checked against the "
                "grant chain at ingest)"
            )
        if a.authorization.policy_id or a.authorization.matched_rule:
            z = a.authorization
            lines.append(
                f"  Policy:    {z.policy_id or '-'} {z.policy_version} rule "
                f"{z.matched_rule or '-'} at {z.enforcement_point or '-'} (the producer's claim)"
            )
        for ap in self.approvals:
            d = pb.Approval.Decision.Name(ap.approval.decision)
            state = (
                f"bound to this action's parameters digest {ap.approval.parameters_digest}"
                if ap.problem is None
                else f"NOT VALID FOR THIS ACTION: {ap.problem}"
            )
            lines.append(
                f"  Approval:  {d} by {ap.approver!r} ({ap.approver_kind}), ticket "
                f"{ap.approval.ticket or '-'}, at {_utc(ap.time_ms)} (log index {ap.index}); "
                f"{state}" + (f"; comment {ap.approval.comment!r}" if ap.approval.comment else "")
            )
        if not self.approvals:
            lines.append("  Approval:  none")
        if self.outcome is None:
            lines.append("  Outcome:   none in this bundle (not recorded up to this checkpoint)")
        else:
            o = self.outcome.outcome
            parts = [pb.OutcomeStatus.Name(o.status)]
            if o.effect_ref:
                parts.append(f"effect {o.effect_ref}")
            if o.error_code:
                parts.append(f"error {o.error_code}")
            if o.result_digest:
                parts.append(f"result digest {o.result_digest}")
            lines.append(
                f"  Outcome:   {', '.join(parts)} at {_utc(self.outcome_time_ms or 0)} "
                f"(log index {self.outcome_index})"
            )
        for finding in self.findings:
            lines.append(f"  FINDING:   {finding}")
        cp = self.checkpoint
        quorum = (
            f"{len(self.witnesses)} valid cosignature(s); policy quorum {self.quorum} of "
            f"{self.witnesses_known} known witness(es)"
        )
        lines += [
            "Verified offline:",
            f"  - checkpoint of log {cp.origin!r}, size {cp.size}, root "
            f"{base64.b64encode(cp.root_hash).decode()}, signed by the log's key",
            "  - cosigned by "
            + (
                ", ".join(f"{name} at {_utc(t * 1000, ms=False)}" for name, t in self.witnesses)
                if self.witnesses
                else "no known witness"
            )
            + f" ({quorum})"
            + (
                f"; {self.unknown_signatures} signature line(s) by keys outside the policy ignored"
                if self.unknown_signatures
                else ""
            ),
            f"  - {self.entries} inclusion proofs: every entry's leaf hash recomputed from its "
            "bytes and proven at its index in that checkpoint",
            f"  - {self.entries} signatures, each under the key its signer held at that index; "
            f"the key history from {self.identity_events} identity event(s) "
            f"({self.key_rotations} key rotation(s)), back to the genesis admin "
            f"{self.genesis_admin!r} at index 0, each event signed by an admin known then",
            "  - every statement passes the log's admission rules (schema, secret guard, "
            "signer's kind) at its place in index order",
        ]
        if self.authority:
            lines.append(
                f"  - grant chain of {len(self.authority)}: each grant within its parent, "
                f"rooted in a human ({self.authority[0].grantor!r})"
            )
        lines.append(
            "  - scope recomputed (grantee is the actor; tool, operation, resource and access "
            "within the grant; the log's admission time inside every window of the chain, the "
            "agent's claimed time on the same side; approval where a grant or the agent's "
            f"decision required one, by a permitted approver): {self.verdict}"
            + (f" ({self.verdict_reason})" if self.verdict_reason else "")
        )
        for ap in self.approvals:
            if ap.named_by_action and ap.problem is None:
                lines.append(
                    f"  - approval by a human, bound to action {self.action_id} and "
                    f"parameters digest {ap.approval.parameters_digest}"
                )
        if self.outcome is not None:
            lines.append("  - OUTCOME linked to the INTENT by the INTENT's leaf hash")
        lines += [
            f"  - {self.session_links} session-chain link(s) between bundled statements",
            "Not verifiable offline (needs the full log: affidavit audit):",
            "  - that the signers' session chains are gap-free",
            "  - that no revocation or key rotation lies between the entries shown, that the "
            "grants were not used up (max uses), that no other OUTCOME or approval exists",
            "  - the verdict the log recorded at ingest (recomputed here from the bundle)",
        ]
        return "\n".join(lines)

    def _witnessed_by(self) -> str:
        if not self.witnesses:
            return "the checkpoint (no witness time)"
        name, t = min(self.witnesses, key=lambda w: w[1])
        return f"{_utc(t * 1000, ms=False)} ({name}'s cosignature)"


def _verdict(value: int) -> str:
    return pb.Verdict.Name(pb.Verdict.ValueType(value))


def _utc(time_ms: int, *, ms: bool = True) -> str:
    text = datetime.fromtimestamp(time_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return (text[:-3] if ms else text[:-7]) + " UTC"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _scope(g: pb.Grant) -> str:
    parts = [
        f"tools {', '.join(g.tools)}",
        f"resources {', '.join(g.resources)}",
        f"access {', '.join(pb.AccessKind.Name(k) for k in g.access)}",
    ]
    if g.operations:
        parts.insert(1, f"operations {', '.join(g.operations)}")
    if g.not_before_ms or g.not_after_ms:
        start = _utc(g.not_before_ms) if g.not_before_ms else "any time"
        end = _utc(g.not_after_ms) if g.not_after_ms else "no end"
        parts.append(f"valid {start} to {end}")
    if g.max_uses:
        parts.append(f"at most {g.max_uses} use(s)")
    return "; ".join(parts)


class _BundleState(LogState):
    """LogState over the bundled entries only.

    A bundle holds a few statements of each session, not the whole chain, so session() answers
    with the head the statement under admission claims (`claimed`) unless an earlier bundled
    statement of that session says otherwise: an adjacent statement must link to it by leaf
    hash, and a sequence at or below one already seen is refused as a replay or fork. A gap is
    accepted: only the full log can show it holds nothing.
    """

    def __init__(self) -> None:
        super().__init__(DictKV())
        self.claimed = SessionHead(0, b"")

    def known_session(self, issuer: str, session_id: str) -> SessionHead | None:
        return super().session(issuer, session_id)

    def session(self, issuer: str, session_id: str) -> SessionHead | None:
        known = self.known_session(issuer, session_id)
        if known is None or known.next_sequence < self.claimed.next_sequence:
            return self.claimed
        return known


def _no_key(_key_id: str) -> KeyRecord | None:
    return None


def describe(index: int, st: pb.Statement) -> str:
    return (
        f"entry {index} ({_kind(st)}, statement {st.header.statement_id} by {st.header.issuer!r})"
    )


def verify(bundle_text: str | bytes, policy: TrustPolicy) -> Report:
    """Verify a bundle file (its text, or its bytes as UTF-8) offline against the log's key and
    witness policy.

    Returns the Report of what it proves; raises VerificationError naming the first thing that
    fails (see the module docstring for every check, and for what needs the full log).
    """
    if isinstance(bundle_text, bytes):
        try:
            bundle_text = bundle_text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise VerificationError(f"the bundle is not UTF-8 text (byte {e.start})") from None
    bundle = Bundle.from_json(bundle_text)
    verified, witnesses, unknown = _open(bundle.checkpoint, policy)
    cp = verified.checkpoint
    hashes = {}
    for entry in bundle.entries:
        hashes[entry.index] = merkle.leaf_hash(entry.leaf)
        check_inclusion(hashes[entry.index], entry.index, entry.proof, cp)

    prepared: dict[int, ingest.Prepared] = {}
    admitted = {entry.index: entry.admitted_ms for entry in bundle.entries}
    for entry in bundle.entries:
        try:
            prepared[entry.index] = ingest.prepare(entry.leaf, _no_key)
        except Rejection as r:
            raise VerificationError(f"entry {entry.index} is not a valid statement: {r}") from None
    statements = {i: p.statement for i, p in prepared.items()}
    action_id, intent_index = _subject(statements)
    intent = statements[intent_index].action
    _check_relevant(statements, intent)

    state = _BundleState()
    verdicts: dict[int, VerdictRecord] = {}
    links = 0
    first = bundle.entries[0].index
    if first != 0:
        raise VerificationError(
            f"the bundle starts at entry {first}, not with the log's genesis entry (index 0) "
            "that registers the first admin: the signers' keys cannot be traced to it"
        )
    for i, p in prepared.items():
        h = p.statement.header
        known = state.known_session(h.issuer, h.session_id)
        state.claimed = SessionHead(h.sequence, h.previous_hash)
        try:
            verdict = ingest.admit(p, state, admitted[i] or None)
        except Rejection as r:
            raise VerificationError(
                f"{describe(i, p.statement)} is not valid at that point of the log: {r}"
            ) from None
        if known is not None and known.next_sequence == h.sequence:
            links += 1
        if verdict is not None:
            verdicts[i] = verdict
        state.apply(i, hashes[i], p.statement, verdict)

    return _report(
        statements,
        state,
        verdicts,
        action_id,
        intent_index,
        policy,
        verified,
        witnesses,
        unknown,
        links,
    )


def _open(text: str, policy: TrustPolicy) -> tuple[Verified, tuple[tuple[str, int], ...], int]:
    """The checkpoint under the policy, the witnesses' (name, time) and unknown lines' count."""
    try:
        body, lines = note.parse_note(text)
    except MerkleError as e:
        raise VerificationError(f"the bundle's checkpoint note is malformed: {e}") from None
    if body + "\n" + "".join(s.line() for s in lines) != text:
        # Base64 (like Go's) ignores the unused low bits of a last character: one signature
        # has several spellings. Only the canonical one is accepted, so no byte is free.
        raise VerificationError("the checkpoint note's signature lines are not canonical base64")
    keys = [(s.name, s.key_hash) for s in lines]
    for key in keys:
        if keys.count(key) > 1:
            raise VerificationError(
                f"the checkpoint note has {keys.count(key)} signature lines by key {key[0]}"
            )
    verified = open_checkpoint(text, policy)
    opened = note.open_note(text, [policy.log_verifier(), *policy.witness_verifiers()])
    witnesses = tuple((s.name, s.timestamp) for s in opened.signatures if s.timestamp is not None)
    return verified, witnesses, len(opened.unverified_signatures)


def _subject(statements: dict[int, pb.Statement]) -> tuple[str, int]:
    """The one action the bundle is about, and the index of its INTENT."""
    actions = {i: st.action for i, st in statements.items() if st.WhichOneof("body") == "action"}
    ids = sorted({a.action_id for a in actions.values()})
    if len(ids) != 1:
        raise VerificationError(
            "the bundle must hold the statements of one action; it holds "
            + (f"{len(ids)}: {', '.join(ids)}" if ids else "none")
        )
    intents = [i for i, a in actions.items() if a.phase == pb.AgentAction.INTENT]
    if not intents:
        raise VerificationError(f"the INTENT of action {ids[0]} is not in the bundle")
    return ids[0], intents[0]


def needed_entries(statements: dict[int, pb.Statement], intent: pb.AgentAction) -> set[int]:
    """The indexes of the statements an action's evidence needs: its INTENT and OUTCOME, its
    approvals, every grant it names with their parents (and their revocations), and the
    identity events of everyone
    who signed or received those (and of the agent's owner), back to the admins who signed
    them. VerificationError if a grant or the approval the action names is missing."""
    grants = {
        st.header.statement_id: st.grant
        for st in statements.values()
        if st.WhichOneof("body") == "grant"
    }
    chain: set[str] = set()
    for grant_id in intent.grant_ids:
        child = f"action {intent.action_id}"
        while grant_id and grant_id not in chain:
            if grant_id not in grants:
                raise VerificationError(f"grant {grant_id}, named by {child}, is not in the bundle")
            chain.add(grant_id)
            child, grant_id = f"grant {grant_id}", grants[grant_id].parent_grant_id
    approvals = {
        st.header.statement_id: st.approval
        for st in statements.values()
        if st.WhichOneof("body") == "approval"
    }
    if intent.approval_id and intent.approval_id not in approvals:
        raise VerificationError(
            f"approval {intent.approval_id}, named by action {intent.action_id}, is not in "
            "the bundle"
        )

    def needed(st: pb.Statement) -> bool:
        body = st.WhichOneof("body")
        if body == "action":
            return st.action.action_id == intent.action_id
        if body == "grant":
            return st.header.statement_id in chain
        if body == "grant_revocation":  # a withdrawn grant of the chain: part of its story
            return st.grant_revocation.grant_id in chain
        if body == "approval":
            return (
                st.approval.action_id == intent.action_id
                or st.header.statement_id == intent.approval_id
            )
        return False

    core = {i for i, st in statements.items() if needed(st)}
    relevant = _principals(statements[i] for i in core)
    events = {i: st for i, st in statements.items() if st.WhichOneof("body") == "identity"}
    relevant |= {
        e.identity.owner
        for e in events.values()
        if e.identity.identity_id == intent.actor.agent_id and e.identity.owner
    }
    while True:
        more = {e.header.issuer for e in events.values() if e.identity.identity_id in relevant}
        if more <= relevant:
            break
        relevant |= more
    return core | {i for i, e in events.items() if e.identity.identity_id in relevant}


def _check_relevant(statements: dict[int, pb.Statement], intent: pb.AgentAction) -> None:
    """Everything the action's evidence needs is here, and nothing else (statements other
    than identity events are named first: an unneeded grant brings its grantor's events)."""
    needed = needed_entries(statements, intent)
    unneeded = [i for i in statements if i not in needed]
    unneeded.sort(key=lambda i: (statements[i].WhichOneof("body") == "identity", i))
    for i in unneeded:
        raise VerificationError(
            f"{describe(i, statements[i])} is not part of action {intent.action_id}'s evidence"
        )


def _report(
    statements: dict[int, pb.Statement],
    state: LogState,
    verdicts: dict[int, VerdictRecord],
    action_id: str,
    intent_index: int,
    policy: TrustPolicy,
    verified: Verified,
    witnesses: tuple[tuple[str, int], ...],
    unknown: int,
    links: int,
) -> Report:
    intent_st = statements[intent_index]
    intent = intent_st.action
    outcome_index = next(
        (
            i
            for i, st in statements.items()
            if st.WhichOneof("body") == "action" and st.action.phase == pb.AgentAction.OUTCOME
        ),
        None,
    )
    agent = state.identity(intent.actor.agent_id)
    assert agent is not None  # admit checked the issuer, and the actor is the issuer
    owner = state.identity(agent.owner) if agent.owner else None

    def kind(identity_id: str) -> str:
        record = state.identity(identity_id)
        return (
            ""
            if record is None
            else pb.IdentityKind.Name(pb.IdentityKind.ValueType(record.kind)).lower()
        )

    verdict = verdicts[intent_index]
    findings: list[str] = []
    if verdict.verdict != pb.IN_SCOPE:
        findings.append(
            f"the action is {_verdict(verdict.verdict)}"
            f" ({verdict.reason}) under the grants it names"
        )
    if outcome_index is not None:
        ov = verdicts[outcome_index]
        if ov.verdict != verdict.verdict or ov.reason != verdict.reason:
            findings.append(f"the OUTCOME is {_verdict(ov.verdict)} ({ov.reason})")

    chain_top = verdict.grant_id or (intent.grant_ids[0] if intent.grant_ids else "")
    links_out: list[GrantLink] = []
    while chain_top:
        record = state.grant(chain_top)
        assert record is not None  # _check_relevant: every named grant and parent is here
        links_out.append(
            GrantLink(
                chain_top,
                record.index,
                record.issuer,
                kind(record.issuer),
                record.decoded(),
                record.revoked_at,
                record.revoked_by,
            )
        )
        chain_top = record.decoded().parent_grant_id

    approvals = []
    for i, st in statements.items():
        if st.WhichOneof("body") != "approval":
            continue
        ap = st.approval
        problem = None
        if ap.action_id != action_id:
            problem = f"it is for action {ap.action_id}"
        elif ap.agent_id != intent.actor.agent_id:
            problem = f"it is for agent {ap.agent_id!r}"
        elif ap.parameters_digest != intent.operation.parameters_digest:
            problem = (
                f"it approves parameters digest {ap.parameters_digest}, the action's is "
                f"{intent.operation.parameters_digest}"
            )
        elif ap.decision == pb.Approval.REJECT:
            problem = "it rejects the action"
        named = st.header.statement_id == intent.approval_id
        if named and problem is not None:
            findings.append(f"the approval the action names is not valid for it: {problem}")
        approvals.append(
            ApprovalInfo(
                st.header.statement_id,
                i,
                st.header.issuer,
                kind(st.header.issuer),
                st.header.client_time_ms,
                ap,
                named,
                problem,
            )
        )

    events = [st.identity for st in statements.values() if st.WhichOneof("body") == "identity"]
    outcome_st = statements[outcome_index] if outcome_index is not None else None
    genesis = statements[0].header.issuer
    return Report(
        action_id=action_id,
        agent=intent.actor.agent_id,
        owner=agent.owner,
        owner_kind="" if owner is None else kind(owner.identity_id),
        intent=intent,
        intent_index=intent_index,
        intent_time_ms=intent_st.header.client_time_ms,
        outcome=None if outcome_st is None else outcome_st.action,
        outcome_index=outcome_index,
        outcome_time_ms=None if outcome_st is None else outcome_st.header.client_time_ms,
        authority=tuple(reversed(links_out)),
        approvals=tuple(approvals),
        verdict=_verdict(verdict.verdict),
        verdict_reason=verdict.reason,
        findings=tuple(findings),
        checkpoint=verified.checkpoint,
        witnesses=witnesses,
        quorum=policy.quorum,
        witnesses_known=len(policy.witness_keys),
        unknown_signatures=unknown,
        entries=len(statements),
        identity_events=len(events),
        key_rotations=sum(e.op == pb.IdentityEvent.ROTATE_KEY for e in events),
        session_links=links,
        genesis_admin=genesis,
    )
