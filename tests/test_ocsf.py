"""OCSF export: every event validates against our JSON Schema of OCSF's API Activity class.

The schema (tests/ocsf_schema.py) is written for this project from the OCSF 1.8.0
specification's facts and checked with jsonschema. First the schema is shown able to fail
(events with an attribute it does not allow, a missing required attribute, an activity outside
the enum, a wrong class, profile, type_uid or caption); then client.ocsf.event is held to it
over generated statements of every kind (hypothesis), and `affidavit export --format ocsf` over
a real log, one JSON line per statement.
"""

from __future__ import annotations

import copy
import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from affidavit.client.actor import Actor, outcome_body
from affidavit.client.client import Client
from affidavit.client.ocsf import OCSF_VERSION, PROFILES, event
from affidavit.client.verify import TrustPolicy
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey
from hypothesis import given, settings
from hypothesis import strategies as st

from affidavit import merkle
from tests import ocsf_schema, serverproc
from tests.serverproc import RPC_TIMEOUT, ServerProcess

server_factory = serverproc.server_factory


@cache
def validator() -> jsonschema.Draft202012Validator:
    schema = ocsf_schema.api_activity_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def errors(document: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(document)]


def sample_leaf(body: build.Body, key: IdentityKey | None = None) -> bytes:
    signer = build.SessionSigner(key or IdentityKey.generate("bot"))
    return signer.sign(body)


def sample_event(body: build.Body, verdict: int = 0, reason: str = "") -> dict[str, Any]:
    leaf = sample_leaf(body)
    return event(7, leaf, merkle.leaf_hash(leaf), verdict, reason, "example.com/log")


def intent(**operation: Any) -> pb.AgentAction:
    return pb.AgentAction(
        phase=pb.AgentAction.INTENT,
        action_id=uuid7(),
        actor=pb.Actor(agent_id="bot"),
        grant_ids=["g1"],
        authorization=pb.Authorization(decision=pb.ALLOW),
        operation=pb.Operation(
            **{
                "operation_name": "execute_tool",
                "tool_name": "github.create_pull_request",
                "resource": "repo:acme/web",
                "access": pb.CREATE,
                "parameters_json": "{}",
                "parameters_digest": "0" * 64,
                **operation,
            }
        ),
    )


def test_the_schema_is_ocsfs_api_activity() -> None:
    schema = ocsf_schema.api_activity_schema()
    assert ocsf_schema.OCSF_SPEC_VERSION == OCSF_VERSION
    assert tuple(PROFILES) == ocsf_schema.PROFILES
    assert schema["properties"]["class_uid"]["const"] == 6003
    assert schema["properties"]["category_uid"]["const"] == 6
    assert schema["properties"]["activity_id"]["enum"] == [0, 1, 2, 3, 4, 99]
    assert {"actor", "api", "src_endpoint", "metadata", "time", "severity_id"} <= set(
        schema["required"]
    )
    # Closed to attributes OCSF defines for the class and the profiles applied.
    assert set(schema["properties"]) <= ocsf_schema.CLASS_ATTRIBUTES
    assert {"trace", "disposition_id", "policy"} <= set(schema["properties"])


def test_the_schema_refuses_what_ocsf_does_not_allow() -> None:
    good = sample_event(intent(), pb.IN_SCOPE)
    assert errors(good) == []
    undefined = copy.deepcopy(good)
    undefined["actor"]["user"]["favourite_colour"] = "blue"
    assert errors(undefined)
    missing = copy.deepcopy(good)
    del missing["api"]["operation"]
    assert any("operation" in e for e in errors(missing))
    activity = copy.deepcopy(good)
    activity["activity_id"] = 7
    assert errors(activity)
    wrong_class = copy.deepcopy(good)
    wrong_class["class_uid"] = 3002
    assert errors(wrong_class)
    no_profile = copy.deepcopy(good)
    no_profile["metadata"]["profiles"] = []
    assert errors(no_profile)
    time_text = copy.deepcopy(good)
    time_text["time"] = "yesterday"
    assert errors(time_text)
    type_uid = copy.deepcopy(good)
    type_uid["type_uid"] = 600302  # good is a Create (1)
    assert errors(type_uid)
    caption = copy.deepcopy(good)
    caption["severity"] = "Critical"  # severity_id 1 is Informational
    assert errors(caption)
    class_only = copy.deepcopy(good)
    class_only["http_request"] = {}  # API Activity defines it; affidavit does not emit it
    assert errors(class_only)
    no_request_uid = copy.deepcopy(good)
    no_request_uid["api"]["request"] = {}
    assert errors(no_request_uid)
    no_actor = copy.deepcopy(good)
    no_actor["actor"] = {"authorizations": []}  # OCSF wants a user, session, app...
    assert errors(no_actor)
    refused = sample_event(refusal("ipv4:127.0.0.1:50051"))
    assert errors(refused) == []
    for endpoint in ({"ip": "not-an-address"}, {"ip": "127.0.0.1", "port": 70000}):
        bad = copy.deepcopy(refused)
        bad["src_endpoint"] = endpoint
        assert errors(bad), endpoint
    bad_count = copy.deepcopy(refused)
    bad_count["count"] = "12"
    assert errors(bad_count)


