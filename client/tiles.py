"""Reading a log through its C2SP tlog-tiles HTTP API (c2sp.org/tlog-tiles), no gRPC.

TileLog fetches the checkpoint, hash tiles (in parallel, over keep-alive connections) and
entry bundles from a URL prefix, and builds inclusion and consistency proofs from the tiles
with merkle's TileHashReader. Nothing fetched is trusted: every proof made from tiles is
checked against a signed checkpoint by the caller (client.Client), so an altered or stale tile
shows up as a proof that fails, never as a wrong answer.

A partial tile may be gone once its full tile exists (tlog-tiles allows deleting it): a 404 on
a partial tile is retried as the full tile, whose first hashes are the partial tile's. Any other
tile or bundle missing inside the signed tree is the log failing to serve what it signed: it is
refused (RefusedError, exit 3 from the CLI), never "not found" (exit 6 means the entry is not in
the log, which the checkpoint contradicts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
from affidavit.client.errors import RefusedError, UnavailableError
from affidavit.merkle import proofs, tiles
from affidavit.merkle.tiles import Tile, TileHashReader

MAX_PARALLEL = 16
"""Tile requests in flight at once."""


class TileLog:
    """A tlog-tiles log at url (its prefix: url/checkpoint, url/tile/...). Not thread-safe;
    close() when done (or use it as a context manager)."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None

    def close(self) -> None:
        if self._session is not None:
            self._loop.run_until_complete(self._session.close())
        self._loop.close()

    def __enter__(self) -> TileLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _get(self, path: str, *, auth: bool = False) -> tuple[int, bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=MAX_PARALLEL)
            )
        try:
            async with self._session.get(
                f"{self.url}/{path}", headers=self._headers if auth else None
            ) as r:
                return r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise UnavailableError(f"{self.url}/{path}: {e or type(e).__name__}") from None

    def _run(self, path: str, *, auth: bool = False) -> bytes:
        status, body = self._loop.run_until_complete(self._get(path, auth=auth))
        if status != 200:
            raise _refused(f"{self.url}/{path}", status, body)
        return body

    def checkpoint(self) -> str:
        """The checkpoint note the log publishes (unverified)."""
        return self._run("checkpoint").decode("utf-8", errors="replace")

    def read_tiles(self, wanted: Sequence[Tile]) -> list[bytes]:
        """A TileReader: the bytes of each tile, fetched in parallel."""
        return self._loop.run_until_complete(self._read_tiles(wanted))

    async def _read_tiles(self, wanted: Sequence[Tile]) -> list[bytes]:
        return list(await asyncio.gather(*(self._read_tile(t) for t in wanted)))

    async def _read_tile(self, tile: Tile) -> bytes:
        status, body = await self._get(tile.path())
        if status == 404 and tile.width < tiles.WIDTH:
            status, body = await self._get(Tile(tile.level, tile.index).path())
        if status != 200:
            raise _refused(f"{self.url}/{tile.path()}", status, body)
        if len(body) < tile.width * 32:
            raise RefusedError("DATA_LOSS", f"{tile.path()} is {len(body)} bytes, too short")
        return body[: tile.width * 32]

    def entries(self, start: int, end: int) -> list[bytes]:
        """Entries [start, end) of a tree of at least end entries, from entry bundles (needs an
        auditor token). Unverified: hash them and check against the level-0 tiles."""
        out: list[bytes] = []
        for n in range(start // tiles.WIDTH, (end + tiles.WIDTH - 1) // tiles.WIDTH):
            tile = tiles.tile_at(tiles.ENTRIES, n, end)
            out += _unbundle(self._run(tile.path(), auth=True), tile.path())[: tile.width]
        first = start - (start // tiles.WIDTH) * tiles.WIDTH
        return out[first : first + end - start]

    def reader(self, size: int) -> TileHashReader:
        """Node hashes of the tree of size, from its tiles (fetched once, then cached)."""
        return TileHashReader(size, self.read_tiles)

    def inclusion_proof(self, index: int, size: int) -> tuple[bytes, list[bytes]]:
        """Entry index's leaf hash and inclusion proof in the tree of size, from tiles."""
        reader = self.reader(size)
        (leaf,) = reader.read_hashes([(0, index)])
        return leaf, proofs.prove_inclusion(index, size, reader)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        return proofs.prove_consistency(old, new, self.reader(new))


def _unbundle(body: bytes, where: str) -> list[bytes]:
    """The entries of an entry bundle: each a big-endian uint16 length, then its bytes."""
    out, at = [], 0
    while at < len(body):
        if at + 2 > len(body):
            raise RefusedError("DATA_LOSS", f"{where}: truncated entry bundle")
        n = int.from_bytes(body[at : at + 2], "big")
        if at + 2 + n > len(body):
            raise RefusedError("DATA_LOSS", f"{where}: truncated entry bundle")
        out.append(body[at + 2 : at + 2 + n])
        at += 2 + n
    return out


def _refused(where: str, status: int, body: bytes) -> Exception:
    reason = body.decode("utf-8", errors="replace").strip()[:300]
    if status >= 500:
        return UnavailableError(f"{where}: HTTP {status}: {reason}")
    return RefusedError(f"HTTP {status}", f"{where}: {reason}")
