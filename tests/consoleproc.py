"""Run the real `affidavit console` as a subprocess, and a browser for the console's tests.

    console = ConsoleProcess(server.address).start()   # a real HTTP server on a free port
    console.url("/search")                              # http://127.0.0.1:PORT/console/search
    console.stop()
    MountedConsole(server.http_url).url("/search")      # the one `serve --http-listen` mounts

`chromium()` finds the system's Chromium for Playwright: Debian's `chromium` package, which
.ci/run installs. Where none is found the browser tests say so with the install line; under CI
(CI=true) they fail instead, since CI must always run them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.serverproc import AFFIDAVIT, START_TIMEOUT, STOP_TIMEOUT, clean_env

_AT = re.compile(r"affidavit console at (?P<url>http://\S+?)/console/ ")
INSTALL = "apt-get install -y chromium"


class MountedConsole:
    """The console a log serves itself (`affidavit serve --http-listen`), under /console/ of
    its HTTP face at base (http://127.0.0.1:PORT): nothing of its own to start or stop."""

    def __init__(self, base: str) -> None:
        self.base = base

    def url(self, path: str = "/") -> str:
        return f"{self.base}/console{path}"

    def start(self) -> MountedConsole:
        return self

    def stop(self) -> int:
        return 0


class ConsoleProcess:
    """One `affidavit console` process for the log at server (extra flags in args)."""

    def __init__(self, server: str, *args: str) -> None:
        self.server = server
        self.args = list(args)
        self.proc: subprocess.Popen[str] | None = None
        self.base = ""
        self.output: list[str] = []
        self._ready = threading.Event()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.output.append(line)
            m = _AT.search(line)
            if m and not self.base:
                self.base = m["url"]
                self._ready.set()
        self._ready.set()

    def start(self) -> ConsoleProcess:
        cmd = [str(AFFIDAVIT), "console", "--server", self.server, "--listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen(
            [*cmd, *self.args],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self._ready.wait(START_TIMEOUT)
        if not self.base:
            self.stop()
            raise AssertionError("affidavit console did not start:\n" + "".join(self.output))
        return self

    def url(self, path: str = "/") -> str:
        return f"{self.base}/console{path}"

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def chromium() -> str:
    """The system's Chromium, or the test skips (fails under CI) saying how to install it."""
    for candidate in (os.environ.get("AFFIDAVIT_CHROMIUM"), "chromium", "chromium-browser"):
        found = candidate and (shutil.which(candidate) or (Path(candidate).is_file() and candidate))
        if found:
            return str(found)
    message = f"no Chromium found for the console's browser tests: {INSTALL} (as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
