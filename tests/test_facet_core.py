"""server._facetcore, free_facets' C fast path for actions: whenever it answers, its answer is
the one server.search_index gives in Python (so the search records' bytes do not depend on
whether it is built), on generated actions with plain and awkward strings, on actions with
fields the core does not read, and on the bytes of a plain action cut, doubled and flipped
anywhere. It must answer for a plain action, or it would be a core that never runs."""

from __future__ import annotations

import sys

from affidavit.proto import affidavit_pb2 as pb
from affidavit.server import search_index
from affidavit.server._facetcore import action_facets
from affidavit.statements.ingest import Prepared
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.c_cores import skip_if_c_cores_off

skip_if_c_cores_off(module=True)

# Strings the core reads as they are, and strings it must decline (json escapes them).
_plain = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
_awkward = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)
_text = st.one_of(_plain, _plain, _plain, _awkward)
_u64 = st.integers(min_value=0, max_value=2**64 - 1)
_i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def _actions(draw: st.DrawFn) -> pb.Statement:
    action = pb.AgentAction(
        phase=draw(st.sampled_from(list(pb.AgentAction.Phase.values()))),
        action_id=draw(_text),
        grant_ids=draw(st.lists(_text, max_size=3)),
        principal_chain=draw(st.lists(_plain, max_size=2)),
        approval_id=draw(_text),
        intent_leaf_hash=draw(st.binary(max_size=4)),
    )
    if draw(st.booleans()):
        action.credential.CopyFrom(
            pb.CredentialRef(key_id=draw(_text), token_jti=draw(_text), kind=draw(_plain))
        )
    if draw(st.booleans()):
        action.operation.CopyFrom(
            pb.Operation(
                tool_name=draw(_text), resource=draw(_text), operation_name=draw(_plain),
                access=pb.READ, parameters_json=draw(_plain),
                redactions=[pb.Redaction()] * draw(st.integers(0, 2)),
            )
        )  # fmt: skip
    if draw(st.booleans()):
        action.outcome.CopyFrom(
            pb.Outcome(effect_ref=draw(_text), result_digest=draw(_text), status=pb.OK)
        )
    if draw(st.booleans()):
        action.correlation.CopyFrom(pb.Correlation(trace_id=draw(_text), span_id=draw(_plain)))
    if draw(st.booleans()):
        action.actor.CopyFrom(pb.Actor(agent_id=draw(_plain)))
    statement = pb.Statement(action=action)
    if draw(st.integers(0, 9)):  # mostly with a header
        statement.header.CopyFrom(
            pb.Header(
                statement_id=draw(_text), issuer=draw(_text), session_id=draw(_text),
                sequence=draw(_u64), client_time_ms=draw(_i64), schema_version=1,
                previous_hash=draw(st.binary(max_size=4)),
            )
        )  # fmt: skip
    return statement


def _prepared(data: bytes, key_id: str) -> Prepared:
    return Prepared(
        pb.SignedStatement(statement=data, key_id=key_id), pb.Statement.FromString(data), None
    )


def _python(p: Prepared) -> search_index.FreeFacets:
    """free_facets in Python, or the exception it raises (a negative client time)."""
    return search_index._free_facets(p)


def _agrees(data: bytes, key_id: str) -> bool:
    """Whether the core declines data, or answers as the Python does; True when it answered."""
    answer = action_facets(data, key_id)
    if answer is None:
        return False
    assert search_index.FreeFacets._make(answer) == _python(_prepared(data, key_id))
    return True


def _plain_action() -> bytes:
    return pb.Statement(
        header=pb.Header(
            statement_id="0192e0c1-aaaa-7bbb-8ccc-000000000001", issuer="agent-1@bench.example",
            session_id="0192e0c1-aaaa-7bbb-8ccc-000000000002", sequence=7,
            client_time_ms=1_764_900_000_000, schema_version=1, previous_hash=b"\x01" * 32,
        ),
        action=pb.AgentAction(
            phase=pb.AgentAction.INTENT, action_id="0192e0c1-aaaa-7bbb-8ccc-000000000003",
            actor=pb.Actor(agent_id="agent-1@bench.example"), grant_ids=["g-1", "g-2"],
            credential=pb.CredentialRef(key_id="cred-key", token_jti="cred-key"),
            operation=pb.Operation(
                operation_name="execute_tool", tool_name="bench.read_file",
                resource="repo:bench/service-1", access=pb.READ, parameters_json='{"a":1}',
            ),
            correlation=pb.Correlation(trace_id="ab" * 16),
        ),
    ).SerializeToString()  # fmt: skip


def test_a_plain_action_is_read_by_the_core_as_the_python_reads_it() -> None:
    data = _plain_action()
    assert _agrees(data, "agent-1-key")
    free = search_index.free_facets(_prepared(data, "agent-1-key"))
    assert free.middle.startswith(',"key":["agent-1-key","cred-key"],')  # distinct, sorted
    assert free.ticket_chains == ("g-1", "g-2")


@settings(max_examples=600, deadline=None)
@given(statement=_actions(), key_id=_text)
def test_the_core_answers_as_the_python_or_declines(statement: pb.Statement, key_id: str) -> None:
    data = statement.SerializeToString()
    answered = action_facets(data, key_id) is not None
    try:
        expected = _python(_prepared(data, key_id))
    except OverflowError:  # a negative client time: no time key; the core declines it
        assert not answered
        return
    if answered:
        assert _agrees(data, key_id)
    assert search_index.free_facets(_prepared(data, key_id)) == expected


def test_other_bodies_are_declined() -> None:
    for statement in (
        pb.Statement(header=pb.Header(issuer="a"), grant=pb.Grant(grantee="b")),
        pb.Statement(header=pb.Header(issuer="a"), approval=pb.Approval(action_id="x")),
        pb.Statement(header=pb.Header(issuer="a")),
        pb.Statement(),
    ):
        assert action_facets(statement.SerializeToString(), "k") is None


def test_fields_it_cannot_be_sure_of_are_declined() -> None:
    data = _plain_action()
    header = pb.Statement(header=pb.Statement.FromString(data).header).SerializeToString()
    doubled_header = data + header  # merged by protobuf
    unknown = data + b"\xf8\x01\x01"  # field 31, a varint: kept as unknown by protobuf
    for weird in (doubled_header, unknown):
        pb.Statement.FromString(weird)  # protobuf reads them
        assert action_facets(weird, "k") is None


def test_every_cut_doubling_and_flip_of_an_action_agrees_or_is_declined() -> None:
    data = _plain_action()
    answered = 0
    variants = [data[:n] for n in range(len(data))]
    variants += [data[:n] + data[n:][:8] + data[n:] for n in range(0, len(data), 3)]
    variants += [
        data[:n] + bytes([data[n] ^ bit]) + data[n + 1 :]
        for n in range(len(data))
        for bit in (0x01, 0x08, 0x80)
    ]
    refs = sys.getrefcount(data)
    for variant in variants:
        try:
            pb.Statement.FromString(variant)
        except DecodeError:
            action_facets(variant, "k")  # only ever asked of bytes that decode: no crash here
            continue
        answered += _agrees(variant, "k")
    assert sys.getrefcount(data) == refs
    assert answered  # some flips leave a plain action (a letter changed, say)
