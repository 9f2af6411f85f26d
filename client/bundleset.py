"""Evidence for several actions at once: one bundle file, one witnessed checkpoint, one shared
authority chain.

    b = export_set(client, ["0197…", "0197…"])         # e.g. every action of a session
    reports = verify_set(b.to_json(), policy)          # one bundle.Report per action

The file is an ordinary evidence bundle (client/bundle.py: the same format, the same checks on
the checkpoint and on every inclusion proof) whose entries are the union of the actions'
evidence: each grant, approval and identity event the actions share appears once, proven once,
under the one checkpoint. verify_set splits it by action — the entries each action's evidence
needs (bundle.needed_entries) — and verifies each part with bundle.verify, so every action
gets exactly the checks and the report a bundle of its own would; an entry that is part of no
action's evidence is refused, as it is in a single bundle. A single-action bundle is a set of
one: verify_set reads both.
"""

from __future__ import annotations

from collections.abc import Iterable

from affidavit.client import bundle
from affidavit.client.bundle import Bundle, BundleEntry, ExportError, Report
from affidavit.client.client import Client
from affidavit.client.errors import VerificationError
from affidavit.client.proven import fetch_proven
from affidavit.client.verify import TrustPolicy
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import schema
from affidavit.statements.errors import Rejection

MAX_ACTIONS = 1000
"""Most actions one set may hold (each is verified on its own: bounded work)."""


def export_set(client: Client, action_ids: Iterable[str]) -> Bundle:
    """One bundle with the evidence of every action named, proven in one checkpoint (the
    newest the client's policy accepts). Verified before it is returned (verify_set)."""
    ids = sorted(set(action_ids))
    if not ids:
        raise ExportError("no actions to bundle")
    if len(ids) > MAX_ACTIONS:
        raise ExportError(f"{len(ids)} actions; a bundle holds at most {MAX_ACTIONS}")
    leaves: dict[int, bytes] = {}
    admitted: dict[int, int] = {}  # an action's admission time, which its windows are judged at
    for action_id in ids:
        # Every agent's action by that id (an action is its agent's action id).
        for agent_id in bundle.agents_of(client, action_id):
            for entry in bundle.export(client, action_id=action_id, agent_id=agent_id).entries:
                leaves[entry.index] = entry.leaf
                admitted[entry.index] = entry.admitted_ms
    verified = client.checkpoint()
    if max(leaves) >= verified.checkpoint.size:
        raise ExportError("the log's trusted checkpoint went back while exporting; try again")
    entries = []
    for proven in fetch_proven(client, leaves, verified):
        if proven.leaf != leaves[proven.index]:
            raise VerificationError(f"the log sent two different entries at {proven.index}")
        entries.append(
            BundleEntry(proven.index, proven.leaf, proven.proof, admitted.get(proven.index, 0))
        )
    result = Bundle(verified.note, tuple(entries))
    verify_set(result.to_json(), client.policy)
    return result


def verify_set(bundle_text: str | bytes, policy: TrustPolicy) -> tuple[Report, ...]:
    """Verify a bundle of one or more actions offline; one Report per action, by agent and
    action id.
    Raises VerificationError naming the first thing that fails."""
    whole = Bundle.from_json(bundle_text)
    statements: dict[int, pb.Statement] = {}
    for entry in whole.entries:
        try:
            statements[entry.index] = schema.decode(entry.leaf)[1]
        except Rejection as r:
            raise VerificationError(f"entry {entry.index} is not a valid statement: {r}") from None
    intents = {
        (st.action.actor.agent_id, st.action.action_id): st.action
        for st in statements.values()
        if st.WhichOneof("body") == "action" and st.action.phase == pb.AgentAction.INTENT
    }
    if not intents:
        raise VerificationError("the bundle holds no action's INTENT")
    if len(intents) > MAX_ACTIONS:
        raise VerificationError(f"the bundle holds {len(intents)} actions; at most {MAX_ACTIONS}")
    used: set[int] = set()
    reports = []
    for action in sorted(intents):
        needed = bundle.needed_entries(statements, intents[action])
        used |= needed
        part = Bundle(whole.checkpoint, tuple(e for e in whole.entries if e.index in needed))
        reports.append(bundle.verify(part.to_json(), policy))
    for index in sorted(set(statements) - used):
        raise VerificationError(
            f"{bundle.describe(index, statements[index])} is part of no bundled action's evidence"
        )
    return tuple(reports)
