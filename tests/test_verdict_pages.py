"""A page of entries' verdicts, read as GetEntries reads them: in one get_many of a real store.

On PostgreSQL every read of the store is a round trip; GetEntries read each entry's verdict on
its own (a page of a thousand statements was a thousand round trips). read_verdicts must give
exactly what LogState.verdict gives entry by entry, from one get_many and no single read.
"""

from __future__ import annotations

from collections.abc import Sequence

from affidavit.server.storage import Batch, Storage
from affidavit.statements.state import DictKV, LogState, VerdictRecord, read_verdicts, verdict_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import test_gate_cache

NOTE = "a checkpoint note (LevelDB stores it as given)"


class CountedReads:
    """The real store's reads, counted."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.get_calls = 0
        self.get_many_calls: list[int] = []

    def get(self, key: bytes, /) -> bytes | None:
        self.get_calls += 1
        return self.storage.get(key)

    def put(self, key: bytes, value: bytes, /) -> None:
        raise AssertionError("reads only")

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        self.get_many_calls.append(len(keys))
        return self.storage.get_many(keys)


db = test_gate_cache.db  # a real LevelDB with an empty log


verdicts = st.dictionaries(
    st.integers(0, 2**40),
    st.builds(
        VerdictRecord,
        verdict=st.integers(1, 3),
        reason=st.text(max_size=12),
        grant_id=st.text(max_size=8),
        admitted_ms=st.integers(0, 2**50),
    ),
    max_size=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kept=verdicts, others=st.lists(st.integers(2**41, 2**42), max_size=8), data=st.data())
def test_a_page_of_verdicts_is_one_read_and_the_same_verdicts(
    db: Storage, kept: dict[int, VerdictRecord], others: list[int], data: st.DataObject
) -> None:
    # Verdicts are kept at indexes up to 2**40 (examples share the store: a later example may
    # overwrite an earlier one's); none is ever kept at others' indexes.
    encoded = DictKV()  # encodes a record exactly as LogState stores it
    for index, record in kept.items():
        encoded.data[verdict_key(index)] = record
    previous = db.lock_head()
    db.commit(
        Batch(0, (), (), {}, NOTE, extra={k: encoded.get(k) or b"" for k in encoded.data}),
        previous=previous,
    )
    page = data.draw(st.permutations([*kept, *others]))

    reads = CountedReads(db)
    got = read_verdicts(reads.get_many, page)

    assert reads.get_many_calls == [len(page)] and reads.get_calls == 0
    one_by_one = LogState(reads)
    assert got == [one_by_one.verdict(index) for index in page]
    assert got == [kept.get(index) for index in page]
