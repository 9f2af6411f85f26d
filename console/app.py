"""The console's aiohttp application: routes, login, error pages, security headers.

`console_app(...)` is an aiohttp sub-application to mount under a prefix (`/console`): on its
own by `affidavit console`, or beside the log's HTTP face. Every page but the login page needs a
live login (console.sessions); without one the reader is sent to log in, told when a login
expired. Reads block on gRPC, so they run in worker threads, one at a time per login. Failures
become pages a person can act on, with the matching status: 404 for what the log does not hold,
503 when the log cannot be reached, 502 when what it sent does not verify — never a traceback.

Pages carry a strict Content-Security-Policy (only this application's own scripts and styles;
the evidence an action page verifies travels as inert JSON), and nothing the console loads comes
from anywhere but the console itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
from affidavit.client.cli.options import time_ms
from affidavit.client.client import Client, Tls, search_request
from affidavit.client.errors import RefusedError, UnavailableError, VerificationError
from affidavit.client.verify import TrustPolicy
from affidavit.console import filters, graph, reads
from affidavit.console.sessions import Login, Sessions
from affidavit.merkle.errors import MerkleError
from affidavit.proto import affidavit_pb2 as pb
from aiohttp import web

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

COOKIE = "affidavit_console"
HERE = Path(__file__).resolve().parent
log = logging.getLogger("affidavit.console")

_SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
_SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions")
_TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates")

SEARCH_FIELDS = (
    ("actor", "Actor (issuer)"),
    ("grantor", "Grantor (anywhere in the chain)"),
    ("approver", "Approver"),
    ("key_id", "Credential / key id"),
    ("resource_prefix", "Resource prefix"),
    ("tool", "Tool"),
    ("session_id", "Session"),
    ("trace_id", "Trace id"),
)
VERDICTS = {"in-scope": pb.IN_SCOPE, "out-of-scope": pb.OUT_OF_SCOPE, "no-grant": pb.NO_GRANT}


@dataclass(frozen=True)
class Settings:
    """Where the log is, how to reach it, and what the console shows beside it."""

    server: str
    prefix: str = "/console"
    tls: Tls | None = None
    audit_report: Path | None = None
    idle_seconds: float = 30 * 60


class PageError(Exception):
    """A page that cannot be shown, with the status and words to show instead, and choices:
    (words, link relative to the console's base) to offer in its place."""

    def __init__(
        self, status: int, title: str, message: str, choices: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.choices = status, title, message, choices


def _render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    settings = request.app[_SETTINGS]
    page = request.app[_TEMPLATES].get_template(template)
    html = page.render(base=settings.prefix, server=settings.server, **context)
    return web.Response(text=html, status=status, content_type="text/html")


async def _read(request: web.Request, read: Callable[[Login], T]) -> T:
    """Run a blocking read with the request's login, in a worker thread."""
    login: Login = request["login"]

    def run() -> T:
        with login.lock:
            return read(login)

    return await asyncio.to_thread(run)


# Login.


async def login_page(request: web.Request) -> web.Response:
    expired = request.query.get("expired") == "1"
    return _render(request, "login.html", expired=expired, error="", form={})


async def login_submit(request: web.Request) -> web.StreamResponse:
    settings = request.app[_SETTINGS]
    form = await request.post()
    token = str(form.get("token", "")).strip()
    log_key = str(form.get("log_key", "")).strip()
    witness_keys = tuple(k.strip() for k in str(form.get("witness_keys", "")).splitlines())
    witness_keys = tuple(k for k in witness_keys if k)
    kept = {"log_key": log_key, "witness_keys": "\n".join(witness_keys)}

    def refuse(message: str) -> web.Response:
        kept["quorum"] = str(form.get("quorum", "0"))
        return _render(request, "login.html", status=401, expired=False, error=message, form=kept)

    if not token or not log_key:
        return refuse("Give the auditor token and the log's verifier key.")
    try:
        quorum = int(str(form.get("quorum", "0") or "0"))
        policy = TrustPolicy(log_key, witness_keys, quorum)
        policy.log_verifier()
        policy.witness_verifiers()
    except (ValueError, MerkleError) as e:
        return refuse(f"The keys or quorum are not usable: {e}")
    client = Client(settings.server, policy, token=token, tls=settings.tls, retries=1)

    def check() -> None:
        client.checkpoint()
        # Any search needs the auditor token: an unknown statement id finds nothing, cheaply.
        client.call(client.stub.Search, search_request(statement_id="-", page_size=1))

    try:
        await asyncio.to_thread(check)
    except VerificationError as e:
        client.close()
        return refuse(f"The log's checkpoint does not verify under the key you pinned: {e}")
    except UnavailableError:
        client.close()
        return refuse(f"The log at {settings.server} cannot be reached. Is it running?")
    except RefusedError as e:
        client.close()
        if e.code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return refuse("The log did not accept this auditor token.")
        return refuse(f"The log refused: {e.message}")
    session_id = request.app[_SESSIONS].open(client, policy)
    response = web.HTTPSeeOther(f"{settings.prefix}/")
    response.set_cookie(
        COOKIE,
        session_id,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path=settings.prefix,
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    session_id = request.cookies.get(COOKIE)
    if session_id:
        request.app[_SESSIONS].close(session_id)
    response = web.HTTPSeeOther(f"{request.app[_SETTINGS].prefix}/login")
    response.del_cookie(COOKIE, path=request.app[_SETTINGS].prefix)
    return response


# Pages.


async def log_page(request: web.Request) -> web.Response:
    audit = request.app[_SETTINGS].audit_report
    overview = await _read(request, lambda login: reads.log_overview(login.client, audit))
    return _render(request, "log.html", log=overview, now=reads.now())


def _criteria(query: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """SearchRequest fields from the query string, and the form values to show again."""
    criteria: dict[str, Any] = {}
    shown: dict[str, str] = {}
    for name, _ in SEARCH_FIELDS:
        value = str(query.get(name, "")).strip()
        if value:
            criteria[name] = shown[name] = value
    verdict = str(query.get("verdict", ""))
    if verdict:
        if verdict not in VERDICTS:
            raise PageError(400, "Bad search", f"verdict must be one of {', '.join(VERDICTS)}")
        criteria["verdict"], shown["verdict"] = VERDICTS[verdict], verdict
    for name, field in (("from", "time_from_ms"), ("to", "time_to_ms")):
        value = str(query.get(name, "")).strip()
        if value:
            criteria[field] = _time_ms(value, name)
            shown[name] = value
    return criteria, shown


def _time_ms(value: str, name: str) -> int:
    try:
        return time_ms(value)
    except ValueError as e:
        raise PageError(400, "Bad search", f"{name}: {e}") from None


def _int(query: Any, name: str, default: int, low: int, high: int) -> int:
    raw = str(query.get(name, default))
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise PageError(400, "Bad request", f"{name} must be a whole number from {low} to {high}")
    return int(raw)


async def search_page(request: web.Request) -> web.Response:
    criteria, shown = _criteria(request.query)
    page = None
    if criteria:
        start = _int(request.query, "start", 0, 0, 2**63)
        size = _int(request.query, "page_size", reads.PAGE_SIZE, 1, 1000)
        page = await _read(request, lambda login: reads.search(login.client, criteria, start, size))
        shown["page_size"] = str(size)
    next_query = ""
    if page is not None and page.next_index:
        next_query = "&".join(
            f"{quote(k)}={quote(v)}" for k, v in {**shown, "start": str(page.next_index)}.items()
        )
    return _render(
        request,
        "search.html",
        fields=SEARCH_FIELDS,
        verdicts=list(VERDICTS),
        shown=shown,
        page=page,
        next_query=next_query,
    )


def _action_of(request: web.Request) -> tuple[str, str | None]:
    """The action a page names: its id (the path segment, or ?id= where no segment can carry
    it: filters.action_href), and the agent whose it is (?agent=, where several agents used
    the id)."""
    action_id = request.match_info.get("action_id") or request.query.get("id")
    if not action_id:
        raise PageError(400, "Bad request", "name the action: ?id=<action id>")
    return action_id, request.query.get("agent") or None


async def _action_view(request: web.Request, page: str) -> reads.ActionView:
    """The action page (action or evidence) names, read and verified. An id several agents
    used, named without ?agent=, is a question about no one action: 400, naming the agents
    and the parameter, with a link to each one's page."""
    action_id, agent_id = _action_of(request)
    try:
        return await _read(request, lambda login: reads.action(login.client, action_id, agent_id))
    except reads.AgentNeeded as e:
        raise PageError(
            400,
            "Name the agent",
            f"{len(e.agents)} agents recorded an action {e.action_id} ({', '.join(e.agents)}): "
            "say whose with ?agent=<agent id>.",
            tuple(
                (f"{agent}'s action", filters.action_href(e.action_id, agent, page))
                for agent in e.agents
            ),
        ) from None


async def action_page(request: web.Request) -> web.Response:
    view = await _action_view(request, "action")
    prefix = request.app[_SETTINGS].prefix
    drawing = graph.chain(
        view.report,
        entry_href=f"{prefix}/entry/{{index}}",
        identity_href=f"{prefix}/identity/{{identity}}",
    )
    intent = next(r for r in view.rows if r.index == view.report.intent_index)
    return _render(
        request,
        "action.html",
        view=view,
        report=view.report,
        drawing=drawing,
        intent_row=intent,
        intent=view.report.intent,
        outcome=view.report.outcome,
        pb=pb,
    )


async def evidence(request: web.Request) -> web.Response:
    view = await _action_view(request, "evidence")
    safe = "".join(c for c in view.report.action_id if c.isalnum() or c in "-_")[:64] or "action"
    return web.Response(
        text=view.bundle_json,
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="evidence-{safe}.json"'},
    )


async def entry_page(request: web.Request) -> web.Response:
    raw = request.match_info["index"]
    if not raw.isdigit():
        raise PageError(404, "No such entry", f"{raw!r} is not a log index")
    view = await _read(request, lambda login: reads.entry(login.client, int(raw)))
    return _render(request, "entry.html", view=view)


async def session_page(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    chains = await _read(request, lambda login: reads.session(login.client, session_id))
    return _render(request, "session.html", session_id=session_id, chains=chains)


async def identity_page(request: web.Request) -> web.Response:
    identity_id = request.match_info["identity_id"]
    view = await _read(request, lambda login: reads.identity(login.client, identity_id))
    return _render(request, "identity.html", view=view)


# Middleware.


_OPEN = ("/login", "/static/")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; a live login for every page but login and static;
    the log's failures as pages."""
    settings = request.app[_SETTINGS]
    relative = request.path[len(settings.prefix) :] or "/"
    try:
        if not relative.startswith(_OPEN):
            session_id = request.cookies.get(COOKIE, "")
            login = request.app[_SESSIONS].get(session_id) if session_id else None
            if login is None:
                where = f"{settings.prefix}/login" + ("?expired=1" if session_id else "")
                raise web.HTTPSeeOther(where)
            request["login"] = login
        response = await handler(request)
    except web.HTTPException as e:
        if isinstance(e, web.HTTPNotFound):  # no such route
            response = _error(request, 404, "Not found", f"The console has no page {request.path}")
        else:
            response = e
    except PageError as e:
        response = _error(request, e.status, e.title, e.message, e.choices)
    except reads.NotFound as e:
        response = _error(request, 404, "Not in the log", str(e))
    except UnavailableError:
        response = _error(
            request,
            503,
            "The log cannot be reached",
            f"The log at {settings.server} did not answer. It may be stopped or restarting; "
            "try again, or ask its operator.",
        )
    except VerificationError as e:
        response = _error(request, 502, "What the log sent does not verify", str(e))
    except RefusedError as e:
        if e.code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            request.app[_SESSIONS].close(request.cookies.get(COOKIE, ""))
            response = web.HTTPSeeOther(f"{settings.prefix}/login?expired=1")
        else:
            response = _error(request, 400, "The log refused the request", e.message)
    except Exception:
        log.exception("console page %s failed", request.path)  # the path only: no token, no query
        response = _error(request, 500, "Something went wrong", "The console failed on this page.")
    _secure(response)
    return response


def _error(
    request: web.Request,
    status: int,
    title: str,
    message: str,
    choices: tuple[tuple[str, str], ...] = (),
) -> web.Response:
    """The error page; choices as PageError's."""
    return _render(
        request, "error.html", status=status, title=title, message=message, choices=choices
    )


def _secure(response: web.StreamResponse) -> None:
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(filters.FILTERS)
    env.tests["instance_of_gap"] = lambda item: isinstance(item, reads.Gap)
    return env


def console_app(settings: Settings) -> web.Application:
    """The console as an aiohttp sub-application, to mount at settings.prefix."""
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[_SETTINGS] = settings
    app[_SESSIONS] = Sessions(settings.idle_seconds)
    app[_TEMPLATES] = _templates()
    app.router.add_get("/", log_page)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_get("/search", search_page)
    for page, handler in (("/action", action_page), ("/evidence", evidence)):
        app.router.add_get(page + "/{action_id}", handler)
        app.router.add_get(page, handler)  # ?id=
    app.router.add_get("/entry/{index}", entry_page)
    app.router.add_get("/session/{session_id}", session_page)
    app.router.add_get("/identity/{identity_id}", identity_page)
    app.router.add_static("/static/", HERE / "static", append_version=True)

    async def close_logins(app: web.Application) -> None:
        app[_SESSIONS].close_all()

    app.on_cleanup.append(close_logins)
    return app


def standalone_app(settings: Settings) -> web.Application:
    """The console alone: mounted at settings.prefix, with / sending readers there."""
    root = web.Application()

    async def home(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{settings.prefix}/")

    root.router.add_get("/", home)
    root.add_subapp(settings.prefix, console_app(settings))
    return root
