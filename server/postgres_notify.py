"""Waking a scale-out frontend as soon as another one moves the published size.

A frontend answers a batch's appenders once the published size covers it (server.postgres_publish),
and it is often another frontend that moves it there. Rather than look at the size in a loop,
each frontend LISTENs on one channel; whoever moves the size sends the new size on it with
pg_notify in the same transaction (PostgreSQL delivers a notification only once that commits).

A notification only hastens a look: a waiter still looks at the size itself now and then
(POLL_S), so a notification lost with a broken connection, or an engine without LISTEN
(CockroachDB, YugabyteDB), costs latency, never correctness. On such an engine listen() gives
None and the frontend only polls.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import psycopg

CHANNEL = "affidavit_published"
"""The channel a new published size is sent on (its payload: the size in decimal)."""
RECONNECT_S = 1.0
"""Pause before the listener connects again after losing its connection."""

log = logging.getLogger(__name__)


class Listener:
    """The newest published size heard on CHANNEL, and waiting for it to reach a size."""

    def __init__(self, url: str, conn: psycopg.Connection[Any]) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = conn
        self._heard = 0
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
        self._thread.start()

    def wait(self, size: int, timeout: float) -> int:
        """Return the newest size heard, once it is at least size or after timeout seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._heard < size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._heard

    def close(self) -> None:
        self._stopping.set()
        self._thread.join()
        if self._conn is not None:
            self._conn.close()

    def _hear(self, payload: str) -> None:
        try:
            size = int(payload)
        except ValueError:
            return  # not ours: someone else notified on the channel
        with self._changed:
            if size > self._heard:
                self._heard = size
                self._changed.notify_all()

    def _run(self) -> None:
        while not self._stopping.is_set():
            conn = self._conn
            if conn is None:
                conn = _connect(self._url)
                if conn is None:
                    self._stopping.wait(RECONNECT_S)
                    continue
                self._conn = conn
            try:
                for n in conn.notifies(timeout=0.2):
                    self._hear(n.payload)
            except psycopg.Error as e:
                log.debug("listening for the published size failed: %s", e)
                self._conn = None
                with contextlib.suppress(psycopg.Error):
                    conn.close()


def _connect(url: str) -> psycopg.Connection[Any] | None:
    """A connection listening on CHANNEL, or None (the server is down, or cannot LISTEN)."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.Error:
        return None
    try:
        conn.execute(f"LISTEN {CHANNEL}")
    except psycopg.Error:
        conn.close()
        return None
    return conn


def listen(url: str) -> Listener | None:
    """A Listener, or None where the engine has no LISTEN (or cannot be reached now)."""
    conn = _connect(url)
    return None if conn is None else Listener(url, conn)
