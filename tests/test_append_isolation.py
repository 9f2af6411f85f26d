"""One bad entry fails alone: a deeply nested parameter in a batch or a stream gets
INVALID_ARGUMENT for that entry, its neighbours are appended, and a stream answers every
message it received. Unauthenticated statements get one message, whichever way they fail."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.signing import IdentityKey

from tests import serverproc
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess, status_of

server_factory = serverproc.server_factory

DEPTH = 3000


def statements_log(factory: ServerFactory) -> tuple[ServerProcess, build.SessionSigner]:
    s = factory(entry_format="statements")
    admin = IdentityKey.load(s.data_dir / "admin.key")
    return s, build.SessionSigner(admin, session_id="isolation")


def registrations(admin: build.SessionSigner, names: list[str]) -> list[bytes]:
    """Leaves registering agents, chained in admin's session (appended in this order)."""
    leaves = []
    for name in names:
        leaf = admin.sign(build.register(name, pb.AGENT, IdentityKey.generate(name).public_key))
        admin.advance(leaf)
        leaves.append(leaf)
    return leaves


def nested(admin: build.SessionSigner) -> bytes:
    """An action whose parameters nest DEPTH arrays deep (signed in a session of its own)."""
    signer = build.SessionSigner(admin.key, session_id="nested")
    action = pb.AgentAction(
        phase=pb.AgentAction.INTENT,
        action_id="0190a0e0-0000-7000-8000-000000000001",
        actor=pb.Actor(agent_id=admin.key.identity_id, agent_version="1", model="m"),
        grant_ids=["0190a0e0-0000-7000-8000-000000000002"],
        authorization=pb.Authorization(policy_id="p", decision=pb.ALLOW, enforcement_point="e"),
        operation=pb.Operation(
            access=pb.READ,
            operation_name="execute_tool",
            tool_name="t",
            resource="r:x",  # a well-formed name: only the depth is wrong
            parameters_json="[" * DEPTH + "]" * DEPTH,
            parameters_digest="0" * 64,
        ),
    )
    return signer.sign(action)


def test_nested_entry_in_a_batch_fails_alone(server_factory: ServerFactory) -> None:
    s, admin = statements_log(server_factory)
    size = s.checkpoint().size
    good = registrations(admin, ["a1", "a2", "a3"])
    batch = [good[0], good[1], nested(admin), good[2]]
    resp = s.stub.AppendBatch(pb.AppendBatchRequest(entries=batch), timeout=RPC_TIMEOUT)
    kinds = [r.WhichOneof("result") for r in resp.results]
    assert kinds == ["ok", "ok", "error", "ok"], resp
    error = resp.results[2].error
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], error
    assert "nest" in error.message, error.message
    assert [r.ok.index for r in resp.results if r.WhichOneof("result") == "ok"] == [
        size,
        size + 1,
        size + 2,
    ]
    assert "Traceback" not in s.stderr


def test_nested_entry_in_a_stream_is_answered_and_the_stream_goes_on(
    server_factory: ServerFactory,
) -> None:
    s, admin = statements_log(server_factory)
    good = registrations(admin, ["b1", "b2", "b3", "b4"])
    sent = [good[0], nested(admin), good[1], nested(admin), good[2], good[3]]

    def requests() -> Iterator[pb.AppendRequest]:
        for leaf in sent:
            yield pb.AppendRequest(entry=leaf)

    answers = list(s.stub.AppendStream(requests(), timeout=RPC_TIMEOUT))
    assert len(answers) == len(sent)
    kinds = [a.WhichOneof("result") for a in answers]
    assert kinds == ["ok", "error", "ok", "error", "ok", "ok"], answers
    for a in (answers[1], answers[3]):
        assert a.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], a
    assert "Traceback" not in s.stderr


def test_unauthenticated_statements_get_one_message(server_factory: ServerFactory) -> None:
    """An unregistered key and a bad signature of a registered key look the same to the
    caller: the answer does not tell whether a key id is registered."""
    s, admin = statements_log(server_factory)
    stranger = build.SessionSigner(IdentityKey.generate("stranger"))
    unregistered = stranger.sign(
        build.register("x", pb.AGENT, IdentityKey.generate("x").public_key)
    )
    signed = pb.SignedStatement.FromString(registrations(admin, ["c1"])[0])
    signed.signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    bad_signature = signed.SerializeToString()
    messages = set()
    for leaf in (unregistered, bad_signature):
        e = status_of(s.public_stub.Append, pb.AppendRequest(entry=leaf))
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
        messages.add(e.details())
    assert len(messages) == 1, messages
