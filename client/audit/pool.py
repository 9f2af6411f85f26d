"""The history-free half of an audit in worker processes (worker.py): prepare() over chunks
of entries, with the keys the log has named so far."""

from __future__ import annotations

import contextlib
import subprocess
import sys

from affidavit.client.audit.worker import Prepared
from affidavit.statements.worker_frames import read_frame, write_frame

_START = (
    "import sys; sys.path[:0] = sys.argv[1:]; "
    "from affidavit.client.audit.worker import main; main()"
)
"""A worker's program: this process's import path (as multiprocessing's spawn passes it),
and, with -P, not the working directory's."""

STOP_WAIT_S = 5.0
"""How long close() lets a worker finish its chunk before ending it."""


class Pool:
    """Worker processes, each fed through its own pipes, round-robin, so results come back in
    order and each worker is sent exactly the keys learned since its previous chunk.

    Not multiprocessing: a spawned process imports the auditor's main module (the whole CLI,
    gRPC included) before its work; a worker here imports the statement rules alone. Workers
    run in a session of their own, so a terminal's Ctrl-C reaches only the auditor, and each
    ends when its stdin does: when the auditor closes it, or dies."""

    def __init__(self, workers: int) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(workers):
                self._procs.append(
                    subprocess.Popen(
                        [sys.executable, "-P", "-c", _START, *sys.path],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        start_new_session=True,
                    )
                )
        except BaseException:
            self.close()
            raise
        self._key_cursor = [0] * workers
        self._next = 0

    def submit(self, leaves: list[bytes], key_log: list[tuple[str, bytes]]) -> int:
        """Hand a chunk to the next worker; the ticket to collect it with."""
        w = self._next % len(self._procs)
        self._next += 1
        new_keys = key_log[self._key_cursor[w] :]
        self._key_cursor[w] = len(key_log)
        proc = self._procs[w]
        assert proc.stdin is not None
        try:
            write_frame(proc.stdin, (new_keys, leaves))
        except BrokenPipeError:
            raise RuntimeError(f"audit worker {w} died (exit status {proc.wait()})") from None
        return w

    def collect(self, ticket: int) -> tuple[list[Prepared], list[bytes]]:
        """The results of the oldest chunk handed to that worker, and its leaf hashes."""
        proc = self._procs[ticket]
        assert proc.stdout is not None
        answer = read_frame(proc.stdout)
        if answer is None:
            raise RuntimeError(f"audit worker {ticket} died (exit status {proc.wait()})")
        kind, value = answer
        if kind != "ok":
            raise RuntimeError(f"audit worker {ticket} failed:\n{value}")
        results: tuple[list[Prepared], list[bytes]] = value
        return results

    def close(self) -> None:
        """Stop the workers (they finish their chunk; any still running after STOP_WAIT_S is
        ended)."""
        for proc in self._procs:
            # Results not collected are not needed: a worker writing one gets a broken pipe.
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(BrokenPipeError):
                        stream.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
