"""The tlog-tiles read API of a real `affidavit serve --http-listen`, read over real HTTP.

The reader here is written from c2sp.org/tlog-tiles with the standard library's http.client
(not our client): tiles fetched over HTTP must give the roots recomputed from the entries and
the very proofs the gRPC service gives.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import hashing, note, proofs, tiles
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.compact import CompactRange
from affidavit.merkle.tiles import Tile, TileHashReader
from affidavit.proto import affidavit_pb2 as pb

from affidavit import merkle
from tests import backends, serverproc
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess

server_factory = serverproc.server_factory


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def request(
    s: ServerProcess, path: str, method: str = "GET", headers: Mapping[str, str] | None = None
) -> Response:
    """One HTTP request with the path sent exactly as given (no client-side normalising)."""
    assert s.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=RPC_TIMEOUT)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        r = conn.getresponse()
        return Response(r.status, r.headers, r.read())
    finally:
        conn.close()


def bearer(s: ServerProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {s.auditor_token}"}


@dataclass
class Log:
    server: ServerProcess
    entries: list[bytes]
    sizes: list[int]
    """Tree sizes the log had a checkpoint at (one per batch appended)."""


BATCHES = (1, 255, 300, 257, 66_000 - 813)
"""Batch sizes: partial and full tiles at levels 0 and 1, and a level-2 tile (66,000 leaves)."""


@pytest.fixture(scope="module", params=backends.DEPLOYMENTS)
def log(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    """One log per storage deployment: on PostgreSQL + S3 the face reads the object store."""
    factory = ServerFactory(tmp_path_factory.mktemp("tiles"))
    try:
        args, env = backends.deployment(request)
        s = factory("--http-listen", "127.0.0.1:0", "--max-entry-bytes", "65535", *args, env=env)
        entries: list[bytes] = []
        sizes = []
        for n in BATCHES:
            batch = [f"entry {len(entries) + i}".encode() for i in range(n)]
            for at in range(0, n, 1000):
                chunk = batch[at : at + 1000]
                r = s.stub.AppendBatch(pb.AppendBatchRequest(entries=chunk), timeout=RPC_TIMEOUT)
                assert all(x.HasField("ok") for x in r.results)
            entries += batch
            sizes.append(len(entries))
        yield Log(s, entries, sizes)
    finally:
        factory.cleanup()


def fetch_checkpoint(s: ServerProcess) -> Checkpoint:
    r = request(s, "/checkpoint")
    assert r.status == 200
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    return checkpoints.parse(note.open(r.body.decode(), [s.verifier_key]))


def http_tile_reader(s: ServerProcess) -> tiles.TileReader:
    def read(wanted: list[Tile]) -> list[bytes]:
        out = []
        for tile in wanted:
            r = request(s, "/" + tile.path())
            assert r.status == 200, (tile.path(), r.status, r.body)
            assert r.headers["Content-Type"] == "application/octet-stream"
            assert len(r.body) == tile.width * 32
            out.append(r.body)
        return out

    return read


def test_tiles_give_the_roots_and_proofs_of_the_log(log: Log) -> None:
    s = log.server
    cp = fetch_checkpoint(s)
    assert cp.size == len(log.entries)
    assert cp.root_hash == merkle.root_hash(hashing.leaf_hashes(log.entries))
    reader = TileHashReader(cp.size, http_tile_reader(s))
    assert CompactRange.from_reader(cp.size, reader).root() == cp.root_hash
    for index in (0, 1, 255, 256, 811, 65_535, 65_536, cp.size - 1):
        proof = proofs.prove_inclusion(index, cp.size, reader)
        grpc_proof = s.stub.GetInclusionProof(
            pb.GetInclusionProofRequest(index=index, tree_size=cp.size), timeout=RPC_TIMEOUT
        )
        assert proof == list(grpc_proof.hashes)
        merkle.verify_inclusion(
            merkle.leaf_hash(log.entries[index]), index, cp.size, proof, cp.root_hash
        )
    # Every earlier checkpoint's size: its partial tiles are still served, and its root and
    # the consistency proof to today's tree come out of them.
    for old in log.sizes[:-1]:
        old_reader = TileHashReader(old, http_tile_reader(s))
        old_root = CompactRange.from_reader(old, old_reader).root()
        assert old_root == merkle.root_hash(hashing.leaf_hashes(log.entries[:old]))
        proof = proofs.prove_consistency(old, cp.size, reader)
        grpc_consistency = s.stub.GetConsistencyProof(
            pb.GetConsistencyProofRequest(first=old, second=cp.size), timeout=RPC_TIMEOUT
        )
        assert proof == list(grpc_consistency.hashes)
        merkle.verify_consistency(old, cp.size, proof, old_root, cp.root_hash)


def test_entry_bundles_hash_to_the_level_0_tiles(log: Log) -> None:
    s = log.server
    size = len(log.entries)
    for tile in [
        *tiles.tiles_for_size(size, tiles.ENTRIES)[:2],
        tiles.tiles_for_size(size, -1)[-1],
    ]:
        r = request(s, "/" + tile.path(), headers=bearer(s))
        assert r.status == 200, r.body
        body, entries = r.body, []
        while body:
            n = int.from_bytes(body[:2], "big")
            entries.append(body[2 : 2 + n])
            body = body[2 + n :]
        start = tile.index * 256
        assert entries == log.entries[start : start + tile.width]
        level0 = request(s, "/" + Tile(0, tile.index, tile.width).path()).body
        assert b"".join(hashing.leaf_hashes(entries)) == level0


def test_entry_bundles_need_the_auditor_token(log: Log) -> None:
    s = log.server
    path = "/tile/entries/000"
    r = request(s, path)
    assert r.status == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert b"Authorization: Bearer" in r.body
    r = request(s, path, headers={"Authorization": "Bearer afv_not-the-token"})
    assert r.status == 403
    assert b"afv_not-the-token" not in r.body  # never echoed
    r = request(s, path, headers={"Authorization": "Basic " + s.auditor_token})
    assert r.status == 401
    assert request(s, path, headers=bearer(s)).status == 200


def test_a_bundle_served_to_an_auditor_is_not_served_through_the_tile_route(log: Log) -> None:
    """The tile route kept what it served (TilesFace); a bundle's path with its slash escaped
    reaches that route, and must not be answered from what the entries route kept."""
    s = log.server
    bundle = request(s, "/tile/entries/000", headers=bearer(s))
    assert bundle.status == 200
    for path in ("/tile/entries%2F000", "/tile/entries%2f000", "/tile/%65ntries%2F000"):
        r = request(s, path)
        assert r.status == 400, (path, r.status)
        assert bundle.body not in r.body


def test_bundles_are_gzipped_when_accepted(log: Log) -> None:
    s = log.server
    plain = request(s, "/tile/entries/000", headers=bearer(s))
    zipped = request(s, "/tile/entries/000", headers={**bearer(s), "Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert len(zipped.body) < len(plain.body)
    assert gzip.decompress(zipped.body) == plain.body
    assert "Content-Encoding" not in plain.headers


def test_caching_headers_and_validators(log: Log) -> None:
    s = log.server
    full = request(s, "/tile/0/000")
    assert full.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    partial = request(s, "/" + tiles.tiles_for_size(len(log.entries), 0)[-1].path())
    assert partial.status == 200
    assert "immutable" not in partial.headers["Cache-Control"]
    cp = request(s, "/checkpoint")
    assert cp.headers["Cache-Control"] == "public, max-age=1"
    for r, path in ((full, "/tile/0/000"), (cp, "/checkpoint")):
        etag = r.headers["ETag"]
        again = request(s, path, headers={"If-None-Match": etag})
        assert again.status == 304 and again.body == b""
        assert request(s, path, headers={"If-None-Match": '"other"'}).status == 200
    head = request(s, "/tile/0/000", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Length"] == "8192"
    assert head.headers["ETag"] == full.headers["ETag"]


def test_a_partial_tile_of_an_earlier_size_is_the_prefix_of_todays(log: Log) -> None:
    s = log.server
    today = request(s, "/tile/0/000").body
    for width in (1, 17, 255):
        r = request(s, f"/tile/0/000.p/{width}")
        assert r.status == 200 and r.body == today[: width * 32]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/tile/0/0", 400),  # not zero-padded
        ("GET", "/tile/0/1000", 400),  # not split in groups of three
        ("GET", "/tile/00/000", 400),  # level with a leading zero
        ("GET", "/tile/64/000", 400),  # level beyond 63
        ("GET", "/tile/0/000.p/0", 400),  # width 0
        ("GET", "/tile/0/000.p/256", 400),  # a full tile named as partial
        ("GET", "/tile/0/000.p/010", 400),  # width with a leading zero
        ("GET", "/tile/0/x000/000", 400),  # non-canonical index
        ("GET", "/tile/0/000/", 400),
        ("GET", "/tile/0/x001/000", 404),  # beyond the tree
        ("GET", "/tile/0/" + "x999/" * 40 + "999", 404),  # a huge index
        ("GET", "/tile/3/000", 404),  # a level the tree does not reach
        ("GET", "/tile/entries/x001/000", 401),  # the token comes first: nothing is revealed
        ("GET", "/tile/../checkpoint", 400),
        ("GET", "/tile/0/../../checkpoint", 400),
        ("GET", "/tile/%2e%2e/checkpoint", 400),
        ("GET", "/tile/0/%30%30%30", 200),  # the same URL (RFC 3986 6.2.2.2)
        ("GET", "/tile/", 404),
        ("GET", "/nothing-here", 404),
        ("GET", "/tile/0/000?x=1", 200),
        ("POST", "/checkpoint", 405),
        ("PUT", "/tile/0/000", 405),
        ("DELETE", "/tile/entries/000", 405),
        ("GET", "/tile/0/" + "x000/" * 2000 + "000", 400),  # request line over the limit
    ],
)
def test_error_paths(log: Log, method: str, path: str, status: int) -> None:
    r = request(log.server, path, method)
    assert r.status == status, r.body
    if status in (400, 404, 401):
        assert r.body, "an error says what is wrong"
        assert r.headers["Content-Type"].startswith("text/plain")


def test_a_partial_tile_beyond_the_current_width_is_404(log: Log) -> None:
    last = tiles.tiles_for_size(len(log.entries), 0)[-1]
    wider = Tile(0, last.index, last.width + 1)
    r = request(log.server, "/" + wider.path())
    assert r.status == 404
    assert b"does not have this tile" in r.body


def test_entries_over_a_bundle_limit_are_refused(server_factory: ServerFactory) -> None:
    too_big = serverproc.run_cli(
        "serve", "--data-dir", str(server_factory.new_dir()), "--max-entry-bytes", "65536"
    )
    assert too_big.returncode == 2
    assert "65,535" in too_big.stderr and "entry bundle" in too_big.stderr
    s = server_factory()
    r = serverproc.status_of(s.stub.Append, pb.AppendRequest(entry=b"x" * 65_536))
    assert "65,535" in (r.details() or "")
    ok = s.stub.Append(pb.AppendRequest(entry=b"y" * 65_535), timeout=RPC_TIMEOUT)
    assert ok.index == 0


def test_no_auditor_tokens_means_no_bundles(server_factory: ServerFactory, tmp_path: Path) -> None:
    s = server_factory.create("--http-listen", "127.0.0.1:0", flags=False)
    s.args = [
        "--data-dir",
        str(server_factory.new_dir()),
        "--listen",
        "127.0.0.1:0",
        "--origin",
        serverproc.ORIGIN,
        "--entry-format",
        "opaque",
        *s.args,
    ]
    s.start()
    s.public_stub.Append(pb.AppendRequest(entry=b"e"), timeout=RPC_TIMEOUT)
    r = request(s, "/tile/entries/000.p/1", headers={"Authorization": "Bearer anything"})
    assert r.status == 403
    assert b"no auditor tokens" in r.body
    assert request(s, "/tile/0/000.p/1").body == merkle.leaf_hash(b"e")
    assert hashlib.sha256(b"\x00e").digest() == merkle.leaf_hash(b"e")
