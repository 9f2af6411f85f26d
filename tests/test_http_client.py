"""Reading a real log through tlog-tiles only: `affidavit verify/prove --tiles`, tlog-proof out
and back (`prove --format tlog-proof`, `verify-proof`), `affidavit tiles export`, and the
exported directory served by a plain static file server as the same read API."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from affidavit.client.tiles import TileLog
from affidavit.merkle import tlogproof
from affidavit.proto import affidavit_pb2 as pb
from aiohttp import web

from tests import serverproc
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess, run_cli

server_factory = serverproc.server_factory

SIZE = 600


@contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """aiohttp's static file handler over directory, in a thread; yields its URL."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, object] = {}

    async def main() -> None:
        app = web.Application()
        app.router.add_static("/", directory)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["port"] = runner.addresses[0][1]
        state["stop"] = stop = asyncio.Event()
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(30)
    try:
        yield f"http://127.0.0.1:{state['port']}"
    finally:
        stop = state["stop"]
        assert isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


@pytest.fixture
def log(server_factory: ServerFactory) -> ServerProcess:
    s = server_factory("--http-listen", "127.0.0.1:0")
    entries = [f"entry {i}".encode() for i in range(SIZE)]
    s.stub.AppendBatch(pb.AppendBatchRequest(entries=entries), timeout=RPC_TIMEOUT)
    return s


def cli(s: ServerProcess, tmp: Path, *args: str) -> tuple[int, str, str]:
    r = run_cli(
        *args,
        env={
            "AFFIDAVIT_LOG_KEY": s.verifier_key,
            "AFFIDAVIT_SERVER": "127.0.0.1:1",  # nothing there: no gRPC is used
            "AFFIDAVIT_TRUST_DIR": str(tmp / "trust"),
        },
    )
    return r.returncode, r.stdout, r.stderr


def test_verify_and_prove_from_tiles_alone(log: ServerProcess, tmp_path: Path) -> None:
    rc, out, err = cli(log, tmp_path, "verify", "--tiles", log.http_url, "--json")
    assert rc == 0, err
    assert json.loads(out)["size"] == SIZE
    for index in (0, 255, 256, SIZE - 1):
        rc, out, err = cli(log, tmp_path, "prove", str(index), "--tiles", log.http_url, "--json")
        assert rc == 0, err
        got = json.loads(out)
        grpc_proof = log.stub.GetInclusionProof(
            pb.GetInclusionProofRequest(index=index, tree_size=SIZE), timeout=RPC_TIMEOUT
        )
        assert got["proof"] == [h.hex() for h in grpc_proof.hashes]
        assert got["leaf_hash"] == grpc_proof.leaf_hash.hex()
    rc, _, err = cli(log, tmp_path, "prove", str(SIZE), "--tiles", log.http_url)
    assert rc == 6 and "not in the tree" in err  # not found, as over gRPC
    rc, _, err = cli(log, tmp_path, "prove", "--leaf-hash", "00" * 32, "--tiles", log.http_url)
    assert rc == 2 and "give the entry's index" in err


