"""Search: statements by who and what they concern, a page at a time, as a table or JSON.

Every criterion takes several values (repeat the option); a statement matches when, for every
criterion given, it matches one of that criterion's values. Pages follow log order: a page ends
with a line naming the --after value of the next one when more results exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from affidavit.client.cli.options import (
    TIME,
    TIME_FORMS,
    Conn,
    connection,
    handle_errors,
    utc_text,
)
from affidavit.client.client import search_request
from affidavit.proto import affidavit_pb2 as pb

VERDICTS = {"in-scope": pb.IN_SCOPE, "out-of-scope": pb.OUT_OF_SCOPE, "no-grant": pb.NO_GRANT}
MAX_LIMIT = 1000
"""The log's largest page."""


def hit_json(h: pb.SearchHit) -> dict[str, Any]:
    """One hit, every field present (empty when it does not apply), integers as numbers."""
    return {
        "index": h.index,
        "leaf_hash": h.leaf_hash.hex(),
        "statement_id": h.statement_id,
        "kind": h.kind,
        "issuer": h.issuer,
        "client_time_ms": h.client_time_ms,
        "time": utc_text(h.client_time_ms),
        "session_id": h.session_id,
        "sequence": h.sequence,
        "action_id": h.action_id,
        "phase": pb.AgentAction.Phase.Name(h.phase) if h.phase else "",
        "tool": h.tool,
        "resource": h.resource,
        "verdict": pb.Verdict.Name(h.verdict) if h.verdict else "",
        "verdict_reason": h.verdict_reason,
    }


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as wide as their widest cell, two spaces apart; the last one unpadded."""
    widths = [max(len(str(r[n])) for r in [header, *rows]) for n in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)


SEARCH_HEADER = (
    "INDEX",
    "TIME (UTC)",
    "KIND",
    "ISSUER",
    "ACTION ID",
    "PHASE",
    "TOOL",
    "RESOURCE",
    "VERDICT",
)


def search_row(h: dict[str, Any]) -> list[str]:
    verdict = h["verdict"] + (f" ({h['verdict_reason']})" if h["verdict_reason"] else "")
    return [
        str(h["index"]),
        h["time"],
        h["kind"],
        h["issuer"],
        h["action_id"] or "-",
        h["phase"] or "-",
        h["tool"] or "-",
        h["resource"] or "-",
        verdict or "-",
    ]


@click.command()
@click.option("--actor", multiple=True, help="Who issued the statement.")
@click.option("--grantor", multiple=True, help="Anyone in an action's delegation chain.")
@click.option("--approver", multiple=True, help="Who approved an action.")
@click.option(
    "--key-id", multiple=True, help="Signing key id, or an action's credential key id / jti."
)
@click.option("--resource-prefix", multiple=True, help="Target resource URI prefix.")
@click.option("--tool", multiple=True, help="Tool name (gen_ai.tool.name) of an action.")
@click.option(
    "--verdict",
    type=click.Choice(sorted(VERDICTS)),
    multiple=True,
    help="The log's scope verdict on an action.",
)
@click.option("--session", "session_id", multiple=True, help="The issuer's session id.")
@click.option("--trace-id", multiple=True, help="W3C trace id (32 hex).")
@click.option("--action-id", multiple=True, help="An action's INTENT, OUTCOME and approvals.")
@click.option("--statement-id", multiple=True, help="A statement by its id.")
@click.option(
    "--subject",
    multiple=True,
    help="Identity events about this identity, or revocations of this grant.",
)
@click.option(
    "--refused",
    is_flag=True,
    help="The log's own records of refused statements (with --actor / --key-id: by the "
    "identity or key they claimed).",
)
@click.option(
    "--ticket",
    multiple=True,
    help="Grants and approvals naming the ticket, and the actions under them.",
)
@click.option("--effect-ref", multiple=True, help="An OUTCOME's effect, e.g. commit:3f2a9c1e.")
@click.option("--result-digest", multiple=True, help="An OUTCOME's result digest (SHA-256 hex).")
@click.option(
    "--from", "time_from", type=TIME, help=f"Statements made at or after this time: {TIME_FORMS}."
)
@click.option("--to", "time_to", type=TIME, help="Statements made before this time (same forms).")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_LIMIT),
    default=100,
    show_default=True,
    help="Most results to show (one page).",
)
@click.option(
    "--after",
    type=click.IntRange(min=0),
    help="Show results after this log index (the value the previous page ends with).",
)
@connection
@handle_errors
def search(
    conn: Conn,
    limit: int,
    after: int | None,
    verdict: tuple[str, ...],
    time_from: int | None,
    time_to: int | None,
    **criteria: tuple[str, ...],
) -> None:
    """Find statements by who and what they concern (needs --token).

    Repeat an option for several values: --verdict out-of-scope --verdict no-grant finds
    either. Different options must all hold. Results come in log order, --limit at a time;
    when more exist the last line says so and gives the --after value for the next page.
    """
    request = search_request(
        **criteria,
        verdict=[VERDICTS[v] for v in verdict],
        time_from_ms=time_from or 0,
        time_to_ms=time_to or 0,
        start_index=0 if after is None else after + 1,
        page_size=limit,
    )
    with conn.client() as client:
        response = client.call(client.stub.Search, request)
    hits = [hit_json(h) for h in response.hits]
    more = response.next_index != 0
    after_next = hits[-1]["index"] if more and hits else None
    if not hits:
        human = "no matches"
    else:
        human = table(SEARCH_HEADER, [search_row(h) for h in hits])
        if more:
            human += f"\nmore results exist: repeat with --after {after_next}"
    conn.out.emit(human, {"hits": hits, "more": more, "next_after": after_next})
