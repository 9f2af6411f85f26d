"""Template filters: how times, ages, hashes and counts read on the console's pages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from markupsafe import Markup


def utc(time_ms: int | None) -> str:
    """Unix milliseconds as a UTC time to the millisecond; "-" for none."""
    if not time_ms:
        return "-"
    moment = datetime.fromtimestamp(time_ms / 1000, UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{time_ms % 1000:03d}Z"


def age(seconds: float | None) -> str:
    """A duration in the largest unit that keeps it readable: 42 s, 5 min, 3 h, 2 days."""
    if seconds is None:
        return "never"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size * (2 if unit == "days" else 1):
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def short(value: str, length: int = 12) -> str:
    """The start of a long id or hash, with an ellipsis when cut."""
    return value if len(value) <= length else value[:length] + "…"


def css(verdict: str) -> str:
    """The badge class of a verdict."""
    return {"IN_SCOPE": "ok", "OUT_OF_SCOPE": "bad", "NO_GRANT": "bad"}.get(verdict, "none")


def json_script(text: str) -> Markup:
    """JSON text made safe inside a <script type="application/json"> element: "<", ">" and "&"
    (which JSON holds only inside strings) become \\u escapes, so no "</script>" can end it, and
    JSON.parse reads back the very same value."""
    return Markup(text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))


def segment(value: str) -> str:
    """An id as one path segment of a link: every character but the unreserved ones escaped,
    "/" too (Jinja's urlencode leaves "/", so an action id "x/y" made a link to a page that does
    not exist, and "../z" one a browser resolves elsewhere). The router gives the id back whole."""
    return quote(str(value), safe="")


NOT_SEGMENTS = frozenset({".", ".."})
"""Ids no path segment can carry: the URL standard resolves a segment "." or ".." (escaped
as %2E or not) against the path before any request is made, so /action/.. is /."""


def action_href(action_id: str, agent: str = "", page: str = "action") -> str:
    """The link, relative to the console's base, to page ("action" or "evidence") of agent's
    action action_id: the id as a path segment (page/<id>?agent=...), or, for an id that
    cannot be one, in the query (page?id=...&agent=...). Every action link is made here."""
    query = f"agent={quote(agent, safe='')}" if agent else ""
    if action_id in NOT_SEGMENTS:
        return f"{page}?id={quote(action_id, safe='')}" + (f"&{query}" if query else "")
    return f"{page}/{segment(action_id)}" + (f"?{query}" if query else "")


FILTERS: dict[str, Callable[..., Any]] = {
    "utc": utc,
    "age": age,
    "short": short,
    "css": css,
    "json_script": json_script,
    "segment": segment,
    "action_href": action_href,
}
