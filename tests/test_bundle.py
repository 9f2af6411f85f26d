"""Evidence bundles against a real server: export, offline verification, and tampering.

One log for the module: an admin registers two humans and two agents (rotating one agent's
key), alice grants the code agent, bob approves its pull request, the agent opens it (commit
hash as effect), delegates an attenuated grant to a sub-agent that files an issue, and also
does something out of scope. Two witnesses cosign. Every tampering of a bundle must fail
with a VerificationError naming what failed.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from affidavit.client.actor import Actor
from affidavit.client.bundle import FORMAT, Bundle, BundleEntry, ExportError, Report, export, verify
from affidavit.client.client import Client
from affidavit.client.errors import VerificationError
from affidavit.client.verify import TrustPolicy, check_tlog_proof
from affidavit.merkle import keys, note
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess

COMMIT = "commit:3f2a9c1d5e7b8a6f4c2d0e1f3a5b7c9d1e3f5a7b"
PARAMS = {"repo": "acme/web", "title": "Fix login", "head": "fix-login"}


@dataclass
class World:
    server: ServerProcess
    client: Client
    policy: TrustPolicy
    witnesses: list[tuple[str, str]]  # (signer key text, verifier key text)
    pr_action: str
    pr_intent_index: int
    pr_outcome_index: int
    sub_action: str
    stray_action: str
    unrelated_index: int  # carol's registration: in the log, not in any bundle
    bot: Actor
    size: int

    def cosign(self) -> None:
        latest = self.server.public_stub.GetCheckpoint(
            pb.GetCheckpointRequest(), timeout=RPC_TIMEOUT
        )
        body, _ = note.parse_note(latest.note)
        for signer, _ in self.witnesses:
            self.server.public_stub.AddCosignature(
                pb.AddCosignatureRequest(note=note.sign(body, signer)), timeout=RPC_TIMEOUT
            )
        self.size = latest.size


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    witnesses = [keys.generate_key(f"w{n}.example", keys.ALG_COSIGNATURE_V1) for n in (1, 2)]
    factory = ServerFactory(tmp_path_factory.mktemp("bundle"))
    try:
        flags = [a for _, v in witnesses for a in ("--witness-key", v)]
        server = factory(*flags, entry_format="statements")
        policy = TrustPolicy(server.verifier_key, tuple(v for _, v in witnesses), 2)
        client = Client(server.address, policy, token=server.auditor_token)
        admin = Actor(client, IdentityKey.load(server.data_dir / "admin.key"))
        alice_k, bob_k, carol_k = (IdentityKey.generate(n) for n in ("alice", "bob", "carol"))
        first_bot_k, sub_k = IdentityKey.generate("bot"), IdentityKey.generate("sub")
        admin.register("alice", pb.HUMAN, alice_k.public_key, display_name="Alice")
        admin.register("bob", pb.HUMAN, bob_k.public_key)
        admin.register("bot", pb.AGENT, first_bot_k.public_key, owner="alice")
        bot_k = IdentityKey.generate("bot")
        admin.rotate("bot", bot_k.public_key)  # the bot signs only with its second key
        admin.register("sub", pb.AGENT, sub_k.public_key, owner="alice")
        unrelated = admin.register("carol", pb.HUMAN, carol_k.public_key)
        alice, bob = Actor(client, alice_k), Actor(client, bob_k)
        bot, sub = Actor(client, bot_k), Actor(client, sub_k)
        grant = alice.grant(
            "bot",
            tools=["github.*"],
            resources=["repo:acme/*"],
            access=[pb.CREATE, pb.UPDATE],
            ticket="CHG-1042",
            justification="release work",
            approval=pb.ApprovalPolicy(approvers=["bob"]),
        )
        pr_action = uuid7()
        approval = bob.approve(
            pr_action, PARAMS, agent_id="bot", ticket="CHG-1043", comment="ok to open"
        )
        with bot.action(
            "github.create_pull_request",
            "repo:acme/web",
            pb.CREATE,
            PARAMS,
            grant_ids=[grant.statement_id],
            action_id=pr_action,
            approval_id=approval.statement_id,
            decision=pb.ALLOW_IF_APPROVED,
            actor=pb.Actor(agent_name="code-bot", agent_version="1.2", model="gpt-x"),
        ) as act:
            act.result = {"pr": 42}
            act.effect_ref = COMMIT
        assert act.intent_recorded and act.outcome_recorded
        assert act.intent_recorded.receipt.verdict == "IN_SCOPE"
        child = bot.grant(
            "sub",
            tools=["github.create_*"],
            resources=["repo:acme/web"],
            access=[pb.CREATE],
            parent_grant_id=grant.statement_id,
            ticket="CHG-1044",
        )
        with sub.action(
            "github.create_issue",
            "repo:acme/web",
            pb.CREATE,
            {"title": "flaky test"},
            grant_ids=[child.statement_id],
        ) as sub_act:
            sub_act.effect_ref = "issue:77"
        with bot.action(
            "shell.exec",
            "host:db",
            pb.EXECUTE,
            {"cmd": "ls"},
            grant_ids=[grant.statement_id],
            enforce=False,
        ) as stray:
            pass
        assert stray.intent_recorded and stray.intent_recorded.receipt.verdict == "OUT_OF_SCOPE"
        w = World(
            server,
            client,
            policy,
            witnesses,
            pr_action,
            act.intent_recorded.receipt.index,
            act.outcome_recorded.receipt.index,
            sub_act.action_id,
            stray.action_id,
            unrelated.receipt.index,
            bot,
            0,
        )
        w.cosign()
        yield w
        client.close()
    finally:
        factory.cleanup()


@pytest.fixture(scope="module")
def pr_bundle(world: World) -> Bundle:
    return export(world.client, action_id=world.pr_action)


@pytest.fixture(scope="module")
def sub_bundle(world: World) -> Bundle:
    return export(world.client, action_id=world.sub_action)


def statement(entry: BundleEntry) -> pb.Statement:
    return build.statement_of(entry.leaf)


def find(bundle: Bundle, pred: Callable[[pb.Statement], bool]) -> int:
    """Position in bundle.entries of the one entry whose statement satisfies pred."""
    found = [n for n, e in enumerate(bundle.entries) if pred(statement(e))]
    assert len(found) == 1, found
    return found[0]


def body_is(kind: str, **where: object) -> Callable[[pb.Statement], bool]:
    def pred(s: pb.Statement) -> bool:
        if s.WhichOneof("body") != kind:
            return False
        body = getattr(s, kind)
        return all(getattr(body, k) == v for k, v in where.items())

    return pred


# Export and verification.


def test_export_by_action_id_and_by_index_verify(world: World, pr_bundle: Bundle) -> None:
    by_intent = export(world.client, index=world.pr_intent_index)
    by_outcome = export(world.client, index=world.pr_outcome_index)
    assert by_intent.to_json() == by_outcome.to_json() == pr_bundle.to_json()
    text = pr_bundle.to_json()
    assert json.loads(text)["format"] == FORMAT
    assert Bundle.from_json(text) == pr_bundle

    report = verify(text, world.policy)
    assert report.in_scope and report.verdict == "IN_SCOPE" and not report.findings
    assert (report.agent, report.owner, report.owner_kind) == ("bot", "alice", "human")
    assert report.intent.operation.resource == "repo:acme/web"
    assert [link.grantor for link in report.authority] == ["alice"]
    assert report.outcome is not None and report.outcome.outcome.effect_ref == COMMIT
    (approval,) = report.approvals
    assert (approval.approver, approval.approval.ticket, approval.problem) == (
        "bob",
        "CHG-1043",
        None,
    )
    assert [name for name, _ in report.witnesses] == ["w1.example", "w2.example"]
    assert report.key_rotations == 1 and report.genesis_admin == "admin"
    # Adjacent in their sessions: the admin's four identity events (3 links), INTENT -> OUTCOME.
    assert report.session_links == 4

    summary = report.summary()
    for words in (
        "'bot' (code-bot, 1.2, gpt-x: the producer's claim), owned by 'alice' (human)",
        "github.create_pull_request / execute_tool (CREATE) on repo:acme/web",
        "by 'alice' (human) to 'bot', ticket CHG-1042",
        "APPROVE by 'bob' (human), ticket CHG-1043",
        f"OK, effect {COMMIT}",
        "w1.example at",
        "quorum 2 of 2",
        f"{report.entries} inclusion proofs",
        "1 key rotation",
        "bound to action",
        "Not verifiable offline",
        "gap-free",
    ):
        assert words in summary, (words, summary)
    assert " UTC" in summary and "IN SCOPE" in summary
    # Exactly what the action needs: genesis, 5 identity events (alice, bob, bot + rotation;
    # no carol, no sub), the grant, the approval, the INTENT and the OUTCOME.
    kinds = [statement(e).WhichOneof("body") for e in pr_bundle.entries]
    assert kinds.count("identity") == 5 and kinds.count("grant") == 1
    assert kinds.count("approval") == 1 and kinds.count("action") == 2
    assert pr_bundle.entries[0].index == 0


def test_subagent_bundle_holds_the_whole_chain(world: World, sub_bundle: Bundle) -> None:
    report = verify(sub_bundle.to_json(), world.policy)
    assert report.in_scope
    assert report.agent == "sub"
    assert [(g.grantor, g.grant.grantee, g.grant.ticket) for g in report.authority] == [
        ("alice", "bot", "CHG-1042"),
        ("bot", "sub", "CHG-1044"),
    ]
    summary = report.summary()
    assert "1. grant" in summary and "2. grant" in summary
    assert "by 'bot' (agent) to 'sub', ticket CHG-1044" in summary
    assert "effect issue:77" in summary and "grant chain of 2" in summary
    # The bot signed the child grant, so its registration and rotation are bundled too.
    subjects = {
        statement(e).identity.identity_id
        for e in sub_bundle.entries
        if statement(e).WhichOneof("body") == "identity"
    }
    assert subjects == {"admin", "alice", "bot", "sub"}


def test_out_of_scope_action_is_evidence(world: World) -> None:
    report = verify(export(world.client, action_id=world.stray_action).to_json(), world.policy)
    assert not report.in_scope and report.verdict == "OUT_OF_SCOPE"
    assert "tool-not-granted" in report.summary() and "NOT AUTHORISED" in report.summary()


def test_policies(world: World, pr_bundle: Bundle) -> None:
    text = pr_bundle.to_json()
    log_only = TrustPolicy(world.policy.log_key)
    assert verify(text, log_only).witnesses == ()
    _, other_log = note.generate_key("example.com/test")
    with pytest.raises(VerificationError, match=r"does not verify|not signed by the log"):
        verify(text, TrustPolicy(other_log))
    _, stranger = keys.generate_key("w3.example", keys.ALG_COSIGNATURE_V1)
    with pytest.raises(VerificationError, match=r"1 valid witness cosignature.*needs 2"):
        verify(text, TrustPolicy(world.policy.log_key, (world.witnesses[0][1], stranger), 2))
    report = verify(text, TrustPolicy(world.policy.log_key, (world.witnesses[0][1],), 1))
    assert report.unknown_signatures == 1  # w2's line: a key outside that policy, ignored


def test_export_without_witness_policy_uses_the_latest_checkpoint(world: World) -> None:
    policy = TrustPolicy(world.policy.log_key)
    with Client(world.server.address, policy, token=world.server.auditor_token) as client:
        bundle = export(client, action_id=world.pr_action)
    report = verify(bundle.to_json(), policy)
    assert report.witnesses == () and "cosigned by no known witness" in report.summary()
    with pytest.raises(VerificationError, match="0 valid witness cosignature"):
        verify(bundle.to_json(), world.policy)


def test_export_errors(world: World) -> None:
    with pytest.raises(ValueError):
        export(world.client)
    with pytest.raises(ExportError, match="not an agent action"):
        export(world.client, index=1)
    with pytest.raises(ExportError, match="no INTENT"):
        export(world.client, action_id=uuid7())
    # An action the witnesses have not cosigned yet cannot be bundled under a quorum policy.
    with world.bot.action("github.get_repo", "repo:acme/web", pb.READ, {}, enforce=False) as late:
        pass
    assert late.intent_recorded is not None
    with pytest.raises(ExportError, match="beyond the newest cosigned checkpoint"):
        export(world.client, index=late.intent_recorded.receipt.index)
    with pytest.raises(ExportError, match=r"no INTENT .* up to the newest cosigned checkpoint"):
        export(world.client, action_id=late.action_id)
    cp = world.server.public_stub.GetCheckpoint(pb.GetCheckpointRequest(), timeout=RPC_TIMEOUT)
    assert cp.cosigned_size == world.size < cp.size


def test_absence_is_not_provable_offline(world: World, pr_bundle: Bundle) -> None:
    """Without its OUTCOME the bundle still verifies (nothing signed points to an OUTCOME), and
    the report says only that none is in the bundle: a full audit is needed to prove absence."""
    no_outcome = drop(pr_bundle, find(pr_bundle, action_phase(pb.AgentAction.OUTCOME)))
    report = verify(no_outcome.to_json(), world.policy)
    assert report.outcome is None
    assert "none in this bundle" in report.summary()


# Tampering: each edit of the bundle's content, re-serialized as export would, must fail.

Edit = Callable[[World, Bundle], Bundle]


def replace_entry(bundle: Bundle, n: int, **changes: object) -> Bundle:
    entries = list(bundle.entries)
    entries[n] = dataclasses.replace(entries[n], **changes)  # type: ignore[arg-type]
    return Bundle(bundle.checkpoint, tuple(entries))


def drop(bundle: Bundle, n: int) -> Bundle:
    return Bundle(bundle.checkpoint, bundle.entries[:n] + bundle.entries[n + 1 :])


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def with_note(bundle: Bundle, text: str) -> Bundle:
    return Bundle(text, bundle.entries)


def note_lines(bundle: Bundle) -> tuple[str, list[str]]:
    body, _, sigs = bundle.checkpoint.partition("\n\n")
    return body + "\n", sigs.splitlines()


def edit_note_line(bundle: Bundle, line: int, change: Callable[[bytes], bytes]) -> Bundle:
    body, lines = note_lines(bundle)
    prefix, _, b64 = lines[line].rpartition(" ")
    lines[line] = f"{prefix} {base64.b64encode(change(base64.b64decode(b64))).decode()}"
    return with_note(bundle, body + "\n" + "".join(f"{x}\n" for x in lines))


def action_phase(phase: int) -> Callable[[pb.Statement], bool]:
    return lambda s: s.WhichOneof("body") == "action" and s.action.phase == phase


def identity_about(who: str, op: int) -> Callable[[pb.Statement], bool]:
    return body_is("identity", identity_id=who, op=op)


def unrelated_entry(w: World, b: Bundle) -> BundleEntry:
    """carol's registration, with a genuine proof to the bundle's checkpoint."""
    size = int(b.checkpoint.split("\n")[1])
    proof = w.server.public_stub.GetInclusionProof(
        pb.GetInclusionProofRequest(index=w.unrelated_index, tree_size=size), timeout=RPC_TIMEOUT
    )
    entry = next(w.server.all_entries(w.unrelated_index, w.unrelated_index + 1).__iter__())
    return BundleEntry(w.unrelated_index, entry.data, tuple(proof.hashes))


def forged_approval(w: World, b: Bundle) -> Bundle:
    """bob's approval re-signed with a new key under bob's name, over other parameters."""
    n = find(b, body_is("approval"))
    signed = pb.SignedStatement.FromString(b.entries[n].leaf)
    st = pb.Statement.FromString(signed.statement)
    st.approval.parameters_digest = "0" * 64
    leaf = IdentityKey.generate("bob").sign(st.SerializeToString())
    return replace_entry(b, n, leaf=leaf)


def resigned_leaf(w: World, b: Bundle) -> Bundle:
    """The OUTCOME re-signed by the bot's real key with another effect: a valid signature, but
    not the leaf the log holds."""
    n = find(b, action_phase(pb.AgentAction.OUTCOME))
    st = statement(b.entries[n])
    st.action.outcome.effect_ref = "commit:" + "0" * 40
    return replace_entry(b, n, leaf=w.bot.key.sign(st.SerializeToString()))


def swap_in_unrelated(w: World, b: Bundle) -> Bundle:
    n = find(b, body_is("approval"))
    entries = [e for i, e in enumerate(b.entries) if i != n] + [unrelated_entry(w, b)]
    return Bundle(b.checkpoint, tuple(sorted(entries, key=lambda e: e.index)))


def add_unrelated(w: World, b: Bundle) -> Bundle:
    entries = [*b.entries, unrelated_entry(w, b)]
    return Bundle(b.checkpoint, tuple(sorted(entries, key=lambda e: e.index)))


def move_proof(w: World, b: Bundle) -> Bundle:
    """Put the INTENT's leaf at the OUTCOME's index, with the OUTCOME's proof."""
    i = find(b, action_phase(pb.AgentAction.INTENT))
    o = find(b, action_phase(pb.AgentAction.OUTCOME))
    return replace_entry(b, o, leaf=b.entries[i].leaf)


