"""Statement rules (statements.ingest, state) on who signs and in what order, without a server:
identity registration, keys (unknown, another identity's, rotated, revoked), signatures, and
session chains (start, gaps, replays, forks), statement ids and client times.

The world they run in (fixed keys, ids and times; one ingest path over a DictKV) is
tests/statement_world.py. A refused statement must leave the state byte-for-byte as it was.
"""

from __future__ import annotations

import hashlib

import pytest
from affidavit.merkle.hashing import leaf_hash
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build, ingest
from affidavit.statements.errors import Rejection

from tests.statement_world import (
    ADMIN,
    ALICE,
    BOT,
    DENIED,
    EXISTS,
    PRECONDITION,
    SUB,
    T0,
    UNAUTHENTICATED,
    World,
    grant_body,
    ident,
    intent_body,
    populated,
)

# Identities and keys.


def test_genesis_admin_registers_itself_only_on_an_empty_state() -> None:
    w = World(genesis=False)
    # On an empty state a self-signed REGISTER of anything but an admin is refused.
    w.refuse(
        UNAUTHENTICATED, BOT, build.register("code-agent", pb.AGENT, BOT.public_key), match="key"
    )
    # So is an admin registering an identity other than the signer.
    w.refuse(UNAUTHENTICATED, ADMIN, build.register("root", pb.ADMIN, ident("root").public_key))
    r = w.send(ADMIN, build.register("admin", pb.ADMIN, ADMIN.public_key))
    assert r.index == 0 and r.verdict is None
    assert w.state.has_admin()
    assert w.state.identity("admin") is not None
    # A second self-registration (another admin) is refused: its key is not registered.
    root = ident("root")
    root_signer = build.SessionSigner(root, session_id="root")
    leaf = root_signer.sign(
        build.register("root", pb.ADMIN, root.public_key), statement_id=w.new_id(), time_ms=T0
    )
    w.refuse(UNAUTHENTICATED, None, leaf=leaf, match=root.key_id)


def test_registration_by_a_non_admin_is_denied() -> None:
    w = populated()
    e = w.refuse(DENIED, ALICE, build.register("mallory", pb.HUMAN, ident("mallory").public_key))
    assert "admin" in e.message
    w.refuse(DENIED, BOT, build.revoke("alice@example.com"))


def test_identity_events_need_a_fresh_identity_and_key() -> None:
    w = populated()
    w.refuse(EXISTS, ADMIN, build.register("code-agent", pb.AGENT, ident("x").public_key))
    w.refuse(EXISTS, ADMIN, build.register("twin", pb.AGENT, BOT.public_key))
    w.refuse(PRECONDITION, ADMIN, build.rotate("nobody", ident("nobody").public_key))
    w.refuse(EXISTS, ADMIN, build.rotate("code-agent", SUB.public_key))


def test_unknown_key_is_unauthenticated() -> None:
    w = populated()
    stranger = ident("code-agent", generation=9)  # claims to be the agent, with another key
    e = w.refuse(UNAUTHENTICATED, stranger, grant_body("sub-agent"))
    assert stranger.key_id in e.message and "not registered" in e.message


@pytest.mark.parametrize("part", ["signature", "statement"])
def test_bad_signature_is_unauthenticated(part: str) -> None:
    w = populated()
    signed = pb.SignedStatement.FromString(w.sign(ALICE, grant_body("code-agent")))
    if part == "signature":
        signed.signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    else:  # alter the statement after signing: re-encode it with another grantee
        st = pb.Statement.FromString(signed.statement)
        st.grant.grantee = "sub-agent"
        signed.statement = st.SerializeToString()
    e = w.refuse(UNAUTHENTICATED, None, leaf=signed.SerializeToString(), match="signature")
    assert ALICE.key_id in e.message
    # Also when prepare() did not know the key yet and admit() is the first to check it.
    prepared = ingest.prepare(signed.SerializeToString(), lambda _kid: None)
    assert prepared.verified_with is None
    with pytest.raises(Rejection) as caught:
        ingest.admit(prepared, w.state, T0)
    assert caught.value.code == UNAUTHENTICATED


def test_a_key_of_another_identity_is_denied() -> None:
    w = populated()
    # BOT's registered key, but the header says the issuer is alice.
    body = grant_body("code-agent")
    header = pb.Header(
        statement_id=w.new_id(),
        issuer="alice@example.com",
        session_id="s",
        client_time_ms=T0,
        schema_version=1,
        producer=pb.Producer(adapter="test/1", assurance=pb.SELF_ASSERTED),
    )
    leaf = BOT.sign(pb.Statement(header=header, grant=body).SerializeToString())
    e = w.refuse(DENIED, None, leaf=leaf)
    assert "code-agent" in e.message and "alice@example.com" in e.message


