"""The one switch that turns every C core off, as the tests read it: AFFIDAVIT_PURE_PYTHON=1
(statements/compiled.py and merkle/hashing.py read the same variable when they are imported).

A test of a C core calls skip_if_c_cores_off() first: under the switch there is no core to
test and the test is skipped; without it the core must be there (pip install -e . builds every
one), so the test goes on and fails if it is missing, never skips."""

from __future__ import annotations

import os

import pytest

C_CORES_OFF = os.environ.get("AFFIDAVIT_PURE_PYTHON") == "1"


def skip_if_c_cores_off(*, module: bool = False) -> None:
    """Skip the calling test (the whole calling module if module) when the C cores are off."""
    if C_CORES_OFF:
        pytest.skip("AFFIDAVIT_PURE_PYTHON=1: the C cores are off", allow_module_level=module)
