"""statements.state: the key layout it stores under, and the decoded-record cache.

The cache only saves decoding: whatever a LogState reads must be exactly the decoding of the
bytes its store holds at that moment, whoever wrote them and whichever LogState filled the cache.
"""

from __future__ import annotations

import hashlib

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.signing import IdentityKey
from affidavit.statements.state import (
    DictKV,
    GrantRecord,
    KeyRecord,
    LogState,
    RecordCache,
    SessionHead,
    VerdictRecord,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.bytes_kv import BytesKV

ADMIN = IdentityKey("admin", hashlib.sha256(b"seed:admin").digest())


def test_keys_keep_their_layout() -> None:
    """s/<kind>/<parts joined by 0x00>: data directories written before stay readable."""
    kv = DictKV()
    leaf = build.SessionSigner(ADMIN, session_id="boot").sign(
        build.register("admin", pb.ADMIN, ADMIN.public_key),
        statement_id="0190a0b0-0000-7000-8000-000000000001",
        time_ms=1,
    )
    LogState(kv).apply(0, b"\x01" * 32, build.statement_of(leaf), None)
    assert sorted(kv.data) == sorted(
        [
            b"s/s/0190a0b0-0000-7000-8000-000000000001",
            b"s/q/admin\x00boot",
            b"s/k/" + ADMIN.key_id.encode(),
            b"s/i/admin",
            b"s/m/admin",
        ]
    )
    assert kv.get(b"s/q/admin\x00boot") == (
        b'{"next_sequence":1,"last_leaf_hash":"' + (b"01" * 32) + b'","closed_at":null}'
    )


def _head(n: int) -> SessionHead:
    return SessionHead(n, bytes([n % 256]) * 32)


def test_a_record_rewritten_behind_the_cache_is_read_anew() -> None:
    kv = BytesKV()
    writer, reader = LogState(kv), LogState(kv, RecordCache())
    writer.apply(0, b"\x02" * 32, _statement("a"), None)
    assert reader.session("admin", "a") == SessionHead(1, b"\x02" * 32)
    writer.apply(1, b"\x03" * 32, _statement("b", sequence=1, previous=b"\x02" * 32), None)
    assert reader.session("admin", "a") == SessionHead(1, b"\x02" * 32)
    kv.put(b"s/q/admin\x00a", b'{"next_sequence":7,"last_leaf_hash":"' + b"04" * 32 + b'"}')
    assert reader.session("admin", "a") == SessionHead(7, b"\x04" * 32)


def _statement(session: str, sequence: int = 0, previous: bytes = b"") -> pb.Statement:
    return pb.Statement(
        header=pb.Header(
            statement_id=f"0190a0b0-0000-7000-8000-{sequence:012x}",
            issuer="admin",
            session_id=session,
            sequence=sequence,
            previous_hash=previous,
        ),
        session=pb.SessionEvent(op=pb.SessionEvent.OPEN),
    )


def _intent(action_id: str, session: str) -> pb.Statement:
    return pb.Statement(
        header=pb.Header(issuer="bot", session_id=session, statement_id=action_id),
        action=pb.AgentAction(
            action_id=action_id,
            phase=pb.AgentAction.INTENT,
            operation=pb.Operation(tool_name="github.merge", resource="repo:acme/web"),
        ),
    )


def test_one_cache_shared_by_states_over_different_stores() -> None:
    """A record cached from one store is never served for another store's other bytes."""
    cache = RecordCache()
    one, two = LogState(BytesKV(), cache), LogState(BytesKV(), cache)
    record = KeyRecord("k" * 32, "alice", b"\x05" * 32, 3)
    one._put(b"s/k/" + b"k" * 32, record)
    assert one.key("k" * 32) == record
    assert two.key("k" * 32) is None
    other = KeyRecord("k" * 32, "bob", b"\x06" * 32, 9, retired_at=12)
    two._put(b"s/k/" + b"k" * 32, other)
    assert two.key("k" * 32) == other and one.key("k" * 32) == record


def test_a_grant_is_parsed_once_per_record() -> None:
    grant = pb.Grant(grantee="bot", tools=["github.*"], resources=["repo:*"], access=[pb.READ])
    state = LogState(DictKV())
    state._put(b"s/g/g1", GrantRecord("g1", 4, "alice", grant.SerializeToString()))
    first = state.grant("g1")
    assert first is not None and first.decoded() == grant
    again = state.grant("g1")
    assert again is first and again.decoded() is first.decoded()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["put", "raw", "read"]), st.integers(0, 3), st.integers(0, 5)),
        max_size=60,
    ),
    st.integers(1, 3),
)
def test_reads_are_always_the_stores_current_bytes_decoded(
    ops: list[tuple[str, int, int]], capacity: int
) -> None:
    """Any interleaving of writes through the state, writes behind its back and reads, with a
    cache smaller than the keys in play: every read is what a fresh decode gives."""
    kv = BytesKV()
    cache = RecordCache()
    cache.MAX_RECORDS = capacity
    state, fresh = LogState(kv, cache), LogState(kv)
    for op, session, n in ops:
        key = b"s/q/admin\x00" + str(session).encode()
        if op == "put":
            state._put(key, _head(n))
        elif op == "raw":
            kv.put(key, b'{"next_sequence":%d,"last_leaf_hash":"%s"}' % (n, b"ab" * 32))
        fresh.cache = RecordCache()
        fresh._read = fresh.cache.read
        assert state.session("admin", str(session)) == fresh.session("admin", str(session))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "raw", "read", "apply", "action", "encoded"]),
            st.integers(0, 3),
            st.integers(0, 5),
        ),
        max_size=60,
    )
)
def test_a_dict_kv_keeps_records_as_objects_with_the_same_bytes(
    ops: list[tuple[str, int, int]],
) -> None:
    """A DictKV holds what a LogState puts in it as the records themselves, yet reads, get()
    and encoded() give exactly what a store of bytes holds after the same writes."""
    kept, stored = DictKV(), BytesKV()
    states = LogState(kept), LogState(stored)
    for op, session, n in ops:
        key = b"s/q/admin\x00" + str(session).encode()
        if op == "put":
            for state in states:
                state._put(key, SessionHead(n, bytes([n]) * 32, n or None))
        elif op == "raw":
            for kv in (kept, stored):
                kv.put(key, b'{"next_sequence":%d,"last_leaf_hash":"%s"}' % (n, b"ab" * 32))
        elif op == "apply":
            statement = _statement(str(session), sequence=0)
            for state in states:
                state.apply(n, b"\x07" * 32, statement, None)
        elif op == "action":
            action = _intent(f"act-{session}", str(session))
            verdict = VerdictRecord(pb.OUT_OF_SCOPE, "grant-expired", "", n)
            for state in states:
                state.apply(n, b"\x08" * 32, action, verdict)
            assert states[0].verdict(n) == states[1].verdict(n) == verdict
            assert states[0].intent("admin", f"act-{session}") == states[1].intent(
                "admin", f"act-{session}"
            )
        elif op == "encoded":
            assert kept.encoded() == stored.data
            assert all(type(v) is bytes for v in kept.data.values())
        assert states[0].session("admin", str(session)) == states[1].session("admin", str(session))
        assert kept.get(key) == stored.get(key)
    assert {k: kept.get(k) for k in kept.data} == stored.data
    assert kept.encoded() == stored.data
