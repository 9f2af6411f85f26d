"""The code stays ruff-clean and mypy-clean (strict): the suite fails otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import typecheck

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*args: str) -> None:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}"


def test_ruff_lint() -> None:
    _run(str(BIN / "ruff"), "check", ".")


def test_ruff_format() -> None:
    _run(str(BIN / "ruff"), "format", "--check", ".")


def test_mypy_strict() -> None:
    done = typecheck.run([])
    assert done.returncode == 0, f"mypy failed:\n{done.stdout}{done.stderr}"
