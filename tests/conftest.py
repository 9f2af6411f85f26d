"""Shared fixtures: the hashing-core switch, vector loading, and the run's one PostgreSQL and
one object store (tests.backends; session-scoped here, so every module shares them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from affidavit.merkle import hashing

from tests.backends import backends_root, objects, postgres

__all__ = ["backends_root", "objects", "postgres"]

VECTORS = Path(__file__).parent / "vectors"


def load_vector(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


@pytest.fixture(params=hashing.available_backends())
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once per hashing core this installation has (C and pure Python)."""
    before = hashing.backend()
    hashing.set_backend(request.param)
    yield request.param
    hashing.set_backend(before)
