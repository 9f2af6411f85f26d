"""Our witness as a C2SP tlog-witness HTTP server (c2sp.org/tlog-witness): POST /add-checkpoint.

The request body is ``old <size>\\n``, at most 63 base64 consistency proof lines, an empty
line, then the log's signed checkpoint. The answers, in the order the checks run:

    400  the body is malformed, or old > the checkpoint's size, or a proof from old size 0
    404  the checkpoint's origin is not a log this witness is configured for
    403  no signature verifies against the log's key (or this witness blocked the log after
         proving a fork: it never cosigns it again until its operator investigates)
    409  old is not the size of the latest checkpoint this witness cosigned for the origin;
         the body is that size and a newline, Content-Type text/x.tlog.size. Also when old
         equals the checkpoint's size but the roots differ: a fork, kept as evidence, and the
         log is blocked
    422  the consistency proof does not verify (kept as evidence; not proof of a fork by
         itself, since anyone may submit a log's checkpoint with a bad proof)
    200  the cosignature line(s), text/plain; charset=utf-8

Invariant: the check of old against the stored size and the replacement of the state happen
under the origin's exclusive flock, and the state is written and fsynced (client.witness's
StateStore: the same state a following witness keeps) before the cosignature leaves the
process, so no two answers can cosign two views of a log and a crash never rolls it back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from affidavit.client.witness import (
    Evidence,
    StateError,
    StateStore,
    load_signer,
    write_evidence,
)
from affidavit.merkle import checkpoint as checkpoints
from affidavit.merkle import note, proofs
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.cosignature import CosignatureV1Signer
from affidavit.merkle.errors import MerkleError, ProofError, UnverifiedNoteError
from affidavit.merkle.keys import ALG_ED25519, Verifier, parse_verifier_key
from aiohttp import web

log = logging.getLogger("affidavit.witness")

SIZE_TYPE = "text/x.tlog.size"
MAX_BODY_BYTES = 64 << 10
"""A checkpoint note is small; 63 proof lines are 2.8 KB."""
MAX_PROOF_LINES = 63
THREADS = 4
"""Requests checked at once (each holds its origin's flock while it fsyncs the state)."""

_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, content type, body text."""

    status: int
    text: str
    content_type: str = "text/plain"


class Refused(Exception):
    def __init__(self, status: int, text: str, content_type: str = "text/plain") -> None:
        super().__init__(text)
        self.answer = Answer(status, text if text.endswith("\n") else text + "\n", content_type)


@dataclass(frozen=True)
class Submission:
    old: int
    proof: list[bytes]
    checkpoint: str


def parse_submission(body: bytes) -> Submission:
    """The parts of an add-checkpoint body; Refused(400) saying what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8") from None
    head, sep, checkpoint = text.partition("\n\n")
    if not sep:
        raise Refused(400, "no empty line before the checkpoint")
    lines = head.split("\n")
    m = _OLD.fullmatch(lines[0])
    if m is None or int(m.group(1)) >= 2**64:
        raise Refused(400, f"the first line must be 'old <size>', not {lines[0][:40]!r}")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise Refused(400, f"{len(lines) - 1} consistency proof lines; at most 63")
    proof = []
    for number, line in enumerate(lines[1:], 2):
        try:
            h = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            h = b""
        if len(h) != 32 or base64.b64encode(h).decode() != line:
            raise Refused(400, f"line {number} is not a base64 SHA-256 hash")
        proof.append(h)
    return Submission(int(m.group(1)), proof, checkpoint)


class AddCheckpoint:
    """The add-checkpoint check for the logs a witness knows (origin -> log key), over its
    state directory. handle() is blocking (flock, fsync): call it from a thread."""

    def __init__(
        self,
        signer: CosignatureV1Signer,
        log_keys: Sequence[str],
        store: StateStore,
        evidence_dir: Path,
    ) -> None:
        self.signer = signer
        self.verifier_key = signer.verifier().key_text()
        self.store = store
        self.evidence_dir = evidence_dir
        self.logs: dict[str, tuple[str, Verifier]] = {}
        for key in log_keys:
            vkey = parse_verifier_key(key)
            if vkey.alg != ALG_ED25519:
                raise ValueError(f"log key {vkey.name!r} is not an Ed25519 log key")
            if vkey.name in self.logs:
                raise ValueError(f"two log keys for the origin {vkey.name!r}")
            self.logs[vkey.name] = (key, note.parse_verifier(key))

    def check_state(self) -> None:
        """Every stored state verifies with its log's key (else StateError: do not start)."""
        for origin in self.logs:
            saved = self.store.load(origin)
            if saved is not None:
                self._open_state(origin, saved)

    def _open_state(self, origin: str, saved: str) -> Checkpoint:
        try:
            return checkpoints.parse(note.open(saved, [self.logs[origin][1]]))
        except MerkleError as e:
            raise StateError(
                f"the state {self.store.path(origin)} does not verify with the log key of "
                f"{origin}: {e}"
            ) from None

    def handle(self, body: bytes, peer: str) -> Answer:
        try:
            return self._handle(body, peer)
        except Refused as r:
            return r.answer

    def _handle(self, body: bytes, peer: str) -> Answer:
        sub = parse_submission(body)
        try:
            text, _ = note.parse_note(sub.checkpoint)
            cp = checkpoints.parse(text)
        except MerkleError as e:
            raise Refused(400, f"the checkpoint is malformed: {e}") from None
        known = self.logs.get(cp.origin)
        if known is None:
            raise Refused(404, f"this witness does not witness the log {cp.origin!r}")
        log_key, verifier = known
        try:
            opened = note.open_note(sub.checkpoint, [verifier])
        except UnverifiedNoteError:
            raise Refused(
                403, f"the checkpoint carries no signature by {cp.origin}'s key"
            ) from None
        except MerkleError as e:
            raise Refused(403, f"the log's signature does not verify: {e}") from None
        if sub.old > cp.size:
            raise Refused(400, f"old size {sub.old} is larger than the checkpoint's {cp.size}")
        if sub.old == 0 and sub.proof:
            raise Refused(400, "a consistency proof from old size 0 must be empty")
        log_signed = f"{text}\n" + "".join(s.line() for s in opened.signatures)
        with self.store.lock(cp.origin):
            if self.store.blocked(cp.origin) is not None:
                raise Refused(
                    403,
                    f"this witness proved a fork of {cp.origin} and no longer cosigns it; "
                    "its operator must investigate",
                )
            saved = self.store.load(cp.origin)
            old = None if saved is None else self._open_state(cp.origin, saved)
            stored = 0 if old is None else old.size
            if sub.old != stored:
                raise Refused(409, f"{stored}\n", SIZE_TYPE)
            evidence = Evidence(
                "fork",
                "",
                cp.origin,
                log_key,
                f"tlog-witness submission from {peer}",
                self.verifier_key,
                saved,
                old,
                sub.checkpoint,
                cp,
                (sub.old, cp.size, sub.proof),
            )
            if old is not None and cp.size == old.size:
                if cp.root_hash != old.root_hash:
                    reason = (
                        f"two different roots for tree size {cp.size}: {old.root_hash.hex()} "
                        f"(cosigned) and {cp.root_hash.hex()} (presented)"
                    )
                    path = write_evidence(
                        self.store, self.evidence_dir, _with(evidence, "fork", reason)
                    )
                    self.store.block(cp.origin, f"FORK DETECTED: {reason}", path)
                    log.critical(
                        "FORK DETECTED %s@%d from %s: %s; evidence in %s; blocked",
                        cp.origin,
                        cp.size,
                        peer,
                        reason,
                        path,
                    )
                    raise Refused(409, f"{stored}\n", SIZE_TYPE)
            elif old is not None and old.size > 0:
                try:
                    proofs.verify_consistency(
                        old.size, cp.size, sub.proof, old.root_hash, cp.root_hash
                    )
                except ProofError as e:
                    reason = f"consistency proof from {old.size} to {cp.size} fails: {e}"
                    path = write_evidence(
                        self.store, self.evidence_dir, _with(evidence, "inconsistent", reason)
                    )
                    log.error(
                        "REFUSED %s@%d from %s: %s; evidence in %s",
                        cp.origin,
                        cp.size,
                        peer,
                        reason,
                        path,
                    )
                    raise Refused(422, reason) from None
            cosigned = note.sign(text, self.signer)
            if old is None or cp.size > old.size:
                self.store.save(cp.origin, note.merge([log_signed, cosigned]))
        if old is None:
            log.warning(
                "TRUST ON FIRST USE: cosigned %s@%d (root %s) from %s with no earlier state",
                cp.origin,
                cp.size,
                cp.root_hash.hex(),
                peer,
            )
        else:
            log.info("cosigned %s@%d from %s (had %d)", cp.origin, cp.size, peer, old.size)
        lines = note.parse_note(cosigned)[1]
        return Answer(200, "".join(s.line() for s in lines))


def _with(e: Evidence, problem: str, reason: str) -> Evidence:
    return Evidence(
        problem,
        reason,
        e.origin,
        e.log_key,
        e.log_address,
        e.witness_key,
        e.saved,
        e.old,
        e.received,
        e.cp,
        e.proof,
    )


def make_app(check: AddCheckpoint) -> web.Application:
    """The aiohttp application: POST /add-checkpoint (other methods: 405)."""
    pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="add-checkpoint")

    async def add_checkpoint(request: web.Request) -> web.Response:
        body = await request.read()
        peer = request.remote or "unknown"
        answer = await asyncio.get_running_loop().run_in_executor(pool, check.handle, body, peer)
        # Set whole: text/x.tlog.size must be exactly that, with no charset parameter.
        content_type = answer.content_type
        if content_type == "text/plain":
            content_type += "; charset=utf-8"
        return web.Response(
            status=answer.status,
            body=answer.text.encode(),
            headers={"Content-Type": content_type},
        )

    async def close_pool(_: web.Application) -> None:
        pool.shutdown(wait=True)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/add-checkpoint", add_checkpoint)
    app.on_cleanup.append(close_pool)
    return app


def load(
    key_file: Path, log_keys: Sequence[str], state_dir: Path, evidence_dir: Path | None
) -> AddCheckpoint:
    """The add-checkpoint check from a witness's key file and configuration; ValueError or
    StateError saying what is wrong."""
    signer = load_signer(key_file)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    check = AddCheckpoint(
        signer, log_keys, StateStore(state_dir), evidence_dir or state_dir / "evidence"
    )
    check.check_state()
    return check


async def serve(check: AddCheckpoint, listen: str) -> None:
    """Serve add-checkpoint on listen (host:port; port 0 picks one) until SIGTERM or SIGINT."""
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"--listen takes HOST:PORT with a port from 0 to 65535, not {listen!r}")
    runner = web.AppRunner(make_app(check), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host.strip("[]"), int(port_text))
        try:
            await site.start()
        except OSError as e:
            raise OSError(f"cannot listen on {listen}: {e.strerror or e}") from None
        port = runner.addresses[0][1]
        log.info(
            "affidavit witness serving tlog-witness at %s:%d (POST /add-checkpoint), key %s, "
            "logs %s",
            host,
            port,
            check.verifier_key,
            ", ".join(check.logs),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("witness stopping")
    finally:
        await runner.cleanup()
