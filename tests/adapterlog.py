"""A real statements log for the adapter tests, and what the investigator reads back from it.

    log = AdapterLog.start(factory, tmp)          # `affidavit serve`, an admin, a human (alice)
    agent = log.agent("lc-agent")                 # a fresh agent identity, its own session
    grant_id = log.grant("lc-agent", tools=[...], resources=[...], access=[...])
    ... run the framework ...
    trail = log.trail("lc-agent")                 # its actions, read with the auditor token

Every read goes through the auditor's own Client (verifying receipts and proofs as any auditor
would); the agents write through Clients without the auditor token, as deployed agents do.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from affidavit.client.actor import Actor
from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.redact import parameters_digest
from affidavit.statements.signing import IdentityKey

from tests.serverproc import ROOT, RPC_TIMEOUT, ServerFactory, ServerProcess

GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
"""A fake GitHub token of the real shape (split so no scanner flags this file)."""


@dataclass(frozen=True)
class Recorded:
    """One statement about an action, as the auditor reads it: the search hit (index, verdict)
    and the statement."""

    hit: pb.SearchHit
    statement: pb.Statement

    @property
    def action(self) -> pb.AgentAction:
        return self.statement.action

    @property
    def verdict(self) -> str:
        return pb.Verdict.Name(self.hit.verdict)


@dataclass
class AdapterLog:
    server: ServerProcess
    tmp: Path
    admin: Actor
    alice: Actor
    auditor: Client

    @classmethod
    def start(cls, factory: ServerFactory, tmp: Path) -> AdapterLog:
        server = factory(entry_format="statements")
        auditor = Client(
            server.address,
            TrustPolicy(server.verifier_key),
            token=server.auditor_token,
            timeout=RPC_TIMEOUT,
        )
        admin = Actor(auditor, IdentityKey.load(server.data_dir / "admin.key"))
        alice_key = IdentityKey.generate("alice@acme.example")
        admin.register("alice@acme.example", pb.HUMAN, alice_key.public_key)
        alice = Actor(auditor, alice_key)
        return cls(server, tmp, admin, alice, auditor)

    @property
    def policy(self) -> TrustPolicy:
        return TrustPolicy(self.server.verifier_key)

    def client(self, *, retries: int = 4) -> Client:
        """A client as an agent has it: no auditor token."""
        return Client(self.server.address, self.policy, timeout=RPC_TIMEOUT, retries=retries)

    def agent(self, identity_id: str, *, retries: int = 4) -> Actor:
        """Register a fresh agent identity (owned by alice); its Actor on its own client."""
        key = IdentityKey.generate(identity_id)
        self.admin.register(identity_id, pb.AGENT, key.public_key, owner="alice@acme.example")
        self.key_path(identity_id).write_text(key.text() + "\n")
        return Actor(self.client(retries=retries), key)

    def key_path(self, identity_id: str) -> Path:
        return self.tmp / f"{identity_id}.key"

    def agent_flags(self, agent: str, grant_id: str, address: str = "") -> list[str]:
        """The command-line flags an adapter process (mcp-proxy, otlp-bridge) records as agent
        with: the log (address, default this one's; its key), a trust dir, the key, the grant."""
        return [
            "--server",
            address or self.server.address,
            "--log-key",
            self.server.verifier_key,
            "--trust-dir",
            str(self.tmp / f"trust-{agent}"),
            "--key",
            str(self.key_path(agent)),
            "--grant",
            grant_id,
        ]

    def grant(self, grantee: str, **fields: Any) -> str:
        return self.alice.grant(grantee, **fields).statement_id

    def trail(self, agent_id: str) -> list[Recorded]:
        """Every action statement the agent issued, in log order, as the auditor reads it."""
        hits = [h for h in self.auditor.search(actor=agent_id) if h.kind == "action"]
        out = []
        for hit in hits:
            [entry] = self.auditor.entries(hit.index, hit.index + 1)
            out.append(Recorded(hit, build.statement_of(entry.data)))
        return out

    def close(self) -> None:
        self.auditor.close()


@contextmanager
def running_log(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[AdapterLog]:
    """A started `AdapterLog` in a fresh temporary directory, stopped and removed afterwards
    (the body of each adapter test module's module-scoped `log` fixture)."""
    tmp = tmp_path_factory.mktemp(name)
    factory = ServerFactory(tmp)
    try:
        log = AdapterLog.start(factory, tmp)
        yield log
        log.close()
    finally:
        factory.cleanup()


def intent_and_outcome(trail: list[Recorded], tool: str) -> tuple[Recorded, Recorded]:
    """The one INTENT for tool in the trail and the OUTCOME that follows it."""
    intents = [
        r
        for r in trail
        if r.action.phase == pb.AgentAction.INTENT and r.action.operation.tool_name == tool
    ]
    assert len(intents) == 1, f"{len(intents)} INTENTs for {tool} in {trail}"
    [intent] = intents
    outcomes = [
        r
        for r in trail
        if r.action.phase == pb.AgentAction.OUTCOME
        and r.action.action_id == intent.action.action_id
    ]
    assert len(outcomes) == 1, f"{len(outcomes)} OUTCOMEs for {tool}"
    [outcome] = outcomes
    assert intent.hit.index < outcome.hit.index, "the INTENT must come before the OUTCOME"
    return intent, outcome


def check_intent(
    intent: Recorded,
    *,
    tool: str,
    resource: str,
    arguments: Any,
    grant_id: str,
    verdict: str,
) -> None:
    """The INTENT names the tool, resource, grant and the digest of the exact arguments."""
    op = intent.action.operation
    assert op.tool_name == tool
    assert op.resource == resource
    assert op.parameters_digest == parameters_digest(arguments)
    assert list(intent.action.grant_ids) == [grant_id]
    assert intent.verdict == verdict, intent.hit.verdict_reason


def load_example(name: str) -> ModuleType:
    """examples/<name>.py as a module (the examples are scripts, not a package)."""
    path = ROOT / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"examples_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
