"""server.postgres_arrays against a real PostgreSQL: what array_recv makes of a ByteaArray is
the list it was built from, element for element, as the step-2 insert and get_many use it."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from affidavit.server import postgres_arrays
from affidavit.server.postgres_arrays import ByteaArray
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.backends import Postgres


@pytest.fixture(scope="module")
def conn(postgres: Postgres) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(postgres.new_database(), autocommit=True) as c:
        postgres_arrays.register(c.adapters)
        yield c


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=300), max_size=40))
def test_an_array_arrives_as_the_list_it_was_built_from(conn, items):
    row = conn.execute("SELECT %s::bytea[]", (ByteaArray(items),)).fetchone()
    assert row is not None and [bytes(x) for x in row[0]] == items


def test_two_arrays_unnest_into_pairs_in_order(conn):
    keys = [b"s/a", b"x/\x00\xff", b""]
    values = [b"one", b"", bytes(range(256))]
    rows = conn.execute(
        "SELECT k, v FROM unnest(%s::bytea[], %s::bytea[]) AS u(k, v)",
        (ByteaArray(keys), ByteaArray(values)),
    ).fetchall()
    assert [(bytes(k), bytes(v)) for k, v in rows] == list(zip(keys, values, strict=True))


def test_any_matches_the_elements_and_nothing_else(conn):
    conn.execute("CREATE TEMP TABLE t (k BYTEA PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES ('\\x01'), ('\\x0203'), ('\\x')")
    rows = conn.execute(
        "SELECT k FROM t WHERE k = ANY(%s::bytea[]) ORDER BY k",
        (ByteaArray([b"\x02\x03", b"", b"\x09"]),),
    ).fetchall()
    assert [bytes(r[0]) for r in rows] == [b"", b"\x02\x03"]


def test_without_its_dumper_a_connection_refuses_it(postgres):
    with (
        psycopg.connect(postgres.url(), autocommit=True) as c,
        pytest.raises(psycopg.ProgrammingError),
    ):
        c.execute("SELECT %s::bytea[]", (ByteaArray([b"x"]),))
