"""Canonical JSON for action parameters, and the digests that bind approvals to them.

Canonical form: keys sorted by code point, no insignificant white space, UTF-8, no NaN or
infinities, integers as integers. Two producers that mean the same parameters produce the same
bytes, so a human's approval (bound to a digest) matches the agent's action exactly or not at all.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a JSON-compatible value; ValueError for anything else."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def digest(data: str | bytes) -> str:
    """SHA-256 hex of text (UTF-8) or bytes: the digest form every statement uses."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def parameters_digest(parameters: Any) -> str:
    """The digest of parameters as executed: SHA-256 hex of their canonical JSON."""
    return digest(canonical_json(parameters))


def is_digest(text: str) -> bool:
    """64 lowercase hex characters."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