def refusal(source: str, identity_id: str = "bot", key_id: str = "bot+1a2b3c4d") -> pb.Refusal:
    return pb.Refusal(
        leaf_hash=b"\x01" * 32,
        key_id=key_id,
        identity_id=identity_id,
        reason="key-retired",
        source=source,
        count=3,
        first_ms=1_700_000_000_000,
        last_ms=1_700_000_004_000,
    )


_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@st.composite
def statements(draw: st.DrawFn) -> tuple[build.Body, int, str]:
    kind = draw(
        st.sampled_from(
            ["intent", "outcome", "identity", "grant", "approval", "session", "refusal", "revoke"]
        )
    )
    if kind == "refusal":
        source = draw(
            st.sampled_from(["ipv4:127.0.0.1:50051", "ipv6:[::1]:443", "unix:/run/a.sock", ""])
        )
        aggregate = draw(st.booleans())  # a source's remainder names no identity or key
        return refusal(source, *(("", "") if aggregate else ())), 0, ""
    if kind == "revoke":
        return pb.GrantRevocation(grant_id=uuid7(), reason=draw(st.sampled_from(["", "x"]))), 0, ""
    if kind == "session":
        session_op = draw(st.sampled_from([pb.SessionEvent.OPEN, pb.SessionEvent.CLOSE]))
        opens = session_op == pb.SessionEvent.OPEN
        purpose = draw(st.sampled_from(["", "CHG-1042"])) if opens else ""
        return pb.SessionEvent(op=session_op, purpose=purpose), 0, ""
    if kind in ("intent", "outcome"):
        body = intent(
            access=draw(st.sampled_from(list(pb.AccessKind.values())[1:])),
            tool_call_id=draw(st.sampled_from(["", "call-1"])),
            tool_server=draw(st.sampled_from(["", "mcp://tools.example"])),
        )
        body.authorization.decision = draw(
            st.sampled_from([pb.ALLOW, pb.DENY, pb.ALLOW_IF_APPROVED])
        )
        body.authorization.policy_id = draw(st.sampled_from(["", "policy-7"]))
        body.correlation.trace_id = draw(st.sampled_from(["", "4bf92f3577b34da6a3ce929d0e0e4736"]))
        body.actor.workload_id = draw(st.sampled_from(["", "spiffe://example.org/agent"]))
        body.actor.framework = draw(st.sampled_from(["", "langgraph"]))
        body.credential.key_id = draw(st.sampled_from(["", "sa-key-1"]))
        if kind == "outcome":
            outcome = pb.Outcome(
                status=draw(st.sampled_from(list(pb.OutcomeStatus.values())[1:])),
                error_code=draw(st.sampled_from(["", "Timeout"])),
                effect_ref=draw(st.sampled_from(["", "commit:3f2a"])),
            )
            body = outcome_body(sample_leaf(body), outcome)
        verdict = draw(st.sampled_from([pb.IN_SCOPE, pb.OUT_OF_SCOPE, pb.NO_GRANT]))
        reason = "" if verdict == pb.IN_SCOPE else "tool-not-granted"
        return body, verdict, reason
    if kind == "identity":
        op = draw(st.sampled_from(list(pb.IdentityEvent.Op.values())[1:]))
        return pb.IdentityEvent(op=op, identity_id=draw(_ids), public_key=b"k" * 32), 0, ""
    if kind == "grant":
        grant = pb.Grant(
            grantee=draw(_ids),
            tools=["github.*"],
            resources=draw(st.lists(_ids, max_size=3)),
            access=[pb.READ],
            ticket=draw(st.sampled_from(["", "CHG-1042"])),
        )
        return grant, 0, ""
    approval = pb.Approval(
        action_id=uuid7(),
        parameters_digest="0" * 64,
        decision=draw(st.sampled_from(list(pb.Approval.Decision.values())[1:])),
        ticket=draw(st.sampled_from(["", "CHG-1042"])),
    )
    return approval, 0, ""


@settings(max_examples=150, deadline=None)
@given(statements())
def test_every_kind_of_statement_maps_to_a_valid_event(case: tuple[build.Body, int, str]) -> None:
    body, verdict, reason = case
    document = sample_event(body, verdict, reason)
    assert errors(document) == []
    assert document["type_uid"] == 6003 * 100 + document["activity_id"]
    json.dumps(document)  # plain JSON


