"""What a witness follows and with which key: the logs (address, origin, verifier key), the
witness's own settings, and its cosignature/v1 signer key file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from affidavit.client.client import Tls
from affidavit.merkle import note
from affidavit.merkle.cosignature import CosignatureV1Signer
from affidavit.merkle.errors import MerkleError
from affidavit.merkle.keys import ALG_ED25519, parse_verifier_key


@dataclass(frozen=True)
class LogConfig:
    """A log to witness: where it is, its origin, its Ed25519 verifier key text.

    Invariant (checked on construction): log_key is an Ed25519 note verifier key whose name is
    the origin, as a log's checkpoints are signed under their origin.
    """

    address: str
    origin: str
    log_key: str
    tls: Tls | None = None

    def __post_init__(self) -> None:
        try:
            vkey = parse_verifier_key(self.log_key)
        except MerkleError as e:
            raise ValueError(f"log key for {self.origin!r} is not a verifier key: {e}") from None
        if vkey.alg != ALG_ED25519:
            raise ValueError(f"log key {vkey.name!r} is not an Ed25519 log key")
        if vkey.name != self.origin:
            raise ValueError(
                f"log key is named {vkey.name!r}, not the origin {self.origin!r}; "
                "a log signs its checkpoints under its origin"
            )
        if not self.address:
            raise ValueError(f"no address for the log {self.origin!r}")

    @classmethod
    def from_key(cls, address: str, log_key: str, tls: Tls | None = None) -> LogConfig:
        """The log at address whose origin is its key's name (log.pub of `affidavit serve`)."""
        try:
            origin = parse_verifier_key(log_key).name
        except MerkleError as e:
            raise ValueError(f"log key is not a verifier key: {e}") from None
        return cls(address, origin, log_key, tls)


@dataclass(frozen=True)
class WitnessConfig:
    """What the witness follows, its key, and where it keeps state and evidence.

    ``key_file`` holds the witness's cosignature/v1 signer key text. ``state_dir`` holds per
    origin the last cosigned note, its lock file and any block marker; ``evidence_dir``
    (default ``state_dir/evidence``) the evidence files. ``poll_interval`` (seconds) polls
    GetCheckpoint instead of watching the WatchCheckpoints stream. ``timeout`` and ``retries``
    apply to each RPC; ``max_backoff`` caps the wait between reconnections; a watch stream is
    redialled every ``watch_redial`` seconds so a silently dead connection is noticed.

    Several entries may share an origin (mirrors of one log): they share its state.
    """

    logs: tuple[LogConfig, ...]
    key_file: Path
    state_dir: Path
    evidence_dir: Path | None = None
    poll_interval: float | None = None
    timeout: float = 30.0
    retries: int = 4
    max_backoff: float = 30.0
    watch_redial: float = 300.0

    def __post_init__(self) -> None:
        if not self.logs:
            raise ValueError("no logs to witness")
        keys: dict[str, str] = {}
        for entry in self.logs:
            if keys.setdefault(entry.origin, entry.log_key) != entry.log_key:
                raise ValueError(f"two different log keys for the origin {entry.origin!r}")
        if self.poll_interval is not None and self.poll_interval <= 0:
            raise ValueError("poll_interval must be positive")

    @property
    def evidence_path(self) -> Path:
        return self.evidence_dir if self.evidence_dir is not None else self.state_dir / "evidence"


def load_signer(key_file: Path) -> CosignatureV1Signer:
    """The witness's signer from its key file; ValueError saying what is wrong (never the key)."""
    try:
        text = key_file.read_text().strip()
    except OSError as e:
        raise ValueError(f"cannot read the witness key {key_file}: {e.strerror}") from None
    try:
        signer = note.parse_signer(text)
    except MerkleError as e:
        raise ValueError(f"{key_file} is not a signer key: {e}") from None
    if not isinstance(signer, CosignatureV1Signer):
        raise ValueError(
            f"{key_file} holds an Ed25519 note key, not a witness (cosignature/v1) key"
        )
    return signer
