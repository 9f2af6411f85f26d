"""An ingest worker process: prepare() (decode, schema, sizes, secret guard, signature) over
runs of entries, each with the public key its key id names. Started by
ingest_workers.IngestWorkers as

    python -P -c "...; from affidavit.server.ingest_worker import main; main()" [sys.path]

it reads jobs from stdin and writes answers to stdout, one frame each
(statements.worker_frames). A job is a list of (entry, public key or None); its answer is
("ok", (refused, derived)), refused mapping the position of each entry prepare() refuses to
its Rejection as (code, message, reason) and derived holding, at each position, what the server
derives from the passed entry (server.prepared.derive: its free search facets and named reads;
None for a refused one), or ("error", traceback) when the worker fails (it then ends). An entry
not in refused passed, its signature verified with the key sent for it (or unchecked when none
was: admission refuses an unknown key). What the server derives is made here because it needs
no history either: the server's interpreter, whose lock its integrator needs, is spared it.
End of stdin ends the worker: the server closed it, or died (even by SIGKILL), so no worker
outlives its server.

Only the statements rules (and server.prepared and search_index, which import nothing else)
are imported here (no gRPC, no storage), so a worker starts quickly.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import traceback
from collections.abc import Sequence

from affidavit.server.prepared import Derived, derive
from affidavit.statements import ingest
from affidavit.statements.errors import Rejection
from affidavit.statements.state import KeyRecord
from affidavit.statements.worker_frames import read_frame, write_frame

Refused = dict[int, tuple[str, str, str]]
"""The entries of a run prepare() refused: position -> (code, message, reason)."""
Answer = tuple[Refused, list[Derived | None]]
"""A run's answer: the refusals, and what the server derives from each passed entry."""


def prepare_run(jobs: Sequence[tuple[bytes, bytes | None]]) -> Answer:
    """prepare() each entry against the public key named for it; the refusals, and what the
    server derives from the entries that passed."""
    refused: Refused = {}
    derived: list[Derived | None] = []
    for at, (entry, public_key) in enumerate(jobs):

        def known(key_id: str, public_key: bytes | None = public_key) -> KeyRecord | None:
            return None if public_key is None else KeyRecord(key_id, "", public_key, 0)

        try:
            derived.append(derive(ingest.prepare(entry, known)))
        except Rejection as e:
            refused[at] = (e.code, e.message, e.reason)
            derived.append(None)
    return refused, derived


def main() -> None:
    # Ctrl-C reaches a terminal's whole process group: the server decides how to stop. (The
    # pool also starts workers in a session of their own.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stdout carries frames only
    try:
        while (job := read_frame(stdin)) is not None:
            write_frame(stdout, ("ok", prepare_run(job)))
    except BrokenPipeError:
        return  # the server is gone: nobody to answer
    except BaseException:
        with contextlib.suppress(BrokenPipeError):
            write_frame(stdout, ("error", traceback.format_exc()))
        sys.exit(1)


if __name__ == "__main__":
    main()
