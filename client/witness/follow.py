"""Driving a witness: each log's current checkpoint once, or every log followed (a thread each,
WatchCheckpoints streams or polling, reconnecting with back-off) until stopped; and run(), the
witness as a program with its exit status."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

import grpc
from affidavit.client.errors import RefusedError, UnavailableError
from affidavit.client.witness.checker import FollowedLog, Outcome, Witness, WitnessEvent
from affidavit.client.witness.config import WitnessConfig, load_signer
from affidavit.client.witness.state import StateError
from affidavit.proto import affidavit_pb2 as pb

log = logging.getLogger("affidavit.witness")

EXIT_OK: Final = 0
"""Every checkpoint was cosigned or already cosigned (or the witness was stopped cleanly)."""
EXIT_REFUSED: Final = 1
"""A checkpoint was refused as inconsistent (evidence written), or a log is blocked by an
earlier refusal."""
EXIT_ERROR: Final = 2
"""The witness could not do its job: bad configuration or key, unreadable state, a log that
cannot be reached (``once``), or a log that refuses the cosignature. Nothing was refused."""

INITIAL_BACKOFF_S: Final = 0.25
"""First wait before reconnecting to a log; doubled per failure up to max_backoff."""


class Follower:
    """Feeds a Witness the checkpoints of its logs. Without keep_going it stops at the first
    refusal; ``stop`` (set by anyone) ends following, cancelling the open watch streams."""

    def __init__(
        self, witness: Witness, *, keep_going: bool, stop: threading.Event | None = None
    ) -> None:
        self.witness = witness
        self.config = witness.config
        self.logs = witness.logs
        self.keep_going = keep_going
        self.stop = stop if stop is not None else threading.Event()
        self.crashed = False
        self._calls: set[grpc.Call] = set()
        self._calls_lock = threading.Lock()

    def _fetch_and_process(self, entry: FollowedLog) -> WitnessEvent:
        try:
            message = entry.client.call(entry.client.stub.GetCheckpoint, pb.GetCheckpointRequest())
            return self.witness.process(entry, message)
        except (UnavailableError, RefusedError) as e:
            return self.witness.error(entry, None, f"cannot get a checkpoint: {e}")

    def run_once(self) -> None:
        """Process the current checkpoint of each log once; without keep_going, stop at the
        first refusal."""
        for entry in self.logs:
            event = self._fetch_and_process(entry)
            if event.outcome in (Outcome.REFUSED, Outcome.BLOCKED) and not self.keep_going:
                return

    def follow(self) -> None:
        """Follow every log (a thread each) until ``stop`` is set, or, without keep_going,
        until a checkpoint is refused."""
        threads = [
            threading.Thread(
                target=self._follow_log,
                args=(entry,),
                name=f"witness {entry.origin} {entry.address}",
                daemon=True,
            )
            for entry in self.logs
        ]
        for t in threads:
            t.start()
        try:
            self.stop.wait()
        finally:
            self.stop.set()
            with self._calls_lock:
                for call in self._calls:
                    call.cancel()
            for t in threads:
                t.join()

    def _handle(self, entry: FollowedLog, message: pb.Checkpoint) -> None:
        event = self.witness.process(entry, message)
        if event.outcome in (Outcome.REFUSED, Outcome.BLOCKED) and not self.keep_going:
            self.stop.set()

    def _follow_log(self, entry: FollowedLog) -> None:
        delay = INITIAL_BACKOFF_S
        while not self.stop.is_set():
            try:
                if self.config.poll_interval is not None:
                    message = entry.client.call(
                        entry.client.stub.GetCheckpoint, pb.GetCheckpointRequest()
                    )
                    self._handle(entry, message)
                    delay = INITIAL_BACKOFF_S
                    self.stop.wait(self.config.poll_interval)
                    continue
                if self._watch(entry):
                    delay = INITIAL_BACKOFF_S
                    continue  # redial after watch_redial, at once
                problem = "the watch stream ended"
            except grpc.RpcError as e:
                if self.stop.is_set():
                    return
                problem = f"the watch stream broke ({e.code().name}: {e.details()})"
            except (UnavailableError, RefusedError) as e:
                problem = str(e)
            except Exception:
                log.exception(
                    "witness: unexpected failure following %s at %s", entry.origin, entry.address
                )
                self.crashed = True
                self.stop.set()
                return
            if self.stop.is_set():
                return
            log.warning(
                "lost %s at %s: %s; retrying in %.1fs", entry.origin, entry.address, problem, delay
            )
            self.stop.wait(delay)
            delay = min(delay * 2, self.config.max_backoff)

    def _watch(self, entry: FollowedLog) -> bool:
        """Process the log's watch stream; True when it was redialled on schedule (deadline)."""
        call = entry.client.stub.WatchCheckpoints(
            pb.WatchCheckpointsRequest(), timeout=self.config.watch_redial
        )
        with self._calls_lock:
            self._calls.add(call)
        try:
            if self.stop.is_set():
                return False
            for message in call:
                self._handle(entry, message)
                if self.stop.is_set():
                    return False
            return False
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and not self.stop.is_set():
                return True
            raise
        finally:
            call.cancel()
            with self._calls_lock:
                self._calls.discard(call)


def run(
    config: WitnessConfig,
    *,
    once: bool = False,
    keep_going: bool = False,
    stop: threading.Event | None = None,
    on_event: Callable[[WitnessEvent], None] | None = None,
) -> int:
    """Run the witness; its exit status: EXIT_OK, EXIT_REFUSED or EXIT_ERROR.

    once: process each log's current checkpoint and return (without keep_going, stop at the
    first refusal). Otherwise follow the logs — WatchCheckpoints streams, or GetCheckpoint every
    config.poll_interval seconds — reconnecting with back-off, until ``stop`` is set (the
    witness sets it too when it stops by itself), Ctrl-C, or, without keep_going, a refusal.
    With keep_going a refused log is still followed and reported, never cosigned.

    Status: EXIT_REFUSED if any checkpoint was refused or a log is blocked; else EXIT_ERROR if
    the key or state is unusable, the witness crashed, or (once) any log could not be
    processed; else EXIT_OK. In follow mode, failures to reach a log or to submit a
    cosignature are logged and not reflected in the status: the witness reconnects with
    back-off, and a cosignature the log lacks is sent again with the next checkpoint or
    reconnection (or poll).
    """
    try:
        signer = load_signer(config.key_file)
    except ValueError as e:
        log.error("witness: %s", e)
        return EXIT_ERROR
    witness = Witness(config, signer, on_event=on_event)
    follower = Follower(witness, keep_going=keep_going, stop=stop)
    try:
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            witness.check_state()
        except (StateError, OSError) as e:
            log.error("witness: cannot start: %s", e)
            return EXIT_ERROR
        if once:
            how = "once"
        elif config.poll_interval is not None:
            how = f"polling every {config.poll_interval:g}s"
        else:
            how = "watching"
        log.info(
            "witness %s following %s (%s)",
            witness.verifier.key_text(),
            ", ".join(f"{e.origin} at {e.address}" for e in witness.logs),
            how,
        )
        if once:
            follower.run_once()
        else:
            try:
                follower.follow()
            except KeyboardInterrupt:
                log.info("witness: interrupted, stopped")
    finally:
        witness.close()
    if witness.refused:
        return EXIT_REFUSED
    if follower.crashed or (once and witness.errors):
        return EXIT_ERROR
    return EXIT_OK
