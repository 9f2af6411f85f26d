"""A log's data directory and the settings a server runs with.

    <data dir>/log.key   the log's signer key (C2SP signer key text), mode 0600
    <data dir>/log.pub   its verifier key text, to hand to clients and witnesses
    <data dir>/admin.key the first admin identity's signing key, mode 0600, written by init
                         for a statements log: move it off the server
    <data dir>/db/       the LevelDB (see server.storage), unless the log is kept in
                         PostgreSQL and object storage (--storage, --objects; see
                         server.logstore): then every frontend's data dir holds a copy of the
                         keys and nothing else
    <data dir>/checkpoint the latest checkpoint the log signed, kept outside the database to
                         detect a database that lost writes (see server.integrity)
    <data dir>/damage    present only while a whole-log check has found damage: what it found

The origin (the checkpoint's first line) is the key's name, as C2SP logs do.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from affidavit.merkle import hashing, keys, note
from affidavit.merkle.checkpoint import Checkpoint
from affidavit.merkle.errors import MalformedKeyError
from affidavit.server.integrity import KeptCheckpoint
from affidavit.server.logstore import DB_DIR as DB_DIR  # where the LevelDB is, for commands
from affidavit.server.logstore import StoreSpec, open_store
from affidavit.server.storage import MIN_FREE_BYTES, Batch, StorageError

KEY_FILE = "log.key"
PUB_FILE = "log.pub"
ADMIN_KEY_FILE = "admin.key"
CHECKPOINT_FILE = "checkpoint"
DAMAGE_FILE = "damage"
ENTRY_FORMATS = ("statements", "opaque")


def default_origin() -> str:
    return f"{socket.gethostname() or 'localhost'}/affidavit"


@dataclass(frozen=True)
class ServeSettings:
    """How a server runs; every field is also a flag and an environment variable of `serve`."""

    data_dir: Path
    listen: str = "127.0.0.1:7420"
    max_entry_bytes: int = 65535
    max_batch: int = 1000
    max_wait_ms: float = 0.0
    queue_size: int = 4096
    ingest_workers: int | None = None
    """Processes preparing signed statements (None: server.ingest_workers.default_workers)."""
    min_free_bytes: int = MIN_FREE_BYTES
    check_interval_s: float = 0.0
    """Seconds between whole-log checks while serving (0: none)."""
    max_batch_entries: int = 1000
    page_size: int = 1000
    refusal_window_s: float = 10.0
    auditor_token_hashes: tuple[str, ...] = ()
    witness_keys: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    http_listen: str | None = None
    """host:port of the HTTP face (tlog-tiles at the root); None: no HTTP."""
    console: bool = True
    """With an HTTP face: the investigator's console under /console/ (server.http_console)."""
    console_audit_report: Path | None = None
    """A report from `affidavit audit --json`, shown on the console's log page."""
    console_tls_ca: Path | None = None
    """With TLS: the CA the console trusts for this server's certificate (None: tls_cert)."""
    console_tls_cert: Path | None = None
    console_tls_key: Path | None = None
    """With mTLS (tls_client_ca): the console's client certificate and key."""
    witnesses: tuple[str, ...] = ()
    """Witnesses the log pushes its checkpoints to, each NAME=URL@VKEY (server.witness_push)."""
    witness_quorum: int = 0
    """Cosignatures a checkpoint needs to be published (0: publish the latest)."""
    metrics_listen: str | None = None
    """host:port for Prometheus metrics (GET /metrics); None: no metrics endpoint."""
    storage_url: str | None = None
    objects_url: str | None = None
    private_objects_url: str | None = None

    @property
    def store(self) -> StoreSpec:
        return StoreSpec(
            self.data_dir, self.storage_url, self.objects_url, self.private_objects_url
        )


def is_initialised(data_dir: Path) -> bool:
    return (data_dir / KEY_FILE).exists()


def write_private(path: Path, text: str) -> None:
    """Create path with mode 0600 (never more open, whatever the umask) and sync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_public(path: Path, text: str) -> None:
    """Create path world-readable (0644, whatever the umask) and sync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def init_log(
    data_dir: Path, origin: str, entry_format: str = "statements", spec: StoreSpec | None = None
) -> str:
    """Create a log: a new key pair in data_dir and storage (LevelDB in data_dir unless spec
    says otherwise) holding the signed empty tree.

    Returns the verifier key text. Refuses a directory or database that already has a log. A
    statements log still needs its genesis entry (see server.app.create_log).
    """
    spec = spec or StoreSpec(data_dir)
    keys.check_name(origin)
    if entry_format not in ENTRY_FORMATS:
        raise ValueError(f"entry format must be one of {ENTRY_FORMATS}")
    if is_initialised(data_dir) or (data_dir / DB_DIR).exists():
        raise StorageError(f"{data_dir} already holds a log; pick another --data-dir")
    data_dir.mkdir(parents=True, exist_ok=True)
    signer_text, verifier_text = note.generate_key(origin)
    storage = open_store(spec, create=True, min_free_bytes=0)  # a few bytes
    try:
        storage.set_entry_format(entry_format)
        # The empty tree's checkpoint, so a log always has one to serve and extend.
        empty = note.sign(Checkpoint(origin, 0, hashing.EMPTY_ROOT).format(), signer_text)
        storage.lock_head()
        publish = storage.commit(Batch(0, (), (), {}, empty), previous=None)
        if publish is not None:
            publish()
    finally:
        storage.close()
    KeptCheckpoint(data_dir / CHECKPOINT_FILE).replace(empty)
    _write_public(data_dir / PUB_FILE, verifier_text + "\n")
    # The private key last: its presence marks a complete log directory.
    write_private(data_dir / KEY_FILE, signer_text + "\n")
    _sync_dir(data_dir)
    return verifier_text


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_seed(data_dir: Path) -> bytes:
    """The log key's Ed25519 seed (load_key has checked the file): it also signs the log's own
    refusal records (statements.refusals)."""
    return keys.parse_signer_key((data_dir / KEY_FILE).read_text().strip()).seed


def load_key(data_dir: Path) -> tuple[keys.Signer, str]:
    """The log's signer and its verifier key text, from the key file; errors never show the key."""
    path = data_dir / KEY_FILE
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise StorageError(f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    text = path.read_text().strip()
    try:
        return note.parse_signer(text), keys.parse_signer_key(text).verifier_key().text()
    except MalformedKeyError as e:
        raise StorageError(f"{path} does not hold a valid signer key: {e}") from None
