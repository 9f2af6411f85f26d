"""The README's walk-through runs as written, against a real server, and tells the story."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Walk-through", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the README's walk-through has no sh block"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_readme_walkthrough(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "AFFIDAVIT_LISTEN": address,
        "AFFIDAVIT_SERVER": address,
        "PYTHONPATH": str(ROOT),
    }
    script = "set -euo pipefail\n" + walkthrough()
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "serve.log").read_text() if (tmp_path / "serve.log").exists() else ""
    assert proc.returncode == 0, f"walk-through failed:\n{out}\n--- serve.log ---\n{log}"
    # The story comes out: who authorised the pull request, and the evidence verified offline.
    assert "alice@example.com" in out and "CHG-1042" in out
    assert "commit:3f2a9c1e" in out
    assert "tool-not-granted" in out  # the out-of-scope attempt, flagged
    # The stolen key: its use is recorded, the grant withdrawn, the next attempt refused and on
    # the log's record, and who-authorised shows the grant revoked.
    assert "refused, as it should be" in out and "key-retired" in out
    assert "REVOKED at log index" in out
    assert "exit 5: recorded, but not authorised" in out
    assert "audit reported findings" in out
    bundle = (tmp_path / "evidence.json").read_text()
    assert '"format": "affidavit-bundle/1"' in bundle or '"format":"affidavit-bundle/1"' in bundle
    # No private key material was ever printed.
    for key_file in tmp_path.glob("*.key"):
        secret = key_file.read_text().strip().split("+", 4)[4]  # PRIVATE+KEY+name+hash+seed
        assert secret not in out and secret not in log
