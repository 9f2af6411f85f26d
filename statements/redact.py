"""Redacting action parameters before they are signed, and the one check of what was shown.

Every string in the parameters goes through the secret guard; each secret is replaced by its
marker ``«redacted:<rule>:<fingerprint>»``. The signed operation then carries:
  * ``parameters_json``: the canonical (RFC 8785) text of the redacted parameters;
  * ``parameters_digest``: ``canonical.shown_digest`` of that text, fingerprints cut from the
    markers — the digest an approval binds to, which the approving human's client computes
    from the same real parameters (``parameters_digest``) and the log recomputes from the text;
  * ``redactions``: one per marker, in the order of the canonical text, at its JSON pointer.
``check_shown`` holds the log to all three on every INTENT and OUTCOME, whatever the redactions
say, so what was approved, what is shown and what ran are one thing (statements/README.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import secret_values, secrets
from affidavit.statements.canonical import canonical_json, is_canonical, loads, shown_digest
from affidavit.statements.secret_values import pointer_part


def redact_parameters(parameters: Any, key: bytes) -> tuple[str, str, list[pb.Redaction]]:
    """(canonical JSON of the redacted parameters, its shown digest, the redactions).

    ``key`` keys the markers' fingerprints (the producer's redaction key). JSONLimitError
    (a ValueError) for parameters that are not canonicalizable JSON within the bounds.
    """
    canonical_json(parameters)  # depth and number domain first: the walk recurses
    text = canonical_json(secret_values.redact_value(parameters, key))
    return text, shown_digest(text), list(markers(loads(text)))


def parameters_digest(parameters: Any) -> str:
    """The digest an approval of these real parameters binds to: the one the agent's INTENT
    carries for them. Fingerprints are cut from it, so the throwaway key never shows."""
    return redact_parameters(parameters, os.urandom(32))[1]


def markers(value: Any, path: str = "") -> Iterator[pb.Redaction]:
    """A Redaction for each marker in the strings of a parsed JSON value, in document order."""
    if isinstance(value, str):
        if "«redacted:" in value:
            for m in secrets.MARKER.finditer(value):
                yield pb.Redaction(path=path, rule=m.group("rule"), fingerprint=m.group("fp"))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from markers(v, f"{path}/{pointer_part(k)}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from markers(v, f"{path}/{i}")


def check_shown(
    parameters_json: str,
    parsed: Any,
    digest: str,
    redactions: Sequence[pb.Redaction],
    *,
    known_canonical: bool = False,
) -> str | None:
    """What is wrong with an operation's shown parameters, digest and redactions, or None.

    ``parsed`` is ``parameters_json`` parsed (canonical.loads); ``known_canonical``: what
    canonical.parse said of it (True: it is canonical, not checked again). The problem names
    the field and never quotes a parameter.
    """
    if not known_canonical and not is_canonical(parameters_json, parsed):
        return "parameters_json must be canonical JSON (RFC 8785: sorted keys, no spaces)"
    if shown_digest(parameters_json) != digest:
        return (
            "parameters_digest is not the digest of parameters_json as shown (SHA-256 of its "
            "RFC 8785 text with marker fingerprints cut); compute it with the client library"
        )
    # Every marker is in the text as written (canonical JSON escapes none of its characters).
    marked = "«redacted:" in parameters_json
    if not marked and not redactions:
        return None  # no marker, none listed: the common case, nothing to compare
    listed = [(r.path, r.rule, r.fingerprint) for r in redactions]
    shown = markers(parsed) if marked else ()
    found = [(r.path, r.rule, r.fingerprint) for r in shown]
    if listed != found:
        i = next((i for i, (a, b) in enumerate(zip(listed, found, strict=False)) if a != b), None)
        where = f"redactions[{i}]" if i is not None else f"{len(listed)} redactions"
        return (
            f"redactions do not list the markers in parameters_json ({where}; "
            f"{len(found)} markers): list exactly one per marker, in document order"
        )
    return None
