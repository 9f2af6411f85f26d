"""The secret guard's findings must not depend on the process's hash seed (secrets.py promises
it: every process that scans a text reports the same findings).

secret_rules.entropy sums over ``set(s)``, whose order follows PYTHONHASHSEED, so the float it
returns for a value whose entropy is exactly MIN_ENTROPY (2.5 bits) is 2.5 under most seeds and
2.4999999999999996 under some: ``token=c2VjcmV0c2VjcmV0c2VjcmV0`` is then a secret in one
process (the log's ingest worker) and not in another (an auditor replaying the log). Found by
the differential fuzz of the guard change (7bebee6..main), where it showed as a difference
between two processes; both versions behave the same.
"""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
from affidavit.statements import secret_values, secrets
value = "c2VjcmV0" * 3
print(len(secrets.scan("token=" + value)), len(secret_values.scan_value({"token": value})))
"""


def test_findings_are_the_same_under_every_hash_seed() -> None:
    answers: dict[str, list[int]] = {}
    for seed in range(32):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        answers.setdefault(out.stdout.strip(), []).append(seed)
    assert len(answers) == 1, f"findings (scan, scan_value) by hash seed: {answers}"
