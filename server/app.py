"""The server process: open a log, check it, serve it over gRPC until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from affidavit.merkle import keys, note
from affidavit.merkle.cosignature import CosignatureV1Verifier
from affidavit.proto import affidavit_pb2, affidavit_pb2_grpc
from affidavit.server import config, http_app, ingest_workers, metrics, reflection
from affidavit.server.access import Auditors
from affidavit.server.admission import StatementGate
from affidavit.server.config import ServeSettings
from affidavit.server.http_tiles import TilesFace
from affidavit.server.ingest_workers import IngestWorkers
from affidavit.server.integrity import DamageNote, KeptCheckpoint, check_log, recover
from affidavit.server.listen import parse_listen
from affidavit.server.logstore import LogStore, StorageUnavailableError, StoreSpec, open_store
from affidavit.server.published import Published
from affidavit.server.refusals import RefusalRecorder
from affidavit.server.sequencer import Sequencer
from affidavit.server.service import LogService
from affidavit.server.storage import MIN_FREE_BYTES, DataLossError, StorageError
from affidavit.server.strict_requests import StrictRequests
from affidavit.server.witness_push import Pusher, parse_target
from affidavit.statements import build
from affidavit.statements.signing import IdentityKey
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger("affidavit.server")

SHUTDOWN_GRACE_S = 10.0
"""How long requests in flight get to finish after a stop signal; new appends are refused
(UNAVAILABLE, retryable) from the signal on."""


@dataclass
class OpenLog:
    storage: LogStore
    sequencer: Sequencer
    gate: StatementGate | None
    verifier_key: str
    refusals: RefusalRecorder | None


@asynccontextmanager
async def open_log(
    data_dir: Path,
    *,
    max_batch: int = 1000,
    max_wait_ms: float = 0.0,
    queue_size: int = 4096,
    min_free_bytes: int = MIN_FREE_BYTES,
    refusal_window_s: float = 10.0,
    on_batch: Callable[[int, float], None] | None = None,
    spec: StoreSpec | None = None,
) -> AsyncIterator[OpenLog]:
    """Open and check a log (its keys in data_dir, its storage as spec says: by default the
    LevelDB in data_dir), run its sequencer; on exit, finish what is queued and close."""
    signer, verifier_key = config.load_key(data_dir)
    storage = open_store(spec or StoreSpec(data_dir), min_free_bytes=min_free_bytes)
    try:
        kept = KeptCheckpoint(data_dir / config.CHECKPOINT_FILE)
        checkpoint, note_text = recover(storage, verifier_key, kept)
        log.info(
            "opened log %s in %s: checked up to tree size %d",
            checkpoint.origin,
            data_dir,
            checkpoint.size,
            extra={"event": "opened", "tree_size": checkpoint.size},
        )
        damage = DamageNote(data_dir / config.DAMAGE_FILE)
        if damage.read() is not None:
            log.info("a check found damage in this log before: checking all of it again")
            report = check_log(storage, verifier_key, kept)
            if report.problems:
                damage.write(report.problems)
                raise DataLossError(
                    f"{report.summary()}; refusing to serve a damaged log: restore the data "
                    f"directory from a backup (every problem is listed in {damage.path})"
                )
            damage.clear()
            log.info("the whole log checks out now; serving it")
        log_key = keys.parse_verifier_key(verifier_key).public_key
        statements = storage.entry_format() == "statements"
        gate = StatementGate(storage, log_key=log_key) if statements else None
        sequencer = Sequencer(
            storage,
            checkpoint.origin,
            lambda body: note.sign(body, signer),
            checkpoint,
            note_text,
            gate=gate,
            kept=kept,
            max_batch=max_batch,
            max_wait=max_wait_ms / 1000,
            queue_size=queue_size,
            on_batch=on_batch,
            verifier_key=verifier_key,
        )
        sequencer.start()
        recorder = None
        if gate is not None:
            recorder = RefusalRecorder(
                config.load_seed(data_dir), sequencer.append, window_s=refusal_window_s
            )
            recorder.start()
        try:
            yield OpenLog(storage, sequencer, gate, verifier_key, recorder)
        finally:
            if recorder is not None:
                await recorder.stop()
            await sequencer.stop()
    finally:
        storage.close()


async def create_log(
    data_dir: Path,
    origin: str,
    entry_format: str,
    admin_id: str,
    min_free_bytes: int = MIN_FREE_BYTES,
    spec: StoreSpec | None = None,
) -> tuple[str, Path | None]:
    """Create a log; a statements log gets its genesis entry: the first admin, self-registered.

    Returns the log's verifier key and where the admin's key was written (mode 0600).
    """
    verifier = config.init_log(data_dir, origin, entry_format, spec)
    if entry_format != "statements":
        return verifier, None
    admin = IdentityKey.generate(admin_id)
    path = data_dir / config.ADMIN_KEY_FILE
    config.write_private(path, admin.text() + "\n")
    genesis = build.SessionSigner(admin).sign(
        build.register(
            admin_id, affidavit_pb2.ADMIN, admin.public_key, display_name="genesis admin"
        )
    )
    async with open_log(data_dir, min_free_bytes=min_free_bytes, spec=spec) as opened:
        await opened.sequencer.append(genesis)
    return verifier, path


async def _report_faults(
    sequencer: Sequencer, health_servicer: health.aio.HealthServicer, log_service: str
) -> None:
    """Health follows the log's ability to append: the Log service is NOT_SERVING while
    appends cannot be made durable (reads go on), and every change is logged on one line."""
    fault = None
    while True:
        fault = await sequencer.wait_fault_change(fault)
        if fault is None:
            log.info("appends are durable again")
            await health_servicer.set(log_service, health_pb2.HealthCheckResponse.SERVING)
        else:
            log.error("appends refused: %s", fault)
            await health_servicer.set(log_service, health_pb2.HealthCheckResponse.NOT_SERVING)


CHECK_PAUSE_S = 0.005
"""Pause of the scheduled check between chunks of entries, so serving goes first."""


async def _scheduled_checks(opened: OpenLog, settings: ServeSettings) -> None:
    """Check the whole log every check_interval_s. Damage found under the checkpoint halts
    appends (DATA_LOSS; health NOT_SERVING) and is noted in the data directory, so the next
    start checks the whole log again and refuses to serve it while it is damaged."""
    loop = asyncio.get_running_loop()
    damage = DamageNote(settings.data_dir / config.DAMAGE_FILE)
    while True:
        await asyncio.sleep(settings.check_interval_s)
        log.info("scheduled check: verifying every entry and tile")
        try:
            report = await loop.run_in_executor(
                None,
                lambda: check_log(opened.storage, opened.verifier_key, pause=CHECK_PAUSE_S),
            )
        except StorageUnavailableError as e:  # not damage: the next check tries again
            log.warning("scheduled check: not done, the storage cannot be reached: %s", e)
            continue
        except StorageError as e:
            problems = [str(e)]
        else:
            problems = report.problems
            if not problems:
                log.info("scheduled check: %d entries and their tiles are sound", report.size)
                continue
        for problem in problems[:10]:
            log.error("scheduled check: %s", problem)
        damage.write(problems)
        await opened.sequencer.halt(
            DataLossError(
                f"the log's database is damaged: {problems[0]}; this server signs nothing more. "
                f"Stop it, restore the data directory from a backup (the damage found is "
                f"listed in {damage.path}) and run `affidavit check`"
            )
        )
        return


def _tls(settings: ServeSettings) -> grpc.ServerCredentials | None:
    """TLS credentials when a certificate is configured; with a client CA, clients must present
    a certificate it signed (mTLS)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    # gRPC would report unusable files only as a failure to listen: check them here first.
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert, settings.tls_key
        )
    except ssl.SSLError as e:
        raise OSError(
            f"--tls-cert {settings.tls_cert} and --tls-key {settings.tls_key} are not a PEM "
            f"certificate and its private key ({e.reason or e})"
        ) from None
    if settings.tls_client_ca is not None:
        try:
            ssl.create_default_context(cafile=settings.tls_client_ca)
        except ssl.SSLError as e:
            raise OSError(
                f"--tls-client-ca {settings.tls_client_ca} holds no PEM CA certificate "
                f"({e.reason or e})"
            ) from None
    ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def _console(settings: ServeSettings, grpc_port: int) -> http_app.Face:
    """The console's face, reading this server's gRPC as its own TLS settings require."""
    from affidavit.server.http_console import ConsoleTls, console_face

    tls = None
    if settings.tls_cert is not None:
        ca = settings.console_tls_ca or settings.tls_cert
        tls = ConsoleTls(ca, settings.console_tls_cert, settings.console_tls_key)
    return console_face(settings.listen, grpc_port, tls, settings.console_audit_report)


