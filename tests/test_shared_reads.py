"""A frontend of a shared log goes on answering while one of its reads waits on the object store.

On PostgreSQL + S3, an entry bundle or tile that is in none of a frontend's caches is an object
GET: read on the event loop, it held up every other call of the frontend (gRPC and HTTP) for as
long as the object store took. Such reads are made in threads (server.http_tiles for the HTTP
face, LogService.GetEntries for pages). The object store is held here by stopping it
(SIGSTOP): the reads cannot finish until it is let go, so the test does not depend on timing.
"""

from __future__ import annotations

import http.client
import signal
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from affidavit.proto import affidavit_pb2 as pb

from tests import backends, serverproc
from tests.backends import Scaleout
from tests.serverproc import RPC_TIMEOUT, ServerFactory, ServerProcess
from tests.test_scaleout import append_all, frontend, http_get

scaleout = backends.scaleout
server_factory = serverproc.server_factory

ENTRIES = [b"entry %d" % i for i in range(1600)]
"""Bundle 000 is full, and not among the newest 1,024 entries, which startup reads back."""


def bundle(s: ServerProcess) -> tuple[int, bytes]:
    """GET /tile/entries/000 as an auditor (uncompressed)."""
    assert s.http_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=4 * RPC_TIMEOUT)
    try:
        conn.request("GET", "/tile/entries/000", headers={
            "Authorization": f"Bearer {s.auditor_token}", "Accept-Encoding": "identity",
        })  # fmt: skip
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def page(s: ServerProcess) -> list[bytes]:
    """The entries of one GetEntries page from index 0 (to 256)."""
    call = s.stub.GetEntries(
        pb.GetEntriesRequest(start=0, end=256),
        metadata=s.auditor_metadata,
        timeout=4 * RPC_TIMEOUT,
    )
    return [e.data for e in call]


def test_reads_waiting_on_the_object_store_hold_up_no_other_call(
    server_factory: ServerFactory, scaleout: Scaleout
) -> None:
    s = frontend(server_factory, scaleout, None, "--http-listen", "127.0.0.1:0")
    append_all(s, ENTRIES[:800])
    append_all(s, ENTRIES[800:])
    s.stop()
    s.start()  # its caches hold no bundle now
    weed = scaleout.objects.proc
    assert weed is not None
    weed.send_signal(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(2) as pool:
            got_bundle, got_page = pool.submit(bundle, s), pool.submit(page, s)
            waiting: list[Future[Any]] = [got_bundle, got_page]
            # Both wait on the stopped object store; the frontend answers meanwhile, over
            # HTTP and over gRPC.
            assert http_get(s, "/checkpoint")[0] == 200
            head = s.stub.GetCheckpoint(pb.GetCheckpointRequest(), timeout=RPC_TIMEOUT)
            assert head.size == len(ENTRIES)
            assert not any(f.done() for f in waiting), "a read did not wait on the object store"
            weed.send_signal(signal.SIGCONT)
            status, body = got_bundle.result()
            entries = got_page.result()
    finally:
        weed.send_signal(signal.SIGCONT)
    assert status == 200
    assert body == b"".join(len(e).to_bytes(2, "big") + e for e in ENTRIES[:256])
    assert entries == ENTRIES[:256]
