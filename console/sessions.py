"""Console logins: who is logged in, held server-side.

A login holds the investigator's auditor token and trust policy in this process's memory only;
the browser gets an unguessable session id in an HttpOnly, SameSite=Strict cookie. The token
never appears in a URL, a page, a cookie or a log line. A login ends when the investigator logs
out, or after `idle_seconds` without a request.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from affidavit.client.client import Client
from affidavit.client.verify import TrustPolicy


@dataclass
class Login:
    """One investigator's login: a client to the log with their token, and their policy."""

    client: Client
    policy: TrustPolicy
    last_used: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while a page reads through client: the client's trusted checkpoint is state."""


class Sessions:
    """Logins by session id; a login unused for idle_seconds is closed and forgotten."""

    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._logins: dict[str, Login] = {}
        self._lock = threading.Lock()

    def open(self, client: Client, policy: TrustPolicy) -> str:
        """Start a login; returns its session id (256 random bits, URL-safe)."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._logins[session_id] = Login(client, policy, self._clock())
        return session_id

    def get(self, session_id: str) -> Login | None:
        """The live login of session_id, its idle clock restarted; None if unknown or expired."""
        now = self._clock()
        with self._lock:
            login = self._logins.get(session_id)
            if login is None:
                return None
            if now - login.last_used > self.idle_seconds:
                del self._logins[session_id]
                login.client.close()
                return None
            login.last_used = now
            return login

    def close(self, session_id: str) -> None:
        with self._lock:
            login = self._logins.pop(session_id, None)
        if login is not None:
            login.client.close()

    def close_all(self) -> None:
        with self._lock:
            logins, self._logins = list(self._logins.values()), {}
        for login in logins:
            login.client.close()
