"""The README's story in a real log, with a real console beside it, for the console's tests.

Alice lets a coding agent open pull requests on acme's repositories, approves one pull
request's exact parameters, the agent opens it, then tries something out of scope; a witness
cosigns the end. `story` is a module-scoped fixture: import it into a test module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from affidavit.client.actor import Actor
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.merkle import keys, note
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey

from tests.consoleproc import ConsoleProcess, MountedConsole
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess

PR = {"repo": "acme/web", "title": "Fix login redirect", "head": "fix-login", "base": "main"}
COMMIT = "commit:3f2a9c1e"


@dataclass
class Story:
    server: ServerProcess
    console: ConsoleProcess | MountedConsole
    witness_signer: str
    witness_key: str
    grant_id: str
    approval_id: str
    pr_action: str
    stray_action: str
    session_id: str
    agent: IdentityKey | None = None
    """code-agent's key, for a test that records more of its actions."""

    def cosign(self) -> None:
        latest = self.server.public_stub.GetCheckpoint(
            pb.GetCheckpointRequest(), timeout=RPC_TIMEOUT
        )
        body, _ = note.parse_note(latest.note)
        self.server.public_stub.AddCosignature(
            pb.AddCosignatureRequest(note=note.sign(body, self.witness_signer)),
            timeout=RPC_TIMEOUT,
        )


def tell(server: ServerProcess, witness_key: str) -> Story:
    """Record the README's story in server's log; the witness cosigns its end."""
    policy = TrustPolicy(server.verifier_key, (witness_key,), 0)
    client = Client(server.address, policy, token=server.auditor_token)
    admin = Actor(client, IdentityKey.load(server.data_dir / "admin.key"))
    alice_k, agent_k = IdentityKey.generate("alice@example.com"), IdentityKey.generate("code-agent")
    admin.register("alice@example.com", pb.HUMAN, alice_k.public_key, display_name="Alice")
    admin.register("code-agent", pb.AGENT, agent_k.public_key, owner="alice@example.com")
    session_id = uuid7()
    alice, agent = Actor(client, alice_k), Actor(client, agent_k, session_id=session_id)
    grant = alice.grant(
        "code-agent",
        tools=["github.*"],
        resources=["repo:acme/*"],
        access=[pb.CREATE, pb.READ],
        ticket="CHG-1042",
    )
    pr_action = uuid7()
    approval = alice.approve(pr_action, PR, agent_id="code-agent", ticket="CHG-1042")
    with agent.action(
        "github.create_pull_request",
        "repo:acme/web",
        pb.CREATE,
        PR,
        grant_ids=[grant.statement_id],
        action_id=pr_action,
        approval_id=approval.statement_id,
        decision=pb.ALLOW_IF_APPROVED,
    ) as act:
        act.effect_ref = COMMIT
    with agent.action(
        "shell.exec",
        "host:prod-db",
        pb.EXECUTE,
        {"cmd": "ls"},
        grant_ids=[grant.statement_id],
        enforce=False,  # record the attempt and let it run: the console must show it
    ) as stray:
        pass
    assert stray.intent_recorded is not None
    assert stray.intent_recorded.receipt.verdict == "OUT_OF_SCOPE"
    client.close()
    return Story(
        server,
        ConsoleProcess(server.address),
        "",
        witness_key,
        grant.statement_id,
        approval.statement_id,
        pr_action,
        stray.action_id,
        session_id,
        agent_k,
    )


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    signer, verifier = keys.generate_key("witness-1.example", keys.ALG_COSIGNATURE_V1)
    factory = ServerFactory(tmp_path_factory.mktemp("console"))
    try:
        server = factory("--witness-key", verifier, entry_format="statements")
        s = tell(server, verifier)
        s.witness_signer = signer
        s.cosign()
        s.console.start()
        yield s
        s.console.stop()
    finally:
        factory.cleanup()
