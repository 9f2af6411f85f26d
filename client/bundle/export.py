"""Exporting the evidence bundle of one action from a log (what goes in: the package
docstring)."""

from __future__ import annotations

from affidavit.client.bundle.file import Bundle, BundleEntry
from affidavit.client.bundle.report import statement_kind
from affidavit.client.bundle.verify import principals, verify
from affidavit.client.client import Client
from affidavit.client.errors import ClientError, NotFoundError, VerificationError
from affidavit.client.verify import check_inclusion
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.scope import MAX_CHAIN

from affidavit import merkle


class ExportError(NotFoundError):
    """The log does not hold what a bundle of this action needs (e.g. a grant it names)."""


class AmbiguousActionError(ClientError):
    """An action id without its agent where several agents recorded an action with that id:
    the question names no one action. agents: theirs, sorted (each names one action)."""

    def __init__(self, action_id: str, agents: list[str]) -> None:
        super().__init__(
            f"{len(agents)} agents recorded an action {action_id} ({', '.join(agents)}): "
            "name the agent, or give the index of its INTENT"
        )
        self.action_id = action_id
        self.agents = agents


def agents_of(client: Client, action_id: str) -> list[str]:
    """The agents that recorded an INTENT with this action id (an action is its agent's action
    id: several agents may use one), sorted."""
    return sorted(
        {
            hit.issuer  # an action's issuer is its actor (the log's admission checks it)
            for hit in client.search(action_id=action_id)
            if hit.kind == "action" and hit.phase == pb.AgentAction.INTENT
        }
    )


def export(
    client: Client,
    *,
    action_id: str | None = None,
    index: int | None = None,
    agent_id: str | None = None,
) -> Bundle:
    """The evidence bundle of one action, by its action id or the index of its INTENT or OUTCOME.

    An action is its agent's action id: agent_id names the agent when several recorded an
    action with that id (AmbiguousActionError otherwise, naming them). The proofs are to the
    newest checkpoint client.policy accepts (with a witness quorum, the newest cosigned one);
    the action must be in it. Needs an auditor credential (the client's token) to read entries. The
    bundle is verified before it is returned: VerificationError if what the log sent does not
    verify, ExportError if the log lacks what the bundle needs.
    """
    if (action_id is None) == (index is None):
        raise ValueError("give exactly one of action_id or index")
    verified = client.checkpoint()
    size = verified.checkpoint.size
    which = "newest cosigned checkpoint" if client.policy.quorum else "latest checkpoint"
    read: dict[int, bytes] = {}
    admitted: dict[int, int] = {}
    kept: set[int] = set()  # what goes in the bundle, of what was read

    def peek(i: int) -> pb.Statement:
        if i not in read:
            for entry in client.entries(i, i + 1):
                read[i] = entry.data
                admitted[i] = entry.admitted_ms
        return build.statement_of(read[i])

    def fetch(i: int) -> pb.Statement:
        kept.add(i)
        return peek(i)

    def search(**criteria: str) -> list[int]:
        return [hit.index for hit in client.search(**criteria) if hit.index < size]

    if index is not None:
        if index >= size:
            wait = "; wait until witnesses cosign it" if client.policy.quorum else ""
            raise ExportError(f"entry {index} is beyond the {which} (size {size}){wait}")
        st = peek(index)
        if st.WhichOneof("body") != "action":
            raise ExportError(f"entry {index} is {statement_kind(st)}, not an agent action")
        action_id, agent_id = st.action.action_id, st.action.actor.agent_id
    assert action_id is not None

    about = search(action_id=action_id)
    intents = {
        a.actor.agent_id: a
        for a in (peek(i).action for i in about if peek(i).WhichOneof("body") == "action")
        if a.phase == pb.AgentAction.INTENT and agent_id in (None, a.actor.agent_id)
    }
    whose = f"{agent_id}'s action" if agent_id is not None else "action"
    if not intents:
        raise ExportError(
            f"no INTENT of {whose} {action_id} in the log up to the {which} (size {size})"
        )
    if len(intents) > 1:
        raise AmbiguousActionError(action_id, sorted(intents))
    (intent,) = intents.values()
    action = (intent.actor.agent_id, action_id)
    for i in about:  # its INTENT, OUTCOME and approvals; not another agent's action by that id
        st = peek(i)
        body = st.WhichOneof("body")
        if (body == "action" and (st.action.actor.agent_id, action_id) == action) or (
            body == "approval" and (st.approval.agent_id, action_id) == action
        ):
            kept.add(i)

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
    todo = principals(peek(i) for i in sorted(kept))
    while todo - done:
        identity = min(todo - done)
        done.add(identity)
        for i in search(subject=identity):
            event = fetch(i)
            todo.add(event.header.issuer)
            if identity == intent.actor.agent_id and event.identity.owner:
                todo.add(event.identity.owner)

    leaves = {i: read[i] for i in kept}
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
