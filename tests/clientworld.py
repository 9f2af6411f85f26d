"""What the client library's tests share: connecting to a real server with a trust directory
(policy_of, connect, saved_size), a stopped server's data copied (copy_data), calls whose
answers are lost (Lost, Stub, copy_of), and World: a statements log (admin, alice, her agent bot
and her grant to it) served by a real `affidavit serve`, one per test module.

The tests are tests/test_client_*.py, one idea each.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from affidavit.client.actor import Actor
from affidavit.client.client import Client, Receipt
from affidavit.client.trust import TrustStore
from affidavit.client.verify import TrustPolicy
from affidavit.merkle import note
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.signing import IdentityKey

from tests.serverproc import ORIGIN, RPC_TIMEOUT, ServerFactory, ServerProcess

GITHUB_TOKEN = "ghp_" + "Zq8xW2vB7nR4tY6uI1oP3aS5dF9gH0jK2lM4"
"""Looks like a GitHub token to the secret guard (built at run time: no literal secret)."""

ROLLBACK = r"roll(ed)? ?back"


# Helpers.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def policy_of(server: ServerProcess, *witnesses: str, quorum: int = 0) -> TrustPolicy:
    return TrustPolicy(server.verifier_key, witnesses, quorum)


def connect(server: ServerProcess, trust_dir: Path | None, **kw: Any) -> Client:
    kw.setdefault("timeout", RPC_TIMEOUT)
    return Client(server.address, policy_of(server), trust_dir=trust_dir, **kw)


def copy_data(server: ServerProcess, to: Path) -> Path:
    """A stopped server's data directory (keys and database), copied."""
    assert not server.running
    shutil.copytree(server.data_dir, to)
    return to


def saved_size(trust_dir: Path, origin: str = ORIGIN) -> int | None:
    saved = TrustStore(trust_dir).load(origin)
    return None if saved is None else int(note.parse_note(saved)[0].splitlines()[1])


class Lost(grpc.RpcError):
    """What a call whose response was lost looks like to the caller."""

    def __init__(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "connection reset (simulated)"


class Stub:
    """Stands in for a client's stub: the named methods replaced, the others passed through to
    the real one; counts the calls made."""

    def __init__(self, real: Any, **methods: Callable[..., Any]) -> None:
        self._real = real
        self._methods = methods
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = self._methods.get(name) or getattr(self._real, name)

        def call(request: Any, **kw: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(request, **kw)

        return call


def copy_of(message: Any) -> Any:
    out = type(message)()
    out.CopyFrom(message)
    return out


@dataclass
class World:
    """A statements log: admin, alice (human), bot (an agent alice owns), alice's grant."""

    server: ServerProcess
    policy: TrustPolicy
    trust_dir: Path
    client: Client
    alice: Actor
    bot: Actor
    grant_id: str

    def connect(self) -> Client:
        return Client(
            self.server.address,
            self.policy,
            trust_dir=self.trust_dir,
            token=self.server.auditor_token,
            timeout=RPC_TIMEOUT,
        )

    def entry(self, receipt: Receipt) -> pb.Entry:
        [e] = self.client.entries(receipt.index, receipt.index + 1)
        assert e.leaf_hash == receipt.leaf_hash
        return e

    def statement(self, receipt: Receipt) -> pb.Statement:
        return build.statement_of(self.entry(receipt).data)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("world")
    factory = ServerFactory(tmp)
    try:
        s = factory(entry_format="statements")
        policy = policy_of(s)
        client = Client(
            s.address, policy, trust_dir=tmp / "trust", token=s.auditor_token, timeout=RPC_TIMEOUT
        )
        admin = Actor(client, IdentityKey.load(s.data_dir / "admin.key"))
        alice_key, bot_key = IdentityKey.generate("alice"), IdentityKey.generate("bot")
        admin.register("alice", pb.HUMAN, alice_key.public_key)
        admin.register("bot", pb.AGENT, bot_key.public_key, owner="alice")
        alice, bot = Actor(client, alice_key), Actor(client, bot_key)
        grant = alice.grant(
            "bot", tools=["github.*"], resources=["repo:acme/*"], access=[pb.CREATE, pb.READ]
        )
        with client:
            yield World(s, policy, tmp / "trust", client, alice, bot, grant.statement_id)
    finally:
        factory.cleanup()
