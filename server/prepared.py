"""A statement prepared for the server: statements.ingest.Prepared, with what the server would
otherwise derive from it in its own interpreter, made where it was prepared (an ingest worker
process, or a verifier thread), since neither needs history: its free search facets
(search_index.free_facets), which the integrator completes, and the state keys admitting it
reads that it names (statements.state.reads_named_by), which the read-ahead fetches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from affidavit.server.search_index import FreeFacets, free_facets
from affidavit.statements import ingest
from affidavit.statements.ingest import Prepared
from affidavit.statements.state import KeyRecord, reads_named_by


@dataclass(frozen=True)
class ServerPrepared(Prepared):
    facets: FreeFacets
    """Its free search facets."""
    reads: list[bytes]
    """The state keys admitting it reads that it names."""


Derived = tuple[tuple[object, ...], list[bytes]]
"""What the server derives from a prepared statement, as plain values (to cross an ingest
worker's pipe: a NamedTuple is pickled with a lookup of its class each): its free facets'
fields, and its named reads."""


def derive(p: Prepared) -> Derived:
    return tuple(free_facets(p)), reads_named_by(p.statement, p.signed.key_id)


def prepare(entry: bytes, known_key: Callable[[str], KeyRecord | None]) -> ServerPrepared:
    """statements.ingest.prepare(), and what the server derives. Raises Rejection."""
    p = ingest.prepare(entry, known_key)
    return ServerPrepared(
        p.signed,
        p.statement,
        p.verified_with,
        free_facets(p),
        reads_named_by(p.statement, p.signed.key_id),
    )
