"""Step 3 of a scale-out batch (server.postgres_publish): batches a frontend sequenced while it
wrote the first are published with it, under one mark, one advance and one checkpoint object.

Real servers throughout (tests/backends.py, tests/serverproc.py). The object writes are held
by stopping the object store (SIGSTOP), so nothing here depends on timing.
"""

from __future__ import annotations

import re
import signal

from affidavit.proto import affidavit_pb2 as pb

from tests import backends, serverproc
from tests.backends import Scaleout
from tests.serverproc import RPC_TIMEOUT, ServerFactory
from tests.test_scaleout import append_all, frontend, sequenced

scaleout = backends.scaleout
server_factory = serverproc.server_factory


def test_batches_sequenced_while_one_is_written_are_published_with_it(
    server_factory: ServerFactory, scaleout: Scaleout
) -> None:
    s = frontend(server_factory, scaleout)
    append_all(s, [b"before"])
    weed = scaleout.objects.proc
    assert weed is not None
    # With the object store stopped, the first batch's publication waits for its objects
    # while the second batch is sequenced on top of it.
    weed.send_signal(signal.SIGSTOP)
    try:
        calls = []
        for size, entry in enumerate([b"first", b"second"], start=2):
            calls.append(s.stub.Append.future(pb.AppendRequest(entry=entry), timeout=RPC_TIMEOUT))
            sequenced(scaleout, size)
    finally:
        weed.send_signal(signal.SIGCONT)
    assert [c.result().index for c in calls] == [1, 2]
    assert s.stop() == 0
    # One mark, one advance and one checkpoint object for both: two checkpoint PUTs in all
    # (the first batch's, then theirs), not three.
    # (`init`, which made the log, logged such lines before.)
    *_, batches = re.findall(r"head lock per batch: batches (\d+)", s.stderr)
    *_, per_batch = re.findall(r"publication per batch: .*s3_put_checkpoint ([\d.]+)", s.stderr)
    assert int(batches) == 3 and round(int(batches) * float(per_batch)) == 2, s.stderr
    s.start()
    assert [e.data for e in s.all_entries()] == [b"before", b"first", b"second"]
