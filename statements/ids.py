"""Identifiers in statements: UUIDv7 statement ids and identity ids.

Identity ids double as C2SP key names (an identity's key file is a signer key text named by
it), so they follow the key-name rules and a stricter alphabet that is safe in index keys.
"""

from __future__ import annotations

import functools
import os
import re
import time
import uuid

_IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
_UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def uuid7(now_ms: int | None = None) -> str:
    """A fresh UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then 74 random bits."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (2**62 - 1)
    return str(uuid.UUID(int=value))


def is_uuid7(text: str) -> bool:
    return _UUID7.fullmatch(text) is not None


# The same agents, humans and admins come back in statement after statement: judged once each.
@functools.lru_cache(maxsize=4096)
def is_identity_id(text: str) -> bool:
    """1–128 characters of [A-Za-z0-9._:@/-], starting with a letter or digit."""
    return _IDENTITY.fullmatch(text) is not None