def test_tlog_proof_out_and_back(log: ServerProcess, tmp_path: Path) -> None:
    rc, text, err = cli(
        log, tmp_path, "prove", "7", "--tiles", log.http_url, "--format", "tlog-proof"
    )
    assert rc == 0, err
    proof = tlogproof.parse(text)
    assert proof.index == 7
    assert proof.format() == text
    env_args = ("--log-key", log.verifier_key)
    (tmp_path / "p.tlog-proof").write_text(text)
    (tmp_path / "entry").write_bytes(b"entry 7")
    rc, out, err = cli(
        log,
        tmp_path,
        "verify-proof",
        str(tmp_path / "p.tlog-proof"),
        "--entry",
        f"@{tmp_path / 'entry'}",
        *env_args,
    )
    assert rc == 0, err
    assert "proof verified" in out
    rc, _, err = cli(
        log,
        tmp_path,
        "verify-proof",
        str(tmp_path / "p.tlog-proof"),
        "--entry",
        "entry 8",
        *env_args,
    )
    assert rc == 1 and "VERIFICATION FAILED" in err
    rc, _, err = cli(
        log,
        tmp_path,
        "verify-proof",
        str(tmp_path / "p.tlog-proof"),
        "--entry",
        "entry 7",
        *env_args,
        "--quorum",
        "1",
        "--witness-key",
        "w+00000000+BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    )
    assert rc != 0
    # Over gRPC the same proof comes out, byte for byte.
    r = run_cli(
        "prove",
        "7",
        "--format",
        "tlog-proof",
        "--server",
        log.address,
        "--log-key",
        log.verifier_key,
        "--trust-dir",
        str(tmp_path / "t2"),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == text


def test_export_serves_as_the_read_api_and_catches_tampering(
    log: ServerProcess, tmp_path: Path
) -> None:
    out_dir = tmp_path / "published"
    rc, out, err = cli(
        log, tmp_path, "tiles", "export", str(out_dir), "--tiles", log.http_url, "--json"
    )
    assert rc == 0, err
    assert json.loads(out) == {"origin": serverproc.ORIGIN, "size": SIZE, "tiles": 4, "bundles": 0}
    assert sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()) == [
        "checkpoint",
        "tile/0/000",
        "tile/0/001",
        "tile/0/002.p/88",
        "tile/1/000.p/2",
    ]
    r = run_cli(
        "tiles",
        "export",
        str(out_dir),
        "--tiles",
        log.http_url,
        "--entries",
        "--log-key",
        log.verifier_key,
        "--token",
        log.auditor_token,
    )
    assert r.returncode == 0, r.stderr
    bundle = (out_dir / "tile/entries/000").read_bytes()
    assert bundle[:2] == len(b"entry 0").to_bytes(2, "big") and bundle[2:9] == b"entry 0"
    with static_server(out_dir) as url:
        with TileLog(url) as read:
            assert read.checkpoint() == (out_dir / "checkpoint").read_text()
        rc, out, err = cli(log, tmp_path, "prove", "300", "--tiles", url)
        assert rc == 0, err
        # One flipped byte in a tile: the proof no longer reaches the signed root.
        tile = out_dir / "tile/0/001"
        data = bytearray(tile.read_bytes())
        data[(300 - 256) * 32 + 5] ^= 1
        tile.write_bytes(bytes(data))
        rc, _, err = cli(log, tmp_path, "prove", "300", "--tiles", url)
        assert rc == 1 and "VERIFICATION FAILED" in err
        rc, _, err = cli(log, tmp_path, "tiles", "export", str(tmp_path / "again"), "--tiles", url)
        assert rc == 1 and "VERIFICATION FAILED" in err


def test_an_unreachable_tiles_url_is_exit_4(log: ServerProcess, tmp_path: Path) -> None:
    rc, _, err = cli(log, tmp_path, "verify", "--tiles", "http://127.0.0.1:1")
    assert rc == 4, err


def test_a_tile_missing_inside_the_signed_tree_is_refused(
    log: ServerProcess, tmp_path: Path
) -> None:
    """The checkpoint says entry 300 is in the tree: a log that cannot serve its tile failed to
    serve what it signed (exit 3, naming the tile), not "no such entry" (exit 6)."""
    out_dir = tmp_path / "published"
    rc, _, err = cli(log, tmp_path, "tiles", "export", str(out_dir), "--tiles", log.http_url)
    assert rc == 0, err
    (out_dir / "tile/0/001").unlink()
    with static_server(out_dir) as url:
        rc, _, err = cli(log, tmp_path, "prove", "100", "--tiles", url)
        assert rc == 0, err
        rc, _, err = cli(log, tmp_path, "prove", "300", "--tiles", url)
    assert rc == 3, err
    assert "tile/0/001" in err and "404" in err
