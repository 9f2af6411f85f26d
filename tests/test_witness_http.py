"""Our tlog-witness server (`affidavit witness serve`), checked from outside with a client
written here from c2sp.org/tlog-witness (http.client, not our witness classes): the full
status-code matrix, durability across a crash, evidence of a fork, and one winner among
concurrent submissions."""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from affidavit.merkle import hashing, note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.cosignature import CosignatureV1Verifier

from affidavit import merkle
from tests.witnessproc import WitnessProcess

ORIGIN = "example.com/witnessed"
LOG_SIGNER, LOG_KEY = note.generate_key(ORIGIN)
ENTRIES = [f"entry {i}".encode() for i in range(64)]
LEAVES = hashing.leaf_hashes(ENTRIES)


@dataclass
class Reply:
    status: int
    content_type: str
    body: str


def post(url: str, body: bytes | str, path: str = "/add-checkpoint", method: str = "POST") -> Reply:
    """One request exactly as the spec describes it (HTTP/1.1, the body as given)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        data = body.encode() if isinstance(body, str) else body
        conn.request(method, path, body=data)
        r = conn.getresponse()
        return Reply(r.status, r.headers.get("Content-Type", ""), r.read().decode())
    finally:
        conn.close()


def signed(size: int, leaves: Sequence[bytes] = LEAVES, signer: str = LOG_SIGNER) -> str:
    root = hashing.root_hash(list(leaves[:size]))
    return note.sign(Checkpoint(ORIGIN, size, root).format(), signer)


def body(old: int, new: int, proof: Sequence[bytes] | None = None, cp: str | None = None) -> str:
    """old <N>, the consistency proof lines, an empty line, the checkpoint."""
    if proof is None:
        proof = merkle.consistency_proof(LEAVES, old, new) if 0 < old < new else []
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]
    return "\n".join(lines) + "\n\n" + (cp or signed(new))


def cosignatures_verify(reply: Reply, w: WitnessProcess, cp_note: str) -> None:
    assert reply.status == 200, reply.body
    assert reply.content_type == "text/plain; charset=utf-8"
    assert reply.body and all(line.startswith("— ") for line in reply.body.splitlines())
    # As the spec suggests: concatenate to the checkpoint, open with the witness key.
    verifier = CosignatureV1Verifier.from_key_text(w.verifier_key)
    opened = note.open_note(cp_note + reply.body, [verifier])
    assert [s.name for s in opened.signatures] == [w.name]


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[WitnessProcess]:
    w = WitnessProcess(tmp_path / "w1", [LOG_KEY]).start()
    try:
        yield w
    finally:
        w.kill()


def evidence_files(w: WitnessProcess) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((w.state_dir / "evidence").glob("*.json"))]


def test_status_code_matrix(witness: WitnessProcess) -> None:
    w = witness
    url = w.url
    # 404: an origin the witness does not know.
    other_signer, _ = note.generate_key("example.com/other")
    other = note.sign(Checkpoint("example.com/other", 1, LEAVES[0]).format(), other_signer)
    assert post(url, body(0, 1, cp=other)).status == 404
    # 403: the right origin, but not the log's key.
    impostor, _ = note.generate_key(ORIGIN)
    assert post(url, body(0, 3, cp=signed(3, signer=impostor))).status == 403
    # 400: malformed bodies, and old > size.
    for bad in (
        "old 0\n" + signed(3),  # no empty line
        "old 00\n\n" + signed(3),
        "old -1\n\n" + signed(3),
        "new 0\n\n" + signed(3),
        "old 0\nnot-base64\n\n" + signed(3),
        "old 0\n\nnot a note",
        "old 4\n\n" + signed(3),
        body(0, 3, proof=[LEAVES[0]]),  # a proof from size 0
        "old 1\n" + "\n".join([base64.b64encode(LEAVES[0]).decode()] * 64) + "\n\n" + signed(3),
    ):
        r = post(url, bad)
        assert r.status == 400, (bad[:40], r)
        assert r.body.strip(), "a 400 says what is wrong"
    assert (
        post(
            url,
            b"\xff\xfe",
        ).status
        == 400
    )
    # 200: first checkpoint (no state yet: old 0).
    cp5 = signed(5)
    cosignatures_verify(post(url, body(0, 5, cp=cp5)), w, cp5)
    # 409: old is not the stored size; the body is the stored size, exactly that type.
    r = post(url, body(0, 8))
    assert (r.status, r.content_type, r.body) == (409, "text/x.tlog.size", "5\n")
    r = post(url, body(3, 8))
    assert (r.status, r.body) == (409, "5\n")
    # 422: the right old size, a proof that does not verify; nothing changes.
    bad_proof = list(merkle.consistency_proof(LEAVES, 5, 8))
    bad_proof[0] = bytes(32)
    assert post(url, body(5, 8, proof=bad_proof)).status == 422
    assert post(url, body(0, 8)).body == "5\n"
    assert [e["problem"] for e in evidence_files(w)] == ["inconsistent"]
    # 200: the right proof; then the same checkpoint again is cosigned again.
    cp8 = signed(8)
    cosignatures_verify(post(url, body(5, 8, cp=cp8)), w, cp8)
    cosignatures_verify(post(url, body(8, 8, cp=cp8)), w, cp8)
    # A checkpoint with extra signatures from unknown keys: those are ignored.
    extra_signer, _ = note.generate_key("example.com/someone-else")
    cp9 = note.merge([signed(9), note.sign(signed(9).split("\n\n")[0] + "\n", extra_signer)])
    cosignatures_verify(post(url, body(8, 9, cp=cp9)), w, cp9)
    # 405 for anything but POST; 404 elsewhere; 413 for a huge body.
    assert post(url, "", method="GET").status == 405
    assert post(url, "", method="PUT").status == 405
    assert post(url, body(9, 9), path="/add-checkpoint/").status == 404
    assert post(url, "old 9\n" + "A" * (1 << 20)).status == 413
    # A fork: another tree of the same size. 409 (the size), evidence, and the log blocked.
    forked = [*LEAVES[:9]]
    forked[4] = hashing.leaf_hash(b"rewritten")
    r = post(url, body(9, 9, cp=signed(9, forked)))
    assert (r.status, r.content_type, r.body) == (409, "text/x.tlog.size", "9\n")
    problems = sorted(str(e["problem"]) for e in evidence_files(w))
    assert problems == ["fork", "inconsistent"]
    (fork,) = [e for e in evidence_files(w) if e["problem"] == "fork"]
    assert fork["cosigned"]["size"] == 9 and fork["presented"]["size"] == 9  # type: ignore[index]
    assert fork["cosigned"]["root_hash"] != fork["presented"]["root_hash"]  # type: ignore[index]
    r = post(url, body(9, 10))
    assert r.status == 403 and "fork" in r.body
    assert w.saw("FORK DETECTED"), w.stderr


def test_state_survives_a_crash(witness: WitnessProcess) -> None:
    w = witness
    cosignatures_verify(post(w.url, body(0, 7, cp=signed(7))), w, signed(7))
    w.kill()
    w.start()
    assert post(w.url, body(0, 9)).body == "7\n"
    cp9 = signed(9)
    cosignatures_verify(post(w.url, body(7, 9, cp=cp9)), w, cp9)


def test_concurrent_submissions_have_one_winner(witness: WitnessProcess) -> None:
    w = witness
    assert post(w.url, body(0, 10)).status == 200
    replies: dict[int, Reply] = {}

    def submit(size: int) -> None:
        replies[size] = post(w.url, body(10, size))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(11, 27)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, r in replies.items() if r.status == 200]
    # The first to take the lock wins; every later one finds the stored size moved on (409),
    # unless it is a later submission of... no: all sent old 10, so exactly one wins.
    assert len(winners) == 1, {n: r.status for n, r in replies.items()}
    losers = {r.body for n, r in replies.items() if n not in winners}
    assert losers == {f"{winners[0]}\n"}
    assert post(w.url, body(0, 30)).body == f"{winners[0]}\n"


def test_a_bad_state_stops_the_start(tmp_path: Path) -> None:
    w = WitnessProcess(tmp_path / "w", [LOG_KEY]).start()
    assert post(w.url, body(0, 3)).status == 200
    w.stop()
    state = next(w.state_dir.glob("*.checkpoint"))
    state.write_text(state.read_text().replace("\n3\n", "\n4\n"))
    with pytest.raises(AssertionError, match="does not verify"):
        w.start(timeout=30)
