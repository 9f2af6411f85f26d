"""The client's calls when answers are lost or refused (client/client.py): a lost response is
retried and deduplicated, the same statement twice is one entry, a statement whose answer was
lost is settled first, UNAVAILABLE is retried then raised; and reading entries needs the
auditor token. Against real servers (tests/serverproc.py) and World (tests/clientworld.py).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from affidavit.client import client as client_module
from affidavit.client.actor import Actor
from affidavit.client.client import Client
from affidavit.client.errors import (
    RefusedError,
    UnavailableError,
)
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.ids import uuid7
from affidavit.statements.redact import parameters_digest

from tests import serverproc
from tests.clientworld import (
    Lost,
    Stub,
    World,
    connect,
    policy_of,
    world,
)
from tests.serverproc import ServerProcess

__all__ = ["world"]  # fixtures, used by name


server_factory = serverproc.server_factory
server = serverproc.server

# Retries.


def test_lost_response_is_retried_and_dedups(server: ServerProcess, tmp_path: Path) -> None:
    with connect(server, tmp_path / "trust") as client:
        client.append_opaque(b"before")
        real = client.stub
        answers: list[pb.AppendResponse] = []

        def lose_first(request: pb.AppendRequest, **kw: Any) -> pb.AppendResponse:
            response: pb.AppendResponse = real.Append(request, **kw)  # the log stores it...
            answers.append(response)
            if len(answers) == 1:
                raise Lost()  # ...but the answer never arrives
            return response

        client.stub = Stub(real, Append=lose_first)  # type: ignore[assignment]
        r = client.append_opaque(b"payload")
    assert [(a.index, a.duplicate) for a in answers] == [(1, False), (1, True)]
    assert (r.index, r.duplicate) == (1, True)
    assert server.checkpoint().size == 2  # stored once


def test_same_statement_twice_is_one_entry(world: World) -> None:
    signer = build.SessionSigner(world.alice.key)
    approval = pb.Approval(
        action_id=uuid7(),
        agent_id="bot",
        parameters_digest=parameters_digest({}),
        decision=pb.Approval.APPROVE,
    )
    leaf = signer.sign(approval)
    with world.connect() as client:
        first = client.append(leaf)
        again = client.append(leaf)  # e.g. the first answer was lost and the caller retried
    assert again.index == first.index and (first.duplicate, again.duplicate) == (False, True)
    assert again.leaf_hash == first.leaf_hash
    assert again.checkpoint.checkpoint.size == first.checkpoint.checkpoint.size


@pytest.mark.parametrize("stored", [True, False], ids=["stored", "never-arrived"])
def test_a_statement_whose_answer_was_lost_is_settled_first(world: World, stored: bool) -> None:
    """After retries run out, the log may or may not hold the statement; the actor's next
    statement must still continue its session chain (the log refuses gaps and forks)."""
    with Client(
        world.server.address, world.policy, token=world.server.auditor_token, retries=0
    ) as client:
        alice = Actor(client, world.alice.key)  # a session of its own
        first = alice.approve(uuid7(), {"n": 0}, agent_id="bot")
        real = client.stub

        def lost(request: pb.AppendRequest, **kw: Any) -> pb.AppendResponse:
            if stored:
                real.Append(request, **kw)
            raise Lost()

        client.stub = Stub(real, Append=lost)  # type: ignore[assignment]
        unanswered = uuid7()
        with pytest.raises(UnavailableError):
            alice.approve(unanswered, {"n": 1}, agent_id="bot")
        client.stub = real
        # refused as a chain gap without settling
        after = alice.approve(uuid7(), {"n": 2}, agent_id="bot")
        [hit] = client.search(action_id=unanswered)
        [settled] = client.entries(hit.index, hit.index + 1)
        st = build.statement_of(after.leaf)
    assert first.receipt.index < hit.index < after.receipt.index
    assert build.statement_of(settled.data).header.sequence == 1
    assert (st.header.sequence, st.header.previous_hash) == (2, settled.leaf_hash)


def test_unavailable_is_retried_then_raised(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(client_module, "time", SimpleNamespace(sleep=waits.append))
    with connect(server, tmp_path / "trust", token=server.auditor_token) as client:
        client.append_opaque(b"a")
        assert server.stop() == 0
        with pytest.raises(UnavailableError, match=f"{server.address}: UNAVAILABLE"):
            client.append_opaque(b"b")
        assert waits == [0.1, 0.2, 0.4, 0.8]  # four retries, backing off, then the error
        with pytest.raises(UnavailableError):
            client.checkpoint()
        with pytest.raises(UnavailableError):
            next(client.entries(0, 1))  # a read stream too: unreachable, not refused
    with Client(server.address, policy_of(server), retries=0) as client:
        waits.clear()
        with pytest.raises(UnavailableError):
            client.checkpoint()
        assert waits == []


# Access.


def test_reading_entries_needs_the_auditor_token(world: World) -> None:
    s = world.server
    with Client(s.address, world.policy) as anonymous:
        assert anonymous.checkpoint().checkpoint.size > 0  # checkpoints and proofs are public
        anonymous.prove(index=0)
        with pytest.raises(RefusedError) as refused:
            next(anonymous.entries(0, 1))
        assert refused.value.code == "UNAUTHENTICATED" and "token" in refused.value.message
        with pytest.raises(RefusedError) as refused:
            next(anonymous.search(actor="alice"))
        assert refused.value.code == "UNAUTHENTICATED"
    with Client(s.address, world.policy, token="afv_not-the-token") as wrong:
        with pytest.raises(RefusedError) as refused:
            next(wrong.entries(0, 1))
        assert refused.value.code == "PERMISSION_DENIED"
        with pytest.raises(RefusedError) as refused:
            next(wrong.search(actor="alice"))
        assert refused.value.code == "PERMISSION_DENIED"
    with Client(s.address, world.policy, token=s.auditor_token) as auditor:
        [genesis] = auditor.entries(0, 1)
        assert build.statement_of(genesis.data).identity.identity_id == "admin"
        assert any(h.issuer == "alice" for h in auditor.search(actor="alice"))
