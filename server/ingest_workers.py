"""The history-free ingest checks in worker processes (`affidavit serve --ingest-workers N`).

statements.ingest.prepare (decode, schema, sizes, secret guard, signature) needs no history,
so it can run beside the log in other interpreters, each with its own GIL; admission stays in
the sequencer, in log order, exactly as without workers. A worker (ingest_worker.py) is handed
a whole run of entries in one frame, each with the public key its key id names in the
committed state (looked up here: workers hold no state), verifies the signatures against them,
and sends back the refusals and, for each passed entry, what this process would otherwise
derive from it (server.prepared: its free search facets and named reads). This process then
decodes each passed entry's statement once more (a few µs) to admit it, and admit() still
checks that the key is the one registered to the issuer at that point of the log.

Not multiprocessing: its queues pickle through a feeder thread and unpickle results through a
manager thread, all in this process and under its interpreter lock. Here each worker is a plain
process on two pipes, used by one calling thread at a time: the caller writes the run, the
worker reads it whole, prepares it and answers. Workers run in a session of their own (a
terminal's Ctrl-C reaches the server alone) and end when their stdin does: when the server
closes it, or dies. A worker that dies is noticed by the run it was given (its pipe ends); that
run is prepared in the caller's thread and a new worker takes the dead one's place.

Small requests are prepared in the caller's thread: a round trip to a worker costs more than
a few statements' checks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import subprocess
import sys
from collections.abc import Callable, Sequence

from affidavit.proto import affidavit_pb2 as pb
from affidavit.server import prepared as server_prepared
from affidavit.server.ingest_worker import Answer
from affidavit.server.search_index import FreeFacets
from affidavit.statements import ingest
from affidavit.statements.errors import Rejection
from affidavit.statements.state import KeyRecord
from affidavit.statements.worker_frames import read_frame, write_frame
from google.protobuf.message import DecodeError

log = logging.getLogger("affidavit.server")

INLINE_BELOW = 16
"""Runs with fewer entries than this are prepared in the calling thread."""

STOP_WAIT_S = 5.0
"""How long close() lets a worker finish its run before ending it."""

_START = (
    "import sys; sys.path[:0] = sys.argv[1:]; "
    "from affidavit.server.ingest_worker import main; main()"
)
"""A worker's program: this process's import path, and, with -P, not the working directory's."""


def default_workers() -> int:
    """One worker per core when there are two or more; none on a single core (the workers
    would only compete with admission)."""
    cores = os.cpu_count() or 1
    return cores if cores >= 2 else 0


class WorkerDiedError(Exception):
    """A worker's pipe ended before its answer: it was killed, or ran out of memory."""


class _Worker:
    """One worker process and its pipes; used by one thread at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-c", _START, *sys.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )

    def run(self, jobs: list[tuple[bytes, bytes | None]]) -> Answer:
        """The worker's refusals and derivations for a run. Raises WorkerDiedError, or
        RuntimeError when the worker failed (and ended)."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        try:
            write_frame(stdin, jobs)
        except (BrokenPipeError, ValueError):  # ValueError: closed by close()
            raise WorkerDiedError from None
        frame = read_frame(stdout)
        if frame is None:
            raise WorkerDiedError
        kind, value = frame
        if kind != "ok":
            raise RuntimeError(f"an ingest worker failed:\n{value}")
        answer: Answer = value
        return answer

    def close(self) -> None:
        """Close its pipes: the worker ends once it has finished its run."""
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()

    def stop(self) -> None:
        """Close it and wait for it (ended after STOP_WAIT_S)."""
        self.close()
        try:
            self.proc.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class IngestWorkers:
    """N worker processes preparing runs of entries, each started when a run first needs it."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        # Idle workers, and None for each place no worker holds yet: a run takes one (waiting
        # while all are busy) and puts it back.
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        for _ in range(workers):
            self._idle.put(None)
        self._started: list[_Worker] = []
        self._closed = False

    def prepare(
        self, entries: Sequence[bytes], committed_key: Callable[[str], KeyRecord | None]
    ) -> list[ingest.Prepared | Rejection]:
        """prepare() of each entry, the checks run by a worker; committed_key looks up the key
        an entry names (in the committed state, as the server's own prepare() does)."""
        if len(entries) < INLINE_BELOW:
            return [_inline(entry, committed_key) for entry in entries]
        envelopes = [_envelope(entry) for entry in entries]
        keys = [_named_key(signed, committed_key) for signed in envelopes]
        worker = self._idle.get()
        try:
            if worker is None:
                worker = self._start()
            refused, derived = worker.run(list(zip(entries, keys, strict=True)))
        except (WorkerDiedError, RuntimeError) as e:
            if worker is not None:  # it is gone (or ends after reporting its failure)
                self._forget(worker)
                worker = None
            if not isinstance(e, WorkerDiedError):
                raise
            if not self._closed:
                log.warning("an ingest worker process died; a new one takes its place")
            return [_inline(entry, committed_key) for entry in entries]
        finally:
            self._idle.put(worker)
        out: list[ingest.Prepared | Rejection] = []
        made = server_prepared.ServerPrepared
        facets_of = FreeFacets._make
        statement_of = pb.Statement.FromString
        for at, (signed, key, got) in enumerate(zip(envelopes, keys, derived, strict=True)):
            if got is None:
                out.append(Rejection(*refused[at]))
            else:
                assert signed is not None  # the worker refuses an entry that does not decode
                facets, reads = got
                statement = statement_of(signed.statement)
                out.append(made(signed, statement, key, facets_of(facets), reads))
        return out

    def _start(self) -> _Worker:
        if self._closed:
            raise RuntimeError("the ingest workers are closed: the server is stopping")
        worker = _Worker()
        self._started.append(worker)
        return worker

    def _forget(self, worker: _Worker) -> None:
        worker.stop()
        with contextlib.suppress(ValueError):
            self._started.remove(worker)

    def close(self) -> None:
        """End the workers (each finishes its run first; a run handed over after this fails)."""
        self._closed = True
        started = list(self._started)
        for worker in started:
            worker.close()
        for worker in started:
            worker.stop()


def _inline(
    entry: bytes, committed_key: Callable[[str], KeyRecord | None]
) -> ingest.Prepared | Rejection:
    try:
        return server_prepared.prepare(entry, committed_key)
    except Rejection as e:
        return e


def _envelope(entry: bytes) -> pb.SignedStatement | None:
    """An entry's envelope, or None when it does not decode (the worker then refuses it)."""
    try:
        return pb.SignedStatement.FromString(entry)
    except DecodeError:
        return None


def _named_key(
    signed: pb.SignedStatement | None, committed_key: Callable[[str], KeyRecord | None]
) -> bytes | None:
    """The committed public key of the key id an envelope names."""
    record = None if signed is None else committed_key(signed.key_id)
    return None if record is None else record.public_key
