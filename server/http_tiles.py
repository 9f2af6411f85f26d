"""The C2SP tlog-tiles read API of a log, at the URL root (c2sp.org/tlog-tiles).

    GET /checkpoint                    the published checkpoint (server.published), text/plain
    GET /tile/<L>/<N>[.p/<W>]          hash tiles, height 8: the stored tile's first W hashes
    GET /tile/entries/<N>[.p/<W>]      entry bundles: each entry as uint16 length ‖ bytes

HEAD works wherever GET does (aiohttp answers it without a body); any other method is 405.
Tiles and bundles carry a strong ETag (If-None-Match gives 304); full tiles and bundles never
change and say so (immutable, a year), partial ones and the checkpoint are short-lived. Entry
bundles are gzipped when the client accepts it (hashes do not compress). A tile path must be
canonical (merkle.tiles.parse_path): anything else is 400, a tile the tree does not have 404.

Entry contents are for auditors only (DESIGN.md, access): bundles need
`Authorization: Bearer <auditor token>` (401 without one, 403 with a wrong one, and 403 when
the log has no auditor tokens at all). Tiles and the checkpoint are public.

Invariant: every byte served is read from the log's storage as committed under a signed
checkpoint at least as large as the tile asked for; a client checks it against the checkpoint.
On a log several frontends share (server.logstore), the checkpoint and any tile beyond the tree
this frontend holds are answered after it looks for a newer head, so every frontend serves the
newest tree any of them published.

Tiles and bundles once served are kept, with their ETags, by their canonical path (level, index
and width: the bytes a path names never change, since full tiles never change and a partial one
of width W is the first W hashes of every later one), most recently used first, within
SERVED_BYTES; a kept path is served without parsing, reading or hashing it again. The tree never
shrinks, so a path served once stays in it. A shared store's reads (object GETs) are made in a
thread: the event loop, which this face shares with the gRPC service, never waits on one.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from affidavit.merkle import tiles
from affidavit.merkle.errors import TileError
from affidavit.server.access import Auditors
from affidavit.server.http_app import Face
from affidavit.server.logstore import LogStore, read_off_loop
from aiohttp import web

IMMUTABLE = "public, max-age=31536000, immutable"
PARTIAL = "public, max-age=10"
CHECKPOINT = "public, max-age=1"
"""The checkpoint changes with every batch: cached for at most a second (tlog-tiles: a few)."""

SERVED_BYTES = 16 << 20
"""The bound on the bodies of tiles and bundles kept once served (2,048 full hash tiles)."""

BUNDLES = "tile/entries/"
"""Where entry bundles' paths start."""

TEXT = "text/plain"
"""Served with charset=utf-8."""
BINARY = "application/octet-stream"


@dataclass(frozen=True)
class _Served:
    """A tile's or bundle's body as served, its ETag (sha256, 32 hex digits) and lifetime."""

    body: bytes
    etag: str
    cache: str


