"""Evidence for several actions in one bundle: one checkpoint, the shared authority once, each
action verified as its own bundle would be; on a real server."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from affidavit.client import bundle
from affidavit.client.actor import Actor
from affidavit.client.bundle import Bundle, BundleEntry
from affidavit.client.bundleset import export_set, verify_set
from affidavit.client.client import Client
from affidavit.client.errors import VerificationError
from affidavit.client.verify import TrustPolicy
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from affidavit.statements.ids import uuid7
from affidavit.statements.signing import IdentityKey

from tests import serverproc
from tests.serverproc import RPC_TIMEOUT, ServerProcess


@dataclass
class Story:
    server: ServerProcess
    policy: TrustPolicy
    session: str
    actions: list[str]
    stray: str
    grant_id: str


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    tmp = tmp_path_factory.mktemp("bundleset")
    server = ServerProcess(tmp / "srv", origin="example.com/set", entry_format="statements")
    try:
        server.start()
        policy = TrustPolicy(server.verifier_key)
        alice, bot = IdentityKey.generate("alice"), IdentityKey.generate("bot")
        with Client(server.address, policy, timeout=RPC_TIMEOUT) as client:
            admin = Actor(client, IdentityKey.load(server.data_dir / "admin.key"))
            admin.register("alice", pb.HUMAN, alice.public_key)
            admin.register("bot", pb.AGENT, bot.public_key, owner="alice")
            admin.register("dan", pb.HUMAN, IdentityKey.generate("dan").public_key)
            human = Actor(client, alice)
            grant = human.grant(
                "bot", tools=["github.*"], resources=["repo:acme/*"], access=[pb.CREATE]
            ).statement_id
            agent = Actor(client, bot)
            actions = []
            for n in range(3):
                with agent.action(
                    "github.create_pull_request",
                    f"repo:acme/r{n}",
                    pb.CREATE,
                    {"n": n},
                    grant_ids=[grant],
                ) as act:
                    act.effect_ref = f"commit:{n}"
                actions.append(act.action_id)
            approved_id = uuid7()
            approval = human.approve(approved_id, {"n": 9}, agent_id="bot").statement_id
            with agent.action(
                "github.create_pull_request",
                "repo:acme/r9",
                pb.CREATE,
                {"n": 9},
                grant_ids=[grant],
                action_id=approved_id,
                approval_id=approval,
                decision=pb.ALLOW_IF_APPROVED,
            ):
                pass
            actions.append(approved_id)
            stray = agent.submit(
                agent.action("shell.exec", "host:db", pb.EXECUTE, {}, grant_ids=[grant]).intent
            )
        yield Story(
            server,
            policy,
            agent.signer.session_id,
            actions,
            build.statement_of(stray.leaf).action.action_id,
            grant,
        )
    finally:
        server.kill()


def client_of(story: Story) -> Client:
    return Client(
        story.server.address,
        story.policy,
        token=story.server.auditor_token,
        timeout=RPC_TIMEOUT,
    )


def test_one_bundle_for_several_actions(story: Story) -> None:
    with client_of(story) as client:
        together = export_set(client, story.actions)
        singles = [bundle.export(client, action_id=a) for a in story.actions]
    reports = verify_set(together.to_json(), story.policy)
    assert [r.action_id for r in reports] == sorted(story.actions)
    assert all(r.in_scope for r in reports)
    # The shared authority once: one grant entry, every identity event once.
    kinds = [build.statement_of(e.leaf).WhichOneof("body") for e in together.entries]
    assert kinds.count("grant") == 1
    indexes = [e.index for e in together.entries]
    assert indexes == sorted(set(indexes))
    assert set(indexes) == {e.index for b in singles for e in b.entries}
    assert len(together.entries) < sum(len(b.entries) for b in singles)
    # Each action's report is the one its own bundle gives.
    for single in singles:
        alone = bundle.verify(single.to_json(), story.policy)
        [same] = [r for r in reports if r.action_id == alone.action_id]
        assert (same.verdict, same.authority, same.approvals, same.outcome_index) == (
            alone.verdict,
            alone.authority,
            alone.approvals,
            alone.outcome_index,
        )
    # A single-action bundle is a set of one.
    [only] = verify_set(singles[0].to_json(), story.policy)
    assert only.action_id == bundle.verify(singles[0].to_json(), story.policy).action_id


def test_a_set_refuses_what_no_action_needs_and_a_missing_grant(story: Story) -> None:
    with client_of(story) as client:
        together = export_set(client, story.actions[:2])
        cp = client.checkpoint()
        size = cp.checkpoint.size
        # dan's registration: in the log, proven, but part of no bundled action's evidence.
        [dan] = [h.index for h in client.search(subject="dan")]
        proof = client.call(
            client.stub.GetInclusionProof, pb.GetInclusionProofRequest(index=dan, tree_size=size)
        )
        leaf = next(client.entries(dan, dan + 1)).data
    assert size == int(together.checkpoint.splitlines()[1])
    extra = Bundle(
        together.checkpoint,
        tuple(
            sorted(
                [*together.entries, BundleEntry(dan, leaf, tuple(proof.hashes))],
                key=lambda e: e.index,
            )
        ),
    )
    with pytest.raises(VerificationError, match="part of no bundled action's evidence"):
        verify_set(extra.to_json(), story.policy)
    no_grant = Bundle(
        together.checkpoint,
        tuple(
            e for e in together.entries if build.statement_of(e.leaf).WhichOneof("body") != "grant"
        ),
    )
    with pytest.raises(VerificationError, match=f"grant {story.grant_id}.*not in the bundle"):
        verify_set(no_grant.to_json(), story.policy)


def _cli(story: Story, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "AFFIDAVIT_SERVER": story.server.address,
        "AFFIDAVIT_LOG_KEY": story.server.verifier_key,
        "AFFIDAVIT_TOKEN": story.server.auditor_token,
    }
    r = subprocess.run(
        [str(serverproc.AFFIDAVIT), *args],
        cwd=cwd,
        env=serverproc.clean_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_export_a_session_and_verify_it_offline(story: Story, tmp_path: Path) -> None:
    r = _cli(story, tmp_path, "export", "--session", story.session, "--out", "s.json", "--json")
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    ids = sorted([*story.actions, story.stray])
    assert [a["action_id"] for a in data["actions"]] == ids
    assert data["in_scope"] is False  # the stray is in the session
    verified = _cli(story, tmp_path, "verify-bundle", "s.json", "--json")
    assert verified.returncode == 5  # verified, but not every action was authorised
    checked = json.loads(verified.stdout)
    out_of_scope = [a["action_id"] for a in checked["actions"] if not a["in_scope"]]
    assert out_of_scope == [story.stray]
    text = _cli(story, tmp_path, "verify-bundle", "s.json").stdout
    assert text.count("Verified offline:") == len(ids)
    two = _cli(story, tmp_path, "export", *story.actions[:2], "--out", "two.json")
    assert two.returncode == 0, two.stderr
    assert "2 action(s)" in two.stdout
    assert _cli(story, tmp_path, "verify-bundle", "two.json").returncode == 0
    usage = _cli(story, tmp_path, "export", "--session", story.session)
    assert usage.returncode == 2 and "--out" in usage.stderr
