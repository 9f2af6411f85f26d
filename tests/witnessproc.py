"""Run the real `affidavit witness serve` (C2SP tlog-witness over HTTP) as a subprocess.

    w = WitnessProcess(tmp / "w1", log_keys=[log.verifier_key]).start()
    w.url, w.verifier_key          # http://127.0.0.1:<port>, its cosignature/v1 key text
    w.kill()                       # SIGKILL (a crash); w.start() again: same state and port

Its stderr is kept whole (`w.stderr`). Every process is killed at teardown by its owner.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from affidavit.merkle import keys

from tests.serverproc import AFFIDAVIT, START_TIMEOUT, STOP_TIMEOUT, clean_env

_SERVING = re.compile(r"serving tlog-witness at (?P<host>\S+):(?P<port>\d+)")


class WitnessProcess:
    """One witness (its key made here, under directory) for the logs of log_keys."""

    def __init__(self, directory: Path, log_keys: Sequence[str], name: str = "") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.name = name or f"witness-{directory.name}.example"
        self.key_file = directory / "witness.key"
        if not self.key_file.exists():
            signer, verifier = keys.generate_key(self.name, keys.ALG_COSIGNATURE_V1)
            self.key_file.write_text(signer + "\n")
            self.key_file.chmod(0o600)
            (directory / "witness.pub").write_text(verifier + "\n")
        self.verifier_key = (directory / "witness.pub").read_text().strip()
        self.state_dir = directory / "state"
        self.log_keys = list(log_keys)
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self._port = 0
        self._lines: list[str] = []
        self._cond = threading.Condition()

    @property
    def url(self) -> str:
        assert self.port is not None, "witness not started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        with self._cond:
            return "".join(self._lines)

    def saw(self, text: str, timeout: float = 10.0) -> bool:
        """Whether text appears in the witness's stderr within timeout: its log lines are read
        by a thread, so one written as a response is sent may arrive after the response."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while text not in "".join(self._lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))
            return True

    def command(self) -> list[str]:
        # Port 0 the first time; a restart listens where logs were told it is.
        cmd = [str(AFFIDAVIT), "witness", "serve", "--listen", f"127.0.0.1:{self._port}"]
        cmd += ["--witness-key-file", str(self.key_file), "--state-dir", str(self.state_dir)]
        for key in self.log_keys:
            cmd += ["--log", key]
        return cmd

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self._lines.append(line)
                m = _SERVING.search(line)
                if m is not None and self.port is None:
                    self.port = int(m["port"])
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def start(self, timeout: float = START_TIMEOUT) -> WitnessProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self._cond:
            self._lines, self.port = [], None
        self.proc = subprocess.Popen(
            self.command(),
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True, name="witnessproc-io").start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.port is None and self.proc.poll() is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.5))
        if self.port is None:
            self.kill()
            raise AssertionError(f"witness did not start (exit {self.proc.poll()}):\n{self.stderr}")
        self._port = self.port
        return self

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
