"""The statement gate's cache of committed records, against reads that race commits.

On PostgreSQL a read of records is a round trip during which this frontend's next batch may
commit; the cache must then hold what is committed, never what the read saw before the
commit. The storage here is a real LevelDB; a read runs commits right after reading from it
(so it saw the records as they were before them), the interleaving a slow read meets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import cast

import pytest
from affidavit.server.admission import _CommittedKV
from affidavit.server.logstore import LogStore
from affidavit.server.storage import Batch, Storage
from hypothesis import given, settings
from hypothesis import strategies as st

NOTE = "a checkpoint note (LevelDB stores it as given)"
KEYS = [b"s/k%d" % i for i in range(6)]


class RacingReads:
    """The real store's reads, each followed by the commits queued for it."""

    def __init__(self, storage: Storage, commit: Callable[[Mapping[bytes, bytes]], None]):
        self.storage = storage
        self.commit = commit
        self.during: list[dict[bytes, bytes]] = []

    def _race(self) -> None:
        while self.during:
            self.commit(self.during.pop(0))

    def get(self, key: bytes) -> bytes | None:
        value = self.storage.get(key)
        self._race()
        return value

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        values = self.storage.get_many(keys)
        self._race()
        return values


@pytest.fixture
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    storage = Storage(tmp_path_factory.mktemp("gate") / "db", create=True, min_free_bytes=0)
    storage.lock_head()
    storage.commit(Batch(0, (), (), {}, NOTE), previous=None)
    try:
        yield storage
    finally:
        storage.close()


writes = st.dictionaries(st.sampled_from(KEYS), st.binary(min_size=1, max_size=3), max_size=3)
steps: st.SearchStrategy[list[tuple[str, object, object]]] = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), writes, st.just([])),
        st.tuples(st.just("get"), st.sampled_from(KEYS), st.lists(writes, max_size=3)),
        st.tuples(st.just("fetch"), st.lists(st.sampled_from(KEYS)), st.lists(writes, max_size=3)),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps)
def test_cached_records_are_the_committed_ones(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, object, object]]
) -> None:
    storage = Storage(tmp_path_factory.mktemp("gate") / "db", create=True, min_free_bytes=0)
    try:
        storage.lock_head()
        storage.commit(Batch(0, (), (), {}, NOTE), previous=None)

        def commit(w: Mapping[bytes, bytes]) -> None:
            storage.lock_head()
            storage.commit(Batch(0, (), (), {}, NOTE, dict(w)), previous=NOTE)
            kv.committed(w)

        racing = RacingReads(storage, commit)
        kv = _CommittedKV(cast(LogStore, racing))
        for kind, what, during in steps:
            racing.during = list(cast(list[dict[bytes, bytes]], during))
            if kind == "commit":
                commit(cast(dict[bytes, bytes], what))
            elif kind == "get":
                key = cast(bytes, what)
                assert kv.get(key) == storage.get(key)  # as of the last commit, which raced it
            else:
                kv.fetch(cast(list[bytes], what))
            for key in KEYS:
                found, value = kv.cached(key)
                if found:
                    assert value == storage.get(key), key
    finally:
        storage.close()


def test_a_read_racing_more_commits_than_are_kept_is_not_cached(db: Storage) -> None:
    def commit(w: Mapping[bytes, bytes]) -> None:
        db.lock_head()
        db.commit(Batch(0, (), (), {}, NOTE, dict(w)), previous=NOTE)
        kv.committed(w)

    racing = RacingReads(db, commit)
    kv = _CommittedKV(cast(LogStore, racing))
    racing.during = [{KEYS[1]: b"%d" % i} for i in range(_CommittedKV.RECENT + 1)]
    assert kv.get(KEYS[0]) is None
    assert kv.cached(KEYS[0]) == (False, None)
    assert kv.get(KEYS[1]) == b"%d" % _CommittedKV.RECENT