TAMPERING: dict[str, tuple[Edit, str]] = {
    "leaf byte": (
        lambda w, b: replace_entry(b, 3, leaf=flip(b.entries[3].leaf, 40)),
        "inclusion proof of entry",
    ),
    "leaf re-signed with the signer's own key": (resigned_leaf, "inclusion proof of entry"),
    "leaf truncated": (
        lambda w, b: replace_entry(b, 2, leaf=b.entries[2].leaf[:-1]),
        "inclusion proof of entry",
    ),
    "proof hash": (
        lambda w, b: replace_entry(
            b, 4, proof=(flip(b.entries[4].proof[0], 7), *b.entries[4].proof[1:])
        ),
        "inclusion proof of entry",
    ),
    "proof hash dropped": (
        lambda w, b: replace_entry(b, 4, proof=b.entries[4].proof[:-1]),
        "inclusion proof of entry",
    ),
    "index": (
        lambda w, b: replace_entry(b, 3, index=b.entries[3].index + 1),
        "inclusion proof of entry|must ascend",
    ),
    "leaf moved to another index": (move_proof, "inclusion proof of entry"),
    "note body: size": (
        lambda w, b: with_note(b, b.checkpoint.replace(f"\n{w.size}\n", f"\n{w.size + 1}\n", 1)),
        "invalid signature|does not verify",
    ),
    "note body: root": (
        lambda w, b: with_note(
            b,
            b.checkpoint.replace(
                note_lines(b)[0].split("\n")[2],
                base64.b64encode(b"\x00" * 32).decode(),
            ),
        ),
        "invalid signature|does not verify",
    ),
    "note: log signature": (
        lambda w, b: edit_note_line(b, 0, lambda s: flip(s, 20)),
        "does not verify|not signed by the log",
    ),
    "note: cosignature": (
        lambda w, b: edit_note_line(b, 1, lambda s: flip(s, 30)),
        "does not verify",
    ),
    "note: cosignature timestamp": (
        lambda w, b: edit_note_line(b, 2, lambda s: flip(s, 11)),
        "does not verify",
    ),
    "note: cosignature removed": (
        lambda w, b: with_note(b, "".join(b.checkpoint.splitlines(keepends=True)[:-1])),
        "1 valid witness cosignature",
    ),
    "note: signature line repeated": (
        lambda w, b: with_note(b, b.checkpoint + b.checkpoint.splitlines(keepends=True)[-1]),
        "2 signature lines by key",
    ),
    "drop the approval": (lambda w, b: drop(b, find(b, body_is("approval"))), "approval .* is not"),
    "drop the grant": (lambda w, b: drop(b, find(b, body_is("grant"))), "grant .* is not in"),
    "drop the agent's rotation": (
        lambda w, b: drop(b, find(b, identity_about("bot", pb.IdentityEvent.ROTATE_KEY))),
        "not registered",
    ),
    "drop the grantor's registration": (
        lambda w, b: drop(b, find(b, identity_about("alice", pb.IdentityEvent.REGISTER))),
        "not registered",
    ),
    "drop the approver's registration": (
        lambda w, b: drop(b, find(b, identity_about("bob", pb.IdentityEvent.REGISTER))),
        "not registered",
    ),
    "drop the genesis": (lambda w, b: drop(b, 0), "genesis"),
    "drop the INTENT": (
        lambda w, b: drop(b, find(b, action_phase(pb.AgentAction.INTENT))),
        "INTENT .* is not in the bundle",
    ),
    "swap the approval for another entry of the log": (swap_in_unrelated, "approval .* is not"),
    "add an entry the action does not need": (add_unrelated, "not part of action"),
    "approval forged under the approver's name": (forged_approval, "inclusion proof of entry"),
    "entry repeated": (
        lambda w, b: Bundle(b.checkpoint, (*b.entries[:3], b.entries[2], *b.entries[3:])),
        "must ascend",
    ),
    "entries reordered": (
        lambda w, b: Bundle(b.checkpoint, (b.entries[1], b.entries[0], *b.entries[2:])),
        "must ascend",
    ),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_tampering_fails_with_the_reason(world: World, pr_bundle: Bundle, name: str) -> None:
    edit, reason = TAMPERING[name]
    tampered = edit(world, pr_bundle)
    assert tampered != pr_bundle
    with pytest.raises(VerificationError, match=reason):
        verify(tampered.to_json(), world.policy)


def test_tampering_the_delegation_chain(world: World, sub_bundle: Bundle) -> None:
    parent = find(sub_bundle, body_is("grant", grantee="bot"))
    with pytest.raises(VerificationError, match=r"grant .* named by grant .* is not in the bundle"):
        verify(drop(sub_bundle, parent).to_json(), world.policy)
    child = find(sub_bundle, body_is("grant", grantee="sub"))
    with pytest.raises(VerificationError, match=r"named by action .* is not in the bundle"):
        verify(drop(sub_bundle, child).to_json(), world.policy)
    # Entries of another action's bundle do not belong to this one.
    pr = export(world.client, action_id=world.pr_action)
    mixed = sorted({*sub_bundle.entries, *pr.entries}, key=lambda e: e.index)
    with pytest.raises(VerificationError, match="statements of one action"):
        verify(Bundle(sub_bundle.checkpoint, tuple(mixed)).to_json(), world.policy)


def test_text_edits_fail(world: World, pr_bundle: Bundle) -> None:
    text = pr_bundle.to_json()
    data = json.loads(text)
    proof = data["entries"][0]["proof"][0]
    decoded = data["entries"][0]["decoded"]
    cases: dict[str, tuple[str | bytes, str]] = {
        "claimed summary": (
            json.dumps({**data, "summary": "approved by the CEO"}, indent=2) + "\n",
            "keys",
        ),
        "format": (text.replace(FORMAT, "affidavit-bundle/2"), "format"),
        "not JSON": (text[:100], "not valid JSON"),
        "duplicate key": (text.replace('"format"', '"format": "x", "format"', 1), "repeats"),
        "non-canonical base64": (text.replace(proof, non_canonical(proof)), "not canonical base64"),
        "not UTF-8": (text.encode()[:50] + b"\xff" + text.encode()[51:], "UTF-8"),
        "edited readable copy": (
            text.replace(json.dumps(decoded["key_id"]), json.dumps(decoded["key_id"][::-1]), 1),
            "not what its leaf decodes to",
        ),
        "unknown entry key": (
            json.dumps(
                {**data, "entries": [{**data["entries"][0], "note": "x"}, *data["entries"][1:]]}
            ),
            "keys",
        ),
    }
    for edited, reason in cases.values():
        with pytest.raises(VerificationError, match=reason):
            verify(edited, world.policy)


def non_canonical(b64: str) -> str:
    """Another spelling of the same bytes: set an unused low bit of the last base64 digit."""
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = digits.index(b64[-2])  # a 32-byte hash ends in one '=': 2 unused bits
    other = b64[:-2] + digits[last | 1] + "="
    assert other != b64 and base64.b64decode(other) == base64.b64decode(b64)
    return other


def test_bundle_file_verifies_as_bytes(world: World, pr_bundle: Bundle, tmp_path: Path) -> None:
    path = tmp_path / "evidence.json"
    path.write_text(pr_bundle.to_json())
    assert isinstance(verify(path.read_bytes(), world.policy), Report)


def test_harmless_reformatting_verifies_the_same(world: World, pr_bundle: Bundle) -> None:
    """Content, not layout: what editors, `jq` and Windows do to a file changes nothing."""
    text = pr_bundle.to_json()
    data = json.loads(text)
    expected = verify(text, world.policy).summary()
    reformatted: dict[str, str | bytes] = {
        "re-indented": json.dumps(data, indent=4, ensure_ascii=False),
        "minified": json.dumps(data, separators=(",", ":")),
        "CRLF": text.replace("\n", "\r\n"),
        "CRLF bytes": text.replace("\n", "\r\n").encode(),
        "keys sorted (jq -S)": json.dumps(data, indent=2, sort_keys=True),
        "ASCII escapes": json.dumps(data, indent=1, ensure_ascii=True),
        "no final newline": text[:-1],
        "without the readable copies": json.dumps(
            {
                **data,
                "entries": [
                    {k: v for k, v in e.items() if k != "decoded"} for e in data["entries"]
                ],
            }
        ),
    }
    for name, edited in reformatted.items():
        assert verify(edited, world.policy).summary() == expected, name
        assert Bundle.from_json(edited if isinstance(edited, str) else edited.decode()) == pr_bundle


def test_each_entry_is_shown_decoded_beside_its_bytes(pr_bundle: Bundle) -> None:
    data = json.loads(pr_bundle.to_json())
    for item, entry in zip(data["entries"], pr_bundle.entries, strict=True):
        signed = pb.SignedStatement.FromString(entry.leaf)
        statement = build.statement_of(entry.leaf)
        assert item["decoded"]["key_id"] == signed.key_id
        shown = item["decoded"]["statement"]
        assert shown["header"]["statement_id"] == statement.header.statement_id
        assert set(shown) - {"header"} == {statement.WhichOneof("body")}
    actions = [
        i["decoded"]["statement"]["action"]
        for i in data["entries"]
        if "action" in i["decoded"]["statement"]
    ]
    assert {a["phase"] for a in actions} == {"INTENT", "OUTCOME"}
    assert all(a["operation"]["tool_name"] == "github.create_pull_request" for a in actions)


# Property: no change to the file verifies as a different story.


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_byte_flips_never_verify(
    world: World, pr_bundle: Bundle, data: st.DataObject
) -> None:
    """A flipped byte fails verification, unless it only changed the layout (whitespace
    between JSON tokens): then the content read is exactly the exported bundle's."""
    raw = bytearray(pr_bundle.to_json().encode())
    at = data.draw(st.integers(0, len(raw) - 1), label="byte")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != raw[at]), label="value")
    raw[at] = value
    try:
        verify(bytes(raw), world.policy)
    except VerificationError:
        return
    assert Bundle.from_json(raw.decode()) == pr_bundle


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_content_flips_never_verify(
    world: World, pr_bundle: Bundle, data: st.DataObject
) -> None:
    """Flips inside the decoded content, re-serialized as export would: the deep checks."""
    n = data.draw(st.integers(0, len(pr_bundle.entries)), label="entry (last: the note)")
    if n == len(pr_bundle.entries):
        text = pr_bundle.checkpoint.encode()
        at = data.draw(st.integers(0, len(text) - 1), label="note byte")
        try:
            tampered = with_note(pr_bundle, flip(text, at).decode())
        except UnicodeDecodeError:
            return
    else:
        entry = pr_bundle.entries[n]
        field = data.draw(st.sampled_from(["leaf", "proof", "index"]), label="field")
        if field == "leaf":
            at = data.draw(st.integers(0, len(entry.leaf) - 1), label="leaf byte")
            tampered = replace_entry(pr_bundle, n, leaf=flip(entry.leaf, at))
        elif field == "proof" and entry.proof:
            k = data.draw(st.integers(0, len(entry.proof) - 1), label="hash")
            at = data.draw(st.integers(0, 31), label="hash byte")
            proof = list(entry.proof)
            proof[k] = flip(proof[k], at)
            tampered = replace_entry(pr_bundle, n, proof=tuple(proof))
        else:
            tampered = replace_entry(pr_bundle, n, index=entry.index ^ 1)
    with pytest.raises(VerificationError):
        verify(tampered.to_json(), world.policy)


def test_each_entry_carries_its_tlog_proof(world: World, pr_bundle: Bundle) -> None:
    data = json.loads(pr_bundle.to_json())
    for item, entry in zip(data["entries"], pr_bundle.entries, strict=True):
        proof, cp = check_tlog_proof(item["tlog_proof"], entry.leaf, world.policy)
        assert (proof.index, proof.hashes) == (entry.index, entry.proof)
        assert proof.checkpoint == cp.note == pr_bundle.checkpoint
    # A tlog_proof that is not the entry's own is refused, even if it is a valid proof.
    first, second = data["entries"][0], data["entries"][1]
    first["tlog_proof"] = second["tlog_proof"]
    with pytest.raises(VerificationError, match="tlog_proof"):
        Bundle.from_json(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