def _story(server: ServerProcess, work: Path) -> dict[str, Any]:
    """A small log: an admin registers a human and an agent, the human grants, the agent acts
    in scope (traced) and out of scope, its key is rotated and it is revoked."""
    policy = TrustPolicy(server.verifier_key)
    alice, bot = IdentityKey.generate("alice"), IdentityKey.generate("bot")
    bot2 = IdentityKey.generate("bot")
    with Client(server.address, policy, timeout=RPC_TIMEOUT) as client:
        admin = Actor(client, IdentityKey.load(server.data_dir / "admin.key"))
        admin.register("alice", pb.HUMAN, alice.public_key)
        admin.register("bot", pb.AGENT, bot.public_key, owner="alice")
        grant = Actor(client, alice).grant(
            "bot", tools=["github.*"], resources=["repo:acme/*"], access=[pb.CREATE], ticket="CHG-7"
        )
        agent = Actor(client, bot)
        with agent.action(
            "github.create_pull_request",
            "repo:acme/web",
            pb.CREATE,
            {"title": "x"},
            grant_ids=[grant.statement_id],
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        ) as act:
            act.effect_ref = "commit:3f2a9c1e"
        stray = agent.submit(
            agent.action(
                "shell.exec", "host:db", pb.EXECUTE, {}, grant_ids=[grant.statement_id]
            ).intent
        )
        admin.rotate("bot", bot2.public_key)
        admin.revoke("bot")
    (work / "log.pub").write_text(server.verifier_key + "\n")
    return {"action_id": act.action_id, "stray_index": stray.receipt.index}


def test_export_ocsf_from_a_real_log(
    server_factory: serverproc.ServerFactory, tmp_path: Path
) -> None:
    server = server_factory(entry_format="statements")
    story = _story(server, tmp_path)
    env = {
        "AFFIDAVIT_SERVER": server.address,
        "AFFIDAVIT_LOG_KEY": "@log.pub",
        "AFFIDAVIT_TOKEN": server.auditor_token,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [str(serverproc.AFFIDAVIT), *args],
            cwd=tmp_path,
            env=serverproc.clean_env(env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
        return r

    run("export", "--format", "ocsf", "--out", "events.jsonl")
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    entries = server.all_entries()
    assert len(lines) == len(entries) == 9
    events = [json.loads(line) for line in lines]
    for document in events:
        assert errors(document) == [], document
    for document, entry in zip(events, entries, strict=True):
        mine = document["unmapped"]["affidavit"]
        assert (mine["log_index"], mine["leaf_hash"]) == (entry.index, entry.leaf_hash.hex())
        assert document["metadata"]["uid"] == build.statement_of(entry.data).header.statement_id
    stray = events[story["stray_index"]]
    assert stray["is_alert"] is True and stray["disposition"] == "Unauthorized"
    assert stray["actor"]["authorizations"][0]["decision"].startswith("OUT_OF_SCOPE")
    assert stray["severity_id"] == 4
    outcome = next(
        e
        for e in events
        if e["unmapped"]["affidavit"].get("action_id") == story["action_id"]
        and e["unmapped"]["affidavit"].get("phase") == "OUTCOME"
    )
    assert outcome["trace"] == {"uid": "4bf92f3577b34da6a3ce929d0e0e4736"}
    assert (outcome["status"], outcome["unmapped"]["affidavit"]["effect_ref"]) == (
        "Success",
        "commit:3f2a9c1e",
    )
    assert [e["api"]["operation"] for e in events if e["actor"]["user"]["uid"] == "admin"][-2:] == [
        "identity.rotate_key",
        "identity.revoke",
    ]
    # A selection: one session's statements, to standard output.
    session = outcome["actor"]["session"]["uid"]
    out = run("export", "--format", "ocsf", "--session", session).stdout.splitlines()
    assert [json.loads(x)["unmapped"]["affidavit"]["log_index"] for x in out] == [
        e["unmapped"]["affidavit"]["log_index"]
        for e in events
        if e["actor"]["session"]["uid"] == session
    ]


def test_export_ocsf_of_a_log_of_opaque_entries_says_so(
    server_factory: serverproc.ServerFactory, tmp_path: Path
) -> None:
    server = server_factory()  # entries are any bytes, not statements
    server.stub.Append(pb.AppendRequest(entry=b"not a statement"), timeout=RPC_TIMEOUT)
    (tmp_path / "log.pub").write_text(server.verifier_key + "\n")
    env = {
        "AFFIDAVIT_SERVER": server.address,
        "AFFIDAVIT_LOG_KEY": "@log.pub",
        "AFFIDAVIT_TOKEN": server.auditor_token,
    }
    r = subprocess.run(
        [str(serverproc.AFFIDAVIT), "export", "--format", "ocsf", "--out", "e.jsonl"],
        cwd=tmp_path,
        env=serverproc.clean_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 2 and "opaque entries" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "e.jsonl").exists() and not (tmp_path / "e.jsonl.partial").exists()
