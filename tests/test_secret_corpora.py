"""The secret guard measured on corpora nobody here wrote, and on realistic non-secrets.

tests/vectors/detect-secrets-examples.json and gitleaks-examples.json hold the labelled
examples of two public secret scanners (see their _source, _license and _conversion fields);
tests/benign_corpus.py generates realistic non-secrets. Each figure is a regression bound at
what was measured when the guard was last changed: recall may only rise, the false-positive
rate may only fall. The figures themselves are in statements/README.md.

A negative marked "reviewed" is a credential in substance (a secret of another rule's format,
a password below one plugin's bar): it is left out of the false-positive rate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from affidavit.statements import secret_values, secrets

from tests.benign_corpus import corpus

VECTORS = Path(__file__).resolve().parent / "vectors"

# (corpus, lowest recall, highest false-positive rate, fewest examples): as measured.
BOUNDS = {
    "detect-secrets-examples": (0.45, 0.021, 300),
    "gitleaks-examples": (0.95, 0.007, 1900),
}


def load(name: str) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = json.loads((VECTORS / f"{name}.json").read_text())["examples"]
    return examples


def rates(examples: list[dict[str, Any]]) -> tuple[float, float]:
    positives = [x for x in examples if x["secret"]]
    negatives = [x for x in examples if not x["secret"] and "reviewed" not in x]
    found = sum(1 for x in positives if secrets.scan(x["text"]))
    flagged = sum(1 for x in negatives if secrets.scan(x["text"]))
    return found / len(positives), flagged / len(negatives)


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_recall_and_false_positive_rate_on_public_corpora(name: str) -> None:
    low_recall, high_fpr, size = BOUNDS[name]
    examples = load(name)
    assert len(examples) >= size
    recall, fpr = rates(examples)
    print(f"{name}: recall {recall:.3f}, false-positive rate {fpr:.3f}")
    assert recall >= low_recall and fpr <= high_fpr


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_every_reviewed_negative_says_why(name: str) -> None:
    examples = load(name)
    reviewed = [x for x in examples if "reviewed" in x]
    assert all(not x["secret"] and len(x["reviewed"]) > 20 for x in reviewed)
    assert len(reviewed) <= 0.06 * len(examples)  # a correction, not a relabelling


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
