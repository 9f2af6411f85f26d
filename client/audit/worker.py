"""An audit worker process: prepare() (decode, schema, secret guard, signature) and the leaf
hashes over chunks of entries, with the keys the log has named so far. Started by pool.Pool as

    python -P -c "...; from affidavit.client.audit.worker import main; main()" [sys.path]

it reads jobs from stdin and writes results to stdout, each a frame: an 8-byte big-endian
length, then a pickle. A job is (new_keys, leaves): the (key id, public key) pairs learned
since its previous job, and the leaves; its answer is ("ok", (results, leaf_hashes)): one
Prepared and one leaf hash per leaf, in order; or ("error", traceback) when the worker fails.
End of stdin ends the worker: the auditor closed it, or died (even by SIGKILL), so no worker
outlives its auditor.

Only the statements rules are imported here (not the client, gRPC or the auditor's own
main module), so a worker starts in a fraction of the time a multiprocessing spawn took.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import IO, Any

from affidavit.merkle import hashing
from affidavit.statements import ingest
from affidavit.statements.errors import Rejection
from affidavit.statements.state import KeyRecord
from affidavit.statements.worker_frames import read_frame, write_frame

Prepared = bytes | None | tuple[str, str]
"""What prepare() gave for one entry: the public key its signature verified with, None when
its key was not known yet, or a Rejection as (code, message)."""


def prepare_chunk(leaves: Sequence[bytes], keys: dict[str, KeyRecord]) -> list[Prepared]:
    """prepare() each leaf, with the keys named so far (candidate records: prepare() reads
    only the public key of one; admit() checks it is the key registered at that index)."""
    known = keys.get
    out: list[Prepared] = []
    for leaf in leaves:
        try:
            out.append(ingest.prepare(leaf, known).verified_with)
        except Rejection as e:
            out.append((e.code, e.message))
    return out


def _read_jobs(stream: IO[bytes], jobs: queue.SimpleQueue[Any]) -> None:
    """Read every job as it arrives (so the auditor never waits to send one while this
    process waits to send a result), then None at the end of the stream."""
    try:
        while (job := read_frame(stream)) is not None:
            jobs.put(job)
    finally:
        jobs.put(None)


def main() -> None:
    # Ctrl-C reaches a terminal's whole process group: the auditor decides when to stop (and
    # saves its position first); a worker dying of it mid-chunk would only turn that into a
    # failure. (The pool also starts workers in a session of their own.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stdout carries frames only
    jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
    threading.Thread(target=_read_jobs, args=(stdin, jobs), daemon=True).start()
    # One candidate record per key, made when the key arrives, not one per statement.
    keys: dict[str, KeyRecord] = {}
    try:
        while (job := jobs.get()) is not None:
            new_keys, leaves = job
            keys.update((k, KeyRecord(k, "", public_key, 0)) for k, public_key in new_keys)
            answer = (prepare_chunk(leaves, keys), hashing.leaf_hashes(leaves))
            write_frame(stdout, ("ok", answer))
    except BrokenPipeError:
        return  # the auditor is gone: nobody to answer
    except BaseException:
        with contextlib.suppress(BrokenPipeError):
            write_frame(stdout, ("error", traceback.format_exc()))
        sys.exit(1)


if __name__ == "__main__":
    main()
