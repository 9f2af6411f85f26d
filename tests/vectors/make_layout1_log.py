"""Make tests/vectors/layout1-log.tar.gz: a LevelDB log and an audit position written by
affidavit cc86bae (statement state layout 1, position format version 2).

Run from a checkout of cc86bae, with its own venv:

    git worktree add --detach ../base cc86bae && cd ../base
    python3.11 -m venv .venv && .venv/bin/pip install -e '.[dev]'
    .venv/bin/python <this file> <this repo>/tests/vectors/layout1-log.tar.gz

What the log holds (tests/test_layout1_fixture.py relies on it): admin; alice (human); bot-a
and bot-b (agents), each with a grant from alice; alice's REJECT of bot-a's action
"rejected-1", then bot-a's INTENT of it (OUT_OF_SCOPE approval-rejected); alice's REJECT of
bot-b's action "awaited-2", not yet acted on; bot-a's action "call_1", INTENT and OUTCOME;
bot-b's INTENT "call_2". The audit position (audit.position) is saved there. Then bot-b's
OUTCOME of "call_2"; alice's REJECT naming bot-b's action "call_3", then bot-a's INTENT
"call_3" (layout 1: OUT_OF_SCOPE approval-rejected, the REJECT counted for every agent's
action by the id). The agents' and alice's keys are in keys/, the log's in the data
directory, as `affidavit serve` left them.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

from affidavit.client.audit import audit
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.merkle.hashing import leaf_hash
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey

from tests.serverproc import ORIGIN, RPC_TIMEOUT, ServerProcess
from tests.test_authority import World, approval, intent


def _intent(w: World, agent: str, body: pb.AgentAction) -> bytes:
    leaf = w.sign(agent, body)
    w.server.stub.Append(pb.AppendRequest(entry=leaf), timeout=RPC_TIMEOUT)
    w.signers[agent].advance(leaf)
    return leaf


def _outcome(w: World, agent: str, intent_leaf: bytes) -> None:
    out = pb.AgentAction()
    out.CopyFrom(build.statement_of(intent_leaf).action)
    out.phase = pb.AgentAction.OUTCOME
    out.intent_leaf_hash = leaf_hash(intent_leaf)
    out.outcome.status = pb.OK
    _intent(w, agent, out)


def main(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "layout1-log"
        server = ServerProcess(root / "data", entry_format="statements", origin=ORIGIN)
        server.start()
        try:
            w = World(server)
            admin = IdentityKey.load(server.data_dir / "admin.key")
            w.signers["admin"] = build.SessionSigner(admin, session_id=uuid7())
            w.identity("alice", pb.HUMAN)
            grants = {}
            for agent in ("bot-a", "bot-b"):
                w.identity(agent, pb.AGENT)
                grants[agent] = w.grant("alice", agent)
            w.send("alice", approval("rejected-1", "bot-a", decision=pb.Approval.REJECT))
            _intent(w, "bot-a", intent("bot-a", [grants["bot-a"]], action_id="rejected-1"))
            w.send("alice", approval("awaited-2", "bot-b", decision=pb.Approval.REJECT))
            done = _intent(w, "bot-a", intent("bot-a", [grants["bot-a"]], action_id="call_1"))
            _outcome(w, "bot-a", done)
            open_leaf = _intent(w, "bot-b", intent("bot-b", [grants["bot-b"]], action_id="call_2"))
            policy = TrustPolicy(server.verifier_key)
            token = server.auditor_token
            with Client(server.address, policy, token=token, timeout=60) as client:
                audit(client, resume=root / "audit.position", workers=0)
            _outcome(w, "bot-b", open_leaf)
            w.send("alice", approval("call_3", "bot-b", decision=pb.Approval.REJECT))
            _intent(w, "bot-a", intent("bot-a", [grants["bot-a"]], action_id="call_3"))
        finally:
            server.stop()
        keys = root / "keys"
        keys.mkdir()
        for name in ("alice", "bot-a", "bot-b"):
            (keys / f"{name}.key").write_text(w.key(name).text())
        with tarfile.open(target, "w:gz") as tar:
            tar.add(root, arcname="layout1-log")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
