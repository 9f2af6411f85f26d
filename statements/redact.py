"""Redacting action parameters before they are signed.

Every string in the parameters goes through the secret guard; each secret is replaced by its
marker and listed as a Redaction at its JSON pointer (RFC 6901). The digest binds the
parameters as executed (before redaction), so an approval of the real parameters still matches,
while the log holds only the redacted text.
"""

from __future__ import annotations

from typing import Any

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import secrets
from affidavit.statements.canonical import canonical_json, parameters_digest


def _pointer_part(key: str | int) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def redact_parameters(parameters: Any, key: bytes) -> tuple[str, str, list[pb.Redaction]]:
    """(canonical JSON of the redacted parameters, digest of the originals, the redactions)."""
    redactions: list[pb.Redaction] = []

    def walk(value: Any, path: str, name: str | None) -> Any:
        if isinstance(value, str):
            text, found = secrets.redact(value, key, name)
            redactions.extend(
                pb.Redaction(path=path, rule=r.rule, fingerprint=r.fingerprint) for r in found
            )
            return text
        if isinstance(value, dict):
            return {k: walk(v, f"{path}/{_pointer_part(k)}", k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}/{i}", name) for i, v in enumerate(value)]
        return value

    redacted = walk(parameters, "", None)
    return canonical_json(redacted), parameters_digest(parameters), redactions
