"""Verifying a bundle offline: the checkpoint under the trust policy, every inclusion proof,
and a replay of the bundled entries through the log's own admission rules (what is checked
and what cannot be: the package docstring)."""

from __future__ import annotations

from collections.abc import Iterable

from affidavit.client.bundle.file import Bundle
from affidavit.client.bundle.report import Report, build_report, describe
from affidavit.client.errors import VerificationError
from affidavit.client.verify import TrustPolicy, Verified, check_inclusion, open_checkpoint
from affidavit.merkle import note
from affidavit.merkle.errors import MerkleError
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import ingest
from affidavit.statements.errors import Rejection
from affidavit.statements.state import DictKV, KeyRecord, LogState, SessionHead, VerdictRecord

from affidavit import merkle


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


def verify(bundle_text: str | bytes, policy: TrustPolicy) -> Report:
    """Verify a bundle file (its text, or its bytes as UTF-8) offline against the log's key and
    witness policy.

    Returns the Report of what it proves; raises VerificationError naming the first thing that
    fails (see the module docstring for every check, and for what needs the full log).
    """
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

    return build_report(
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
    """The one action the bundle is about (an action is its agent's action id), and the
    index of its INTENT."""
    actions = {i: st.action for i, st in statements.items() if st.WhichOneof("body") == "action"}
    pairs = sorted({(a.actor.agent_id, a.action_id) for a in actions.values()})
    if len(pairs) != 1:
        raise VerificationError(
            "the bundle must hold the statements of one action; it holds "
            + (f"{len(pairs)}: {', '.join(f'{a} {i}' for a, i in pairs)}" if pairs else "none")
        )
    intents = [i for i, a in actions.items() if a.phase == pb.AgentAction.INTENT]
    if not intents:
        raise VerificationError(
            f"the INTENT of {pairs[0][0]}'s action {pairs[0][1]} is not in the bundle"
        )
    return pairs[0][1], intents[0]


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

    action = (intent.actor.agent_id, intent.action_id)  # another agent's is another action

    def needed(st: pb.Statement) -> bool:
        body = st.WhichOneof("body")
        if body == "action":
            return (st.action.actor.agent_id, st.action.action_id) == action
        if body == "grant":
            return st.header.statement_id in chain
        if body == "grant_revocation":  # a withdrawn grant of the chain: part of its story
            return st.grant_revocation.grant_id in chain
        if body == "approval":
            return (st.approval.agent_id, st.approval.action_id) == action or (
                st.header.statement_id == intent.approval_id
            )
        return False

    core = {i for i, st in statements.items() if needed(st)}
    relevant = principals(statements[i] for i in core)
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


def principals(statements: Iterable[pb.Statement]) -> set[str]:
    """Whose identity events a bundle holds: the issuers of the statements that are not identity
    events, and the grantees of the grants."""
    out = set()
    for st in statements:
        body = st.WhichOneof("body")
        if body != "identity":
            out.add(st.header.issuer)
        if body == "grant":
            out.add(st.grant.grantee)
    return out
