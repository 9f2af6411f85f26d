"""The server's HTTP face: one aiohttp application, in the event loop of the gRPC server.

The tlog-tiles read API sits at the URL root; other faces (the console under /console/, ...)
are sub-applications mounted under their own prefix, each with its own routes and middleware.
Every request passes the same limits: a bounded request line, headers and body, and a bounded
number of requests in flight (beyond it, 503 with Retry-After, so a flood of readers queues at
the client instead of in this process's memory, and appends never wait behind reads).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web

log = logging.getLogger("affidavit.server.http")

MAX_BODY_BYTES = 64 << 10
"""Largest request body (the read API takes none; sub-applications' forms are small)."""

MAX_LINE_BYTES = 4096
"""Longest request line and header line: a tile path is at most about 60 bytes."""

MAX_IN_FLIGHT = 1024
"""Requests handled at once; beyond it, 503 Service Unavailable with Retry-After: 1."""

KEEPALIVE_S = 75.0
"""How long an idle keep-alive connection stays open."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Face:
    """A part of the HTTP face: routes at the root, or a sub-application under a prefix."""

    routes: Iterable[web.AbstractRouteDef] = ()
    mounts: Mapping[str, web.Application] | None = None


def make_app(
    faces: Iterable[Face],
    *,
    max_in_flight: int = MAX_IN_FLIGHT,
    on_answer: Callable[[int], None] | None = None,
) -> web.Application:
    """One application holding every face: root routes, then each mount under its prefix
    (a prefix such as "/console" serves /console/...). on_answer is told each answer's status
    (server.metrics counts them)."""
    in_flight = 0

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight
        if in_flight >= max_in_flight:
            busy = web.Response(
                status=503,
                text=f"busy: {max_in_flight} requests in flight; retry in a second\n",
                headers={"Retry-After": "1"},
            )
            if on_answer is not None:
                on_answer(busy.status)
            return busy
        in_flight += 1
        status = 500  # unless the handler answers
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:  # aiohttp's answers raised as exceptions (404, ...)
            status = e.status
            raise
        finally:
            in_flight -= 1
            if on_answer is not None:
                on_answer(status)

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[limit])
    for face in faces:
        app.add_routes(face.routes)
        for prefix, sub in (face.mounts or {}).items():
            app.add_subapp(prefix, sub)
    return app


async def start(app: web.Application, listen: str) -> tuple[web.AppRunner, int]:
    """Serve app on listen (host:port; port 0 picks one): the runner (cleanup() stops it) and
    the port bound. OSError, saying so, if the address cannot be bound."""
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(
            f"--http-listen takes HOST:PORT with a port from 0 to 65535, not {listen!r}"
        )
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=KEEPALIVE_S,
        max_line_size=MAX_LINE_BYTES,
        max_field_size=MAX_LINE_BYTES,
    )
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port_text), reuse_address=True)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(f"cannot listen for HTTP on {listen}: {e.strerror or e}") from None
    port = 0
    for address in runner.addresses:
        port = int(address[1])
    return runner, port
