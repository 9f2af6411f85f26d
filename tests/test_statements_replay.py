"""Determinism of the statement rules: a replay of a history touching every rule gives
byte-identical state and verdicts, and only the log signs its refusal records.

The world they run in is tests/statement_world.py.
"""

from __future__ import annotations

import pytest
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build, ingest
from affidavit.statements.errors import Rejection
from affidavit.statements.signing import IdentityKey

from tests.statement_world import (
    ADMIN,
    ALICE,
    BOT,
    DENIED,
    OTHER,
    PRECONDITION,
    SUB,
    T0,
    UNAUTHENTICATED,
    World,
    grant_body,
    ident,
    operation,
    populated,
    scoped_world,
)

# Determinism.


def story() -> World:
    """A history touching every rule: delegation, approval, rotation, revocation, refusals."""
    w, parent = scoped_world(max_uses=10)
    child = w.grant(BOT, "sub-agent", parent=parent, max_uses=3, tools=["github.create_*"])
    action_id = w.new_id()
    approval = w.approve(action_id)
    r = w.intent(
        BOT, [parent], action_id=action_id, decision=pb.ALLOW_IF_APPROVED, approval_id=approval
    )
    w.outcome(BOT, r)
    w.intent(SUB, [child])
    w.intent(SUB, [child], op=operation(resource="repo:other/x"))
    w.refuse(PRECONDITION, BOT, grant_body("sub-agent", parent=parent, tools=["*"]))
    w.send(ADMIN, build.rotate("alice@example.com", ident("alice@example.com", 1).public_key))
    w.refuse(DENIED, ALICE, grant_body("code-agent"))
    w.intent(BOT, [parent], decision=pb.DENY)
    w.send(ADMIN, build.revoke("code-agent"))
    w.intent(SUB, [child])
    w.intent(OTHER, [])
    return w


def test_replay_gives_byte_identical_state_and_verdicts() -> None:
    original = story()
    assert len(original.leaves) > 15
    for _ in range(2):
        replay = World(genesis=False)
        for leaf in original.leaves:
            replay.append(leaf)
        assert replay.verdicts == original.verdicts
        assert replay.kv.data == original.kv.data
    # Two independent runs of the same story (same keys, ids, times) give the same log.
    again = story()
    assert again.leaves == original.leaves and again.kv.data == original.kv.data


def test_only_the_log_signs_its_refusal_records() -> None:
    """A Refusal verifies with the log's key alone; an identity cannot write one, and a
    checker that does not know the log's key admits none."""
    w = populated()
    log = IdentityKey("log", b"\x07" * 32)
    body = pb.Refusal(
        leaf_hash=b"\x01" * 32, reason="key-unknown", count=1, first_ms=T0, last_ms=T0
    )
    leaf = build.SessionSigner(log).sign(body, statement_id=w.new_id(), time_ms=T0)
    prepared = ingest.prepare(leaf, w.state.key)
    for wrong in (None, ALICE.public_key):
        with pytest.raises(Rejection) as caught:
            ingest.admit(prepared, w.state, T0, wrong)
        assert caught.value.code == UNAUTHENTICATED
    assert ingest.admit(prepared, w.state, T0, log.public_key) is None
    forged = build.SessionSigner(IdentityKey("log", ALICE.seed)).sign(body, time_ms=T0)
    with pytest.raises(Rejection):
        ingest.admit(ingest.prepare(forged, w.state.key), w.state, T0, log.public_key)
    as_alice = w.sign(ALICE, body)
    with pytest.raises(Rejection) as caught:
        ingest.admit(ingest.prepare(as_alice, w.state.key), w.state, T0, log.public_key)
    assert caught.value.code == DENIED
