"""The history-free half of an audit in worker processes: prepare() (decode, schema, secret
guard, signature) over chunks of entries, with the keys the log has named so far."""

from __future__ import annotations

import multiprocessing
import queue
import signal
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from affidavit.client.audit.replay import Prepared
from affidavit.statements import ingest
from affidavit.statements.errors import Rejection
from affidavit.statements.state import KeyRecord

PARENT_CHECK_S = 1.0
"""How often an idle worker checks that its auditor is still alive."""


def _candidate(keys: dict[str, bytes]) -> Callable[[str], KeyRecord | None]:
    """known_key for prepare(): the public key a key id names. prepare() reads only the public
    key of the record; admit() checks it is the key registered at that index."""

    def known(key_id: str) -> KeyRecord | None:
        public_key = keys.get(key_id)
        return None if public_key is None else KeyRecord(key_id, "", public_key, 0)

    return known


def _prepare_chunk(leaves: Sequence[bytes], keys: dict[str, bytes]) -> list[Prepared]:
    """prepare() each leaf, with the keys named so far."""
    known = _candidate(keys)
    out: list[Prepared] = []
    for leaf in leaves:
        try:
            out.append(ingest.prepare(leaf, known).verified_with)
        except Rejection as e:
            out.append((e.code, e.message))
    return out


def _worker_main(jobs: Queue[Any], results: Queue[Any]) -> None:
    """A worker process: prepare chunks until told to stop (None). A failure is sent back as
    its traceback (text) for the auditor to raise."""
    keys: dict[str, bytes] = {}
    # Ctrl-C reaches the whole process group: the auditor decides when to stop (and saves its
    # position first); a worker dying of it mid-chunk would only turn that into a failure.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    try:
        while True:
            try:
                job = jobs.get(timeout=PARENT_CHECK_S)
            except queue.Empty:
                # An auditor killed outright (SIGKILL) never sends the stop: end with it
                # rather than wait for work forever.
                if parent is not None and not parent.is_alive():
                    return
                continue
            if job is None:
                return
            new_keys, leaves = job
            keys.update(new_keys)
            results.put(_prepare_chunk(leaves, keys))
    except BaseException:
        results.put(traceback.format_exc())


class Pool:
    """Worker processes, each with its own queues, fed round-robin so results come back in
    order and each worker is sent exactly the keys learned since its previous chunk. Queues
    (not bare pipes) so that neither side ever blocks sending while the other does too."""

    def __init__(self, workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process holding gRPC channels
        self._jobs: list[Queue[Any]] = []
        self._results: list[Queue[Any]] = []
        self._procs: list[BaseProcess] = []
        for i in range(workers):
            jobs, results = ctx.Queue(), ctx.Queue()
            proc = ctx.Process(
                target=_worker_main,
                args=(jobs, results),
                name=f"affidavit-audit-{i}",
                daemon=True,
            )
            proc.start()
            self._jobs.append(jobs)
            self._results.append(results)
            self._procs.append(proc)
        self._key_cursor = [0] * workers
        self._next = 0

    def submit(self, leaves: list[bytes], key_log: list[tuple[str, bytes]]) -> int:
        """Hand a chunk to the next worker; the ticket to collect it with."""
        w = self._next % len(self._jobs)
        self._next += 1
        new_keys = key_log[self._key_cursor[w] :]
        self._key_cursor[w] = len(key_log)
        self._jobs[w].put((new_keys, leaves))
        return w

    def collect(self, ticket: int) -> list[Prepared]:
        """The results of the oldest chunk handed to that worker."""
        while True:
            try:
                result: list[Prepared] | str = self._results[ticket].get(timeout=1.0)
            except queue.Empty:
                if not self._procs[ticket].is_alive():
                    raise RuntimeError(f"audit worker {ticket} died") from None
                continue
            if isinstance(result, str):
                raise RuntimeError(f"audit worker {ticket} failed:\n{result}")
            return result

    def close(self) -> None:
        """Stop the workers (they finish their chunk; any still running after 5 s is ended)."""
        for jobs in self._jobs:
            jobs.put(None)
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for q in (*self._jobs, *self._results):
            q.cancel_join_thread()  # what is left unread is not needed
            q.close()
