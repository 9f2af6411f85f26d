"""The secret guard measured on realistic non-secrets it was not written against.

tests/benign_corpus.py generates realistic non-secrets (names of secrets, hashes, UUIDs, image
references, public keys, identifiers); none may be flagged, as text or as parameter values.
The guard's figures on two public scanners' corpora (gitleaks, detect-secrets), measured on
2026-12-04, are recorded in statements/README.md; those corpora are not kept in this
repository, so they are not a test here.
"""

from __future__ import annotations

import json

from affidavit.statements import secret_values, secrets

from tests.benign_corpus import corpus


def test_benign_corpus_holds_no_finding() -> None:
    """Realistic non-secrets: names of secrets, hashes, UUIDs, images, keys, identifiers."""
    entries = corpus()
    assert len(entries) > 250 and len({e.kind for e in entries}) > 20
    flagged = [(e.kind, e.text[:80]) for e in entries if secrets.scan(e.text)]
    assert flagged == []
    as_json = [json.loads(e.text) for e in entries if e.text.startswith("{")]
    assert len(as_json) > 40
    assert [v for v in as_json if secret_values.scan_value(v)] == []


def test_benign_values_in_every_shape_of_parameters() -> None:
    """The same non-secrets as parameter values, array items and sibling values."""
    texts = [e.text for e in corpus()]
    value = {
        "items": texts,
        "by_kind": {f"k{i}": t for i, t in enumerate(texts)},
        "env": [{"name": "SECRET_REF", "value": t} for t in texts[:40]],
    }
    assert secret_values.scan_value(value) == []