async def serve(settings: ServeSettings) -> None:
    """Serve the log in settings.data_dir until a stop signal; the in-flight batch completes."""
    measured = metrics.Metrics()
    async with open_log(
        settings.data_dir,
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        queue_size=settings.queue_size,
        min_free_bytes=settings.min_free_bytes,
        refusal_window_s=settings.refusal_window_s,
        on_batch=measured.batch,
        spec=settings.store,
    ) as opened:
        if opened.gate is not None and opened.sequencer.checkpoint.size == 0:
            raise StorageError(
                f"{opened.storage.location} has no genesis entry (its creation was interrupted); "
                "remove it and run `affidavit init` again"
            )
        auditors = Auditors(list(settings.auditor_token_hashes))
        targets = [parse_target(t) for t in settings.witnesses]
        witnesses = [note.parse_verifier(k) for k in settings.witness_keys]
        known = {v.key_text() for v in witnesses if isinstance(v, CosignatureV1Verifier)}
        witnesses += [t.verifier for t in targets if t.verifier.key_text() not in known]
        published = Published(opened.storage, opened.sequencer, witnesses, settings.witness_quorum)
        workers = settings.ingest_workers
        workers = ingest_workers.default_workers() if workers is None else workers
        ingest = IngestWorkers(workers) if opened.gate is not None and workers > 0 else None
        service = LogService(
            opened.storage,
            opened.sequencer,
            gate=opened.gate,
            refusals=opened.refusals,
            auditors=auditors,
            witnesses=witnesses,
            published=published,
            max_entry_bytes=settings.max_entry_bytes,
            max_batch_entries=settings.max_batch_entries,
            page_size=settings.page_size,
            metrics=measured,
            ingest_workers=ingest,
        )
        sequencer, storage = opened.sequencer, opened.storage
        measured.watch_log(
            lambda: sequencer.checkpoint.size,
            lambda: sequencer.queued,
            lambda: (storage.cosigned() or (0, None))[1],
            witnesses,
        )
        max_message = settings.max_entry_bytes * settings.max_batch_entries + (1 << 20)
        server = grpc.aio.server(
            interceptors=[StrictRequests()],
            options=[
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", max_message),
                # gRPC binds with SO_REUSEPORT by default: a second server on a taken port would
                # start and share it, and clients would reach one log or the other at random.
                ("grpc.so_reuseport", 0),
            ],
        )
        affidavit_pb2_grpc.add_LogServicer_to_server(service, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        log_service = affidavit_pb2.DESCRIPTOR.services_by_name["Log"].full_name
        reflection.enable((log_service, health.SERVICE_NAME), server)
        credentials = _tls(settings)
        try:
            if credentials is None:
                port = server.add_insecure_port(settings.listen)
            else:
                port = server.add_secure_port(settings.listen, credentials)
        except RuntimeError:
            port = 0
        if port == 0:  # grpc.aio reports a failed bind by raising or by returning port 0
            raise OSError(f"cannot listen on {settings.listen}: is the port in use?")
        metrics_runner = None
        if settings.metrics_listen is not None:
            at = parse_listen(settings.metrics_listen, "--metrics-listen")
            metrics_runner, metrics_port = await metrics.start(measured, at.host, at.port)
            log.info(
                "metrics at http://%s:%d/metrics",
                at.host,
                metrics_port,
                extra={"event": "metrics-listening", "port": metrics_port},
            )
        await server.start()
        pusher = Pusher(opened.storage, opened.sequencer, published, targets, metrics=measured)
        await pusher.start()
        http = None
        if settings.http_listen is not None:
            tiles = TilesFace(
                opened.storage,
                lambda: opened.sequencer.checkpoint.size,
                published.note,
                auditors,
                opened.sequencer.refresh,
            )
            faces = [tiles.face()]
            if settings.console:
                faces.append(_console(settings, port))
            http, http_port = await http_app.start(
                http_app.make_app(
                    faces,
                    on_answer=measured.http_answered,
                ),
                settings.http_listen,
            )
            log.info(
                "affidavit HTTP at %s:%d (tlog-tiles at /%s)",
                settings.http_listen.rsplit(":", 1)[0],
                http_port,
                ", console at /console/" if settings.console else "",
                extra={"event": "http-listening", "port": http_port},
            )
        for name in ("", log_service):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        health_task = asyncio.ensure_future(
            _report_faults(opened.sequencer, health_servicer, log_service)
        )
        checks = (
            asyncio.ensure_future(_scheduled_checks(opened, settings))
            if settings.check_interval_s > 0
            else None
        )
        checkpoint = opened.sequencer.checkpoint
        log.info(
            "affidavit serving %s at %s:%d, tree size %d, log key %s (%s entries%s)",
            checkpoint.origin,
            settings.listen.rsplit(":", 1)[0],
            port,
            checkpoint.size,
            opened.verifier_key,
            opened.storage.entry_format(),
            ", TLS" if credentials else "",
        )

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # What startup made (modules, the log's state, caches' first fill) lives as long as the
        # server: kept out of the collector's full passes, which otherwise walk it all again
        # (server CPU per statement under load ≈8 % lower, bench_append's statements section).
        gc.freeze()
        await stop.wait()
        log.info("stopping: finishing requests in flight", extra={"event": "stopping"})
        if opened.refusals is not None:
            await opened.refusals.stop()  # the window's count on the record while appends run
        health_task.cancel()
        if checks is not None:
            checks.cancel()
        await opened.sequencer.begin_shutdown()  # ends checkpoint watches
        await health_servicer.enter_graceful_shutdown()
        await pusher.stop()
        if http is not None:
            await http.cleanup()
        await server.stop(SHUTDOWN_GRACE_S)
        log.info("gRPC stopped; integrating what is queued", extra={"event": "grpc-stopped"})
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        if ingest is not None:
            ingest.close()
    log.info(
        "stopped at tree size %d",
        opened.sequencer.checkpoint.size,
        extra={"event": "stopped", "tree_size": opened.sequencer.checkpoint.size},
    )
