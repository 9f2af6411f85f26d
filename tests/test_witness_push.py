"""A real log pushing its checkpoints to two real tlog-witness servers (all processes on
loopback): quorum publication at /checkpoint and in GetCheckpoint, a witness killed mid-run
(appends go on; publication waits for the quorum), a log restart (409 resync), and forks of the
log (a second server on a copied data dir) caught by the witnesses with evidence."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import note
from affidavit.proto import affidavit_pb2 as pb

from tests import serverproc
from tests.processes import wait_for
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess, run_cli
from tests.witnessproc import WitnessProcess

server_factory = serverproc.server_factory


def http_checkpoint(s: ServerProcess) -> str:
    with urllib.request.urlopen(s.http_url + "/checkpoint", timeout=RPC_TIMEOUT) as r:
        return str(r.read().decode())


def cosigners(text: str, witnesses: list[WitnessProcess]) -> set[str]:
    try:
        opened = note.open_note(text, [w.verifier_key for w in witnesses])
    except Exception:
        return set()
    return {s.name for s in opened.signatures}


def append(s: ServerProcess, n: int, tag: str) -> int:
    size = 0
    for i in range(n):
        r = s.stub.Append(pb.AppendRequest(entry=f"{tag} {i}".encode()), timeout=RPC_TIMEOUT)
        size = r.index + 1
    return size


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[tuple[Path, list[WitnessProcess]]]:
    log_dir = tmp_path / "log"
    r = run_cli(
        "init",
        "--data-dir",
        str(log_dir),
        "--origin",
        serverproc.ORIGIN,
        "--entry-format",
        "opaque",
    )
    assert r.returncode == 0, r.stderr
    key = (log_dir / "log.pub").read_text().strip()
    ws = [WitnessProcess(tmp_path / f"w{i}", [key]) for i in (1, 2)]
    try:
        for w in ws:
            w.start()
        yield log_dir, ws
    finally:
        for w in ws:
            w.kill()


def push_flags(ws: list[WitnessProcess], quorum: int) -> list[str]:
    flags = ["--http-listen", "127.0.0.1:0", "--witness-quorum", str(quorum)]
    for w in ws:
        flags += ["--witness", f"{w.name}={w.url}@{w.verifier_key}"]
    return flags


def test_quorum_publication_and_a_dead_witness(
    server_factory: ServerFactory, witnesses: tuple[Path, list[WitnessProcess]]
) -> None:
    log_dir, ws = witnesses
    s = server_factory(*push_flags(ws, 2), data_dir=log_dir, origin=None, entry_format=None)
    size = append(s, 5, "a")

    def published(at_least: int) -> bool:
        text = http_checkpoint(s)
        cp = checkpoints.parse(note.open(text, [s.verifier_key]))
        return cp.size >= at_least and cosigners(text, ws) == {w.name for w in ws}

    wait_for("a checkpoint cosigned by both witnesses", lambda: published(size))
    grpc_cp = s.checkpoint()
    assert grpc_cp.cosigned_size == size
    assert cosigners(grpc_cp.cosigned_note, ws) == {w.name for w in ws}
    # Kill one witness: appends go on at once; publication stays at the last quorum.
    ws[1].kill()
    started = time.monotonic()
    later = append(s, 20, "b")
    assert time.monotonic() - started < 30, "appends never wait for a witness"
    assert later == size + 20
    time.sleep(1.0)
    text = http_checkpoint(s)
    assert checkpoints.parse(note.open(text, [s.verifier_key])).size == size
    assert s.checkpoint().cosigned_size == size
    assert s.checkpoint().size == later
    # It comes back (its state intact): the quorum catches up with the log.
    ws[1].start()
    wait_for("the quorum to reach the latest size", lambda: published(later))
    # A restart of the log: it no longer knows the witnesses' sizes; a 409 tells it.
    s.restart()
    newest = append(s, 3, "c")
    wait_for("cosignatures after a log restart", lambda: published(newest))
    assert "did not cosign" not in s.stderr  # a resync is not a failure


def test_forks_are_caught_with_evidence(
    server_factory: ServerFactory, tmp_path: Path, witnesses: tuple[Path, list[WitnessProcess]]
) -> None:
    log_dir, ws = witnesses
    a = server_factory(*push_flags(ws, 2), data_dir=log_dir, origin=None, entry_format=None)
    base = append(a, 4, "base")
    wait_for("the base cosigned", lambda: a.checkpoint().cosigned_size == base)
    a.stop()
    copies = [tmp_path / "fork1", tmp_path / "fork2"]
    for copy in copies:
        shutil.copytree(log_dir, copy)
    a.start()
    grown = append(a, 3, "honest")
    wait_for("the honest growth cosigned", lambda: a.checkpoint().cosigned_size == grown)
    # Fork 1: the same size, other entries, pushed to witness 1: 409 at its own size, a fork.
    f1 = server_factory(*push_flags(ws[:1], 1), data_dir=copies[0], origin=None, entry_format=None)
    assert append(f1, 3, "forged") == grown
    # Fork 2: a larger tree from the same base, pushed to witness 2: the proof fails, 422.
    f2 = server_factory(*push_flags(ws[1:], 1), data_dir=copies[1], origin=None, entry_format=None)
    assert append(f2, 5, "forged") == grown + 2

    def evidence(w: WitnessProcess) -> list[dict[str, object]]:
        return [json.loads(p.read_text()) for p in (w.state_dir / "evidence").glob("*.json")]

    wait_for("fork evidence at witness 1", lambda: bool(evidence(ws[0])))
    wait_for("evidence at witness 2", lambda: bool(evidence(ws[1])))
    (fork,) = evidence(ws[0])
    assert fork["problem"] == "fork"
    assert fork["cosigned"]["size"] == fork["presented"]["size"] == grown  # type: ignore[index]
    # The fork server retries (with back-off): each refusal is kept.
    for bad in evidence(ws[1]):
        assert bad["problem"] == "inconsistent"
        assert bad["presented"]["size"] == grown + 2  # type: ignore[index]
    wait_for("fork 1 to report it", lambda: "a fork of this log" in f1.stderr)
    wait_for("fork 2 to report it", lambda: "HTTP 422" in f2.stderr)
    # Neither fork ever got a cosignature.
    assert f1.checkpoint().cosigned_size < grown
    assert f2.checkpoint().cosigned_size < grown


def test_metrics_of_pushes_and_http(
    server_factory: ServerFactory, witnesses: tuple[Path, list[WitnessProcess]]
) -> None:
    """Pushes counted per witness and result; a witness's cosignature age outlives its
    absence from the newest checkpoint; HTTP answers counted by status."""
    from tests.test_operable import scrape

    log_dir, ws = witnesses
    s = server_factory(
        *push_flags(ws, 1),
        "--metrics-listen",
        "127.0.0.1:0",
        data_dir=log_dir,
        origin=None,
        entry_format=None,
    )
    append(s, 3, "m")

    def sample(name: str, **labels: str) -> float:
        return scrape(s).get((name, tuple(sorted(labels.items()))), 0.0)

    def cosigned(w: WitnessProcess) -> float:
        return sample("affidavit_witness_pushes_total", witness=w.name, result="cosigned")

    wait_for("both witnesses' cosignatures", lambda: all(cosigned(w) >= 1 for w in ws))
    http_checkpoint(s)
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(s.http_url + "/tile/0/999", timeout=RPC_TIMEOUT)
    assert missing.value.code == 404
    m = scrape(s)
    for w in ws:
        assert 0 <= m[("affidavit_witness_cosignature_age_seconds", (("witness", w.name),))] < 3600
    assert sample("affidavit_http_requests_total", code="200") == 1
    assert sample("affidavit_http_requests_total", code="404") == 1
    # One witness goes away: the other keeps the quorum; the lost one's failures are counted
    # and its age still shows (growing), though the newest checkpoint lacks its cosignature.
    ws[1].kill()
    append(s, 2, "n")
    wait_for(
        "a failed push to the dead witness",
        lambda: (
            sample("affidavit_witness_pushes_total", witness=ws[1].name, result="unreachable") >= 1
        ),
    )
    assert (
        "affidavit_witness_cosignature_age_seconds",
        (("witness", ws[1].name),),
    ) in scrape(s)