class TilesFace:
    """The tlog-tiles routes over one log: its storage, committed tree size, published note,
    and how to look for a newer tree (the sequencer's refresh; a no-op on an unshared log)."""

    def __init__(
        self,
        storage: LogStore,
        tree_size: Callable[[], int],
        published_note: Callable[[], str],
        auditors: Auditors,
        refresh: Callable[[], Awaitable[None]],
    ) -> None:
        self._storage = storage
        self._tree_size = tree_size
        self._published = published_note
        self._auditors = auditors
        self._refresh = refresh
        self._served: OrderedDict[str, _Served] = OrderedDict()
        self._served_bytes = 0

    def face(self) -> Face:
        return Face(
            routes=[
                web.get("/checkpoint", self.checkpoint),
                web.get("/tile/entries/{path:.+}", self.entries),
                web.get("/tile/{path:.+}", self.tile),
            ]
        )

    async def checkpoint(self, request: web.Request) -> web.StreamResponse:
        await self._refresh()
        body = self._published().encode()
        return _respond(request, body, _etag(body), TEXT, CHECKPOINT)

    async def _requested(self, path: str) -> tiles.Tile:
        """The tile a path names, if the committed tree has it at that width; else HTTPError."""
        try:
            tile = tiles.parse_path(path)
        except TileError as e:
            raise _error(web.HTTPBadRequest, f"{e}; see c2sp.org/tlog-tiles") from None
        if not _has(tile, self._tree_size()):
            await self._refresh()  # another frontend's newer tree, if the log is shared
        size = self._tree_size()
        if not _has(tile, size):
            raise _error(
                web.HTTPNotFound, f"{path}: the log's tree (size {size}) does not have this tile"
            )
        return tile

    async def tile(self, request: web.Request) -> web.StreamResponse:
        path = "tile/" + request.match_info["path"]
        # A bundle's path reaches this route too, its slash escaped (tile/entries%2F000):
        # never answered from what the entries route kept, which its auditors alone may read.
        served = None if path.startswith(BUNDLES) else self._kept(path)
        if served is None:
            tile = await self._requested(path)
            if tile.level == tiles.ENTRIES:  # only through the entries route
                raise _error(web.HTTPBadRequest, "entry bundles are at tile/entries/<N>")
            (data,) = await read_off_loop(self._storage, self._storage.read_tiles, [tile])
            served = self._keep(path, tile, bytes(data[: tile.width * 32]), True)
        return _respond(request, served.body, served.etag, BINARY, served.cache)

    async def entries(self, request: web.Request) -> web.StreamResponse:
        self._authorise(request)
        path = BUNDLES + request.match_info["path"]
        served = self._kept(path)
        if served is None:
            tile = await self._requested(path)
            start = tile.index * tiles.WIDTH
            parts = []
            for _, entry in await read_off_loop(
                self._storage, self._bundle_entries, start, start + tile.width
            ):
                parts.append(len(entry).to_bytes(2, "big"))
                parts.append(entry)
            # A store that cannot read every entry now stops short (see LogStore.entries):
            # such a bundle is served as read, and not kept.
            served = self._keep(path, tile, b"".join(parts), len(parts) == 2 * tile.width)
        return _respond(request, served.body, served.etag, BINARY, served.cache, compress=True)

    def _bundle_entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """The stored entries [start, end), read whole (so that a thread may read them)."""
        return list(self._storage.entries(start, end))

    def _kept(self, path: str) -> _Served | None:
        """What was served at path before, if it is still kept (then most recently used)."""
        served = self._served.get(path)
        if served is not None:
            self._served.move_to_end(path)
        return served

    def _keep(self, path: str, tile: tiles.Tile, body: bytes, complete: bool) -> _Served:
        """body, served at path (tile's canonical path); kept if complete (every hash or entry
        the path names; see the module doc)."""
        served = _Served(body, _etag(body), _lifetime(tile))
        if complete and len(body) <= SERVED_BYTES and path not in self._served:
            self._served[path] = served
            self._served_bytes += len(body)
            while self._served_bytes > SERVED_BYTES:
                _, old = self._served.popitem(last=False)
                self._served_bytes -= len(old.body)
        return served

    def _authorise(self, request: web.Request) -> None:
        if not self._auditors.configured:
            raise _error(
                web.HTTPForbidden,
                "entry bundles are for auditors, and this log has no auditor tokens "
                "(its operator adds them with serve --auditor-token-hash)",
            )
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _error(
                web.HTTPUnauthorized,
                "entry bundles need an auditor token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": 'Bearer realm="affidavit"'},
            )
        if not self._auditors.allows(token.strip()):
            raise _error(web.HTTPForbidden, "that token is not an auditor token of this log")


def _has(tile: tiles.Tile, size: int) -> bool:
    """Whether the tree of this size holds the tile at (at least) its width."""
    try:
        return tiles.tile_at(tile.level, tile.index, size).width >= tile.width
    except TileError:
        return False


def _lifetime(tile: tiles.Tile) -> str:
    return IMMUTABLE if tile.width == tiles.WIDTH else PARTIAL


def _error(
    kind: type[web.HTTPError], message: str, headers: dict[str, str] | None = None
) -> web.HTTPError:
    return kind(text=message + "\n", content_type="text/plain", headers=headers)


def _etag(body: bytes) -> str:
    """body's strong validator: its sha256, 32 hex digits."""
    return hashlib.sha256(body).hexdigest()[:32]


def _respond(
    request: web.Request,
    body: bytes,
    etag: str,
    content_type: str,
    cache: str,
    *,
    compress: bool = False,
) -> web.StreamResponse:
    """body with its ETag and cache lifetime; 304 when the client holds it already."""
    # A compressed body is another representation of the same bytes: a weak validator then.
    headers = {"Cache-Control": cache, "ETag": f'W/"{etag}"' if compress else f'"{etag}"'}
    if compress:
        headers["Vary"] = "Accept-Encoding"
    matches = request.if_none_match
    if matches is not None and any(m.value == etag or m.value == "*" for m in matches):
        return web.Response(status=304, headers=headers)
    response = web.Response(body=body, headers=headers)
    response.content_type = content_type
    if content_type == TEXT:
        response.charset = "utf-8"
    if compress and len(body) > 256:
        response.enable_compression()
    return response
