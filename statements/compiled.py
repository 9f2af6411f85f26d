"""The compiled fast paths of statements/ and server/ (C files built by setup.py, as merkle's
hashing core is): each module that has one loads it here, so that one switch turns them all off.

Every core only answers what the Python beside it would answer, and declines the rest to it;
AFFIDAVIT_PURE_PYTHON=1 (read at import) runs the Python alone, as the tests do too."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load(name: str, package: str = "affidavit.statements") -> ModuleType | None:
    """The compiled module <package>.<name>, or None: AFFIDAVIT_PURE_PYTHON=1, or not built."""
    if os.environ.get("AFFIDAVIT_PURE_PYTHON") == "1":
        return None
    try:
        return importlib.import_module(f"{package}.{name}")
    except ImportError:
        return None