def test_revoked_identity_is_refused() -> None:
    w = populated()
    gid = w.grant(ALICE, "code-agent")
    w.intent(BOT, [gid])
    w.send(ADMIN, build.revoke("code-agent"))
    e = w.refuse(DENIED, BOT, intent_body("code-agent", [gid], w.new_id()))
    assert "code-agent" in e.message
    w.refuse(PRECONDITION, ADMIN, build.revoke("code-agent"), match="revoked")
    w.refuse(
        EXISTS, ADMIN, build.register("code-agent", pb.AGENT, ident("code-agent", 1).public_key)
    )
    # A revoked grantee cannot be granted to.
    w.refuse(PRECONDITION, ALICE, grant_body("code-agent"), match="grantee")


def test_rotated_key_old_refused_new_accepted_history_replays() -> None:
    w = populated()
    before = w.grant(ALICE, "code-agent")
    w.intent(BOT, [before])
    new = ident("alice@example.com", generation=1)
    w.send(ADMIN, build.rotate("alice@example.com", new.public_key))
    e = w.refuse(DENIED, ALICE, grant_body("code-agent"), match="retired")
    assert ALICE.key_id in e.message
    after = w.grant(new, "code-agent")  # same session chain, new key
    assert w.intent(BOT, [before]).name == ("IN_SCOPE", "")
    assert w.intent(BOT, [after]).name == ("IN_SCOPE", "")
    assert w.state.identity("alice@example.com").key_id == new.key_id  # type: ignore[union-attr]
    old = w.state.key(ALICE.key_id)
    assert old is not None and old.retired_at is not None
    # An auditor replaying the log in order admits every statement, those signed with the old
    # key included, and reaches the same state.
    replay = World(genesis=False)
    for leaf in w.leaves:
        replay.append(leaf)
    assert replay.kv.data == w.kv.data


# Session chains.


def test_session_chain_starts_at_zero_with_no_previous_hash() -> None:
    w = populated()
    signer = w.signer(ALICE)
    assert signer.sequence == 0
    w.grant(ALICE, "code-agent")
    head = w.state.session("alice@example.com", "session-alice@example.com")
    assert head is not None and head.next_sequence == 1
    assert head.last_leaf_hash == leaf_hash(w.leaves[-1])
    # A new session of the same issuer starts at 0 again, independently.
    other = build.SessionSigner(ALICE, session_id="second")
    leaf = other.sign(grant_body("code-agent"), statement_id=w.new_id(), time_ms=T0)
    w.append(leaf)
    # Sequence 0 in a session that has begun is a replay.
    leaf = build.SessionSigner(ALICE, session_id="second").sign(
        grant_body("code-agent"), statement_id=w.new_id(), time_ms=T0
    )
    w.refuse(PRECONDITION, None, leaf=leaf, match="expects sequence 1")


@pytest.mark.parametrize("fault", ["gap", "replay", "fork", "no-previous"])
def test_session_chain_gap_replay_fork_refused(fault: str) -> None:
    w = populated()
    w.grant(ALICE, "code-agent")
    w.grant(ALICE, "code-agent")
    signer = w.signer(ALICE)
    assert signer.sequence == 2
    good_previous = signer.previous_hash
    if fault == "gap":
        signer.sequence = 3
    elif fault == "replay":  # sequence 1 again, after its own previous hash
        signer.sequence, signer.previous_hash = 1, leaf_hash(w.leaves[-2])
    elif fault == "fork":  # the right sequence after another statement
        signer.previous_hash = leaf_hash(w.leaves[-2])
    else:  # the right sequence, the previous hash of some other leaf
        signer.previous_hash = hashlib.sha256(b"elsewhere").digest()
    e = w.refuse(PRECONDITION, ALICE, grant_body("code-agent"))
    assert "expects sequence 2" in e.message and good_previous.hex() in e.message
    signer.sequence, signer.previous_hash = 2, good_previous
    w.grant(ALICE, "code-agent")


def test_statement_id_reuse_already_exists() -> None:
    w = populated()
    gid = w.grant(ALICE, "code-agent")
    e = w.refuse(EXISTS, ALICE, grant_body("sub-agent"), statement_id=gid)
    assert gid in e.message
    # Reuse across issuers too.
    w.refuse(EXISTS, BOT, intent_body("code-agent", [gid], w.new_id()), statement_id=gid)


def test_client_time_far_from_the_log_clock_is_refused_at_ingest() -> None:
    w = populated()
    leaf = w.sign(ALICE, grant_body("code-agent"), t=T0)
    prepared = ingest.prepare(leaf, w.state.key)
    with pytest.raises(Rejection) as caught:
        ingest.admit(prepared, w.state, T0 + ingest.MAX_CLOCK_SKEW_MS + 1)
    assert caught.value.code == PRECONDITION and "client_time_ms" in caught.value.message
    assert ingest.admit(prepared, w.state, T0 + ingest.MAX_CLOCK_SKEW_MS) is None
