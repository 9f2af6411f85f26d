"""An ingest worker process: prepare() (decode, schema, sizes, secret guard, signature) over
runs of entries, each with the public key its key id names. Started by
ingest_workers.IngestWorkers as

    python -P -c "...; from affidavit.server.ingest_worker import main; main()" [sys.path]

it reads jobs from stdin and writes answers to stdout, one frame each
(statements.worker_frames). A job is a list of (entry, public key or None); its answer is
("ok", (refused, facets)), refused mapping the position of each entry prepare() refuses to its
Rejection as (code, message, reason) and facets holding, at each position, the passed entry's
search_index.FreeFacets (None for a refused one), or ("error", traceback) when the worker
fails (it then ends). An entry not in refused passed, its signature verified with the key sent
for it (or unchecked when none was: admission refuses an unknown key). Its free facets are
made here because they need no history either: the integrator, the log's one serial thread,
then only adds what the log decides. End of stdin ends the worker: the
server closed it, or died (even by SIGKILL), so no worker outlives its server.

Only the statements rules (and search_index, which imports nothing else) are imported here (no
gRPC, no storage), so a worker starts quickly.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import traceback
from collections.abc import Sequence

from affidavit.server.search_index import FreeFacets, free_facets
from affidavit.statements import ingest
from affidavit.statements.errors import Rejection
from affidavit.statements.state import KeyRecord
from affidavit.statements.worker_frames import read_frame, write_frame

Refused = dict[int, tuple[str, str, str]]
"""The entries of a run prepare() refused: position -> (code, message, reason)."""
Answer = tuple[Refused, list[FreeFacets | None]]
"""A run's answer: the refusals, and each passed entry's free facets by position."""


def prepare_run(jobs: Sequence[tuple[bytes, bytes | None]]) -> Answer:
    """prepare() each entry against the public key named for it; the refusals, and the free
    facets of the entries that passed."""
    refused: Refused = {}
    facets: list[FreeFacets | None] = []
    for at, (entry, public_key) in enumerate(jobs):

        def known(key_id: str, public_key: bytes | None = public_key) -> KeyRecord | None:
            return None if public_key is None else KeyRecord(key_id, "", public_key, 0)

        try:
            facets.append(free_facets(ingest.prepare(entry, known)))
        except Rejection as e:
            refused[at] = (e.code, e.message, e.reason)
            facets.append(None)
    return refused, facets


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
