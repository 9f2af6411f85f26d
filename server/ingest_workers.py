"""The history-free ingest checks in worker processes (`affidavit serve --ingest-workers N`).

statements.ingest.prepare (decode, schema, sizes, secret guard, signature) needs no history,
so it can run beside the log in other interpreters, each with its own GIL; admission stays in
the sequencer, in log order, exactly as without workers. A worker is handed each entry with
the public key its key id names in the committed state (looked up here: workers hold no
state), verifies the signature against it, and sends back only that key, or the Rejection.
This process then decodes the entry once more (a few µs) to admit it, and admit() still checks
that the key is the one registered to the issuer at that point of the log.

Small requests are prepared in the caller's thread: a round trip to a worker costs more than
a few statements' checks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import ingest, schema
from affidavit.statements.errors import Rejection
from affidavit.statements.state import KeyRecord
from google.protobuf.message import DecodeError

log = logging.getLogger("affidavit.server")

INLINE_BELOW = 16
"""Runs with fewer entries than this are prepared in the calling thread."""

Outcome = bytes | None | Rejection
"""A worker's answer for one entry: the public key its signature verified with, None when its
key was not known, or why it is refused."""


def default_workers() -> int:
    """One worker per core when there are two or more; none on a single core (the workers
    would only compete with admission)."""
    cores = os.cpu_count() or 1
    return cores if cores >= 2 else 0


def _prepare_run(jobs: Sequence[tuple[bytes, bytes | None]]) -> list[Outcome]:
    """In a worker: prepare() each entry against the public key named for it."""
    out: list[Outcome] = []
    for entry, public_key in jobs:

        def known(key_id: str, public_key: bytes | None = public_key) -> KeyRecord | None:
            return None if public_key is None else KeyRecord(key_id, "", public_key, 0)

        try:
            out.append(ingest.prepare(entry, known).verified_with)
        except Rejection as e:
            out.append(e)
    return out


def _end_with(parent: int) -> None:
    """Each worker's initializer: the worker ends once its server is gone, however it went
    (a killed server never tells its pool; the pool's queues would keep the worker waiting)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="server-watch", daemon=True).start()


class IngestWorkers:
    """N worker processes preparing entries (spawned, never forked: the server holds gRPC)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        """The pool; its processes start with the first request big enough to need them."""
        return ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_end_with,
            initargs=(os.getpid(),),
        )

    def prepare(
        self, entries: Sequence[bytes], committed_key: Callable[[str], KeyRecord | None]
    ) -> list[ingest.Prepared | Rejection]:
        """prepare() of each entry, the checks run by a worker; committed_key looks up the key
        an entry names (in the committed state, as the server's own prepare() does)."""
        if len(entries) < INLINE_BELOW:
            return [_inline(entry, committed_key) for entry in entries]
        jobs = [(entry, _named_key(entry, committed_key)) for entry in entries]
        pool = self._pool
        try:
            outcomes = pool.submit(_prepare_run, jobs).result()
        except BrokenProcessPool:  # a worker died (killed, out of memory): start new ones
            with self._lock:
                if self._pool is pool:
                    log.warning("an ingest worker process died; starting new ones")
                    self._pool = self._start()
            return [_inline(entry, committed_key) for entry in entries]
        out: list[ingest.Prepared | Rejection] = []
        for entry, outcome in zip(entries, outcomes, strict=True):
            if isinstance(outcome, Rejection):
                out.append(outcome)
            else:
                signed, statement = schema.decode(entry)
                out.append(ingest.Prepared(signed, statement, outcome))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _inline(
    entry: bytes, committed_key: Callable[[str], KeyRecord | None]
) -> ingest.Prepared | Rejection:
    try:
        return ingest.prepare(entry, committed_key)
    except Rejection as e:
        return e


def _named_key(entry: bytes, committed_key: Callable[[str], KeyRecord | None]) -> bytes | None:
    """The committed public key of the key id an entry's envelope names (None for an entry
    that does not decode: the worker refuses it)."""
    try:
        key_id = pb.SignedStatement.FromString(entry).key_id
    except DecodeError:
        return None
    record = committed_key(key_id)
    return None if record is None else record.public_key
