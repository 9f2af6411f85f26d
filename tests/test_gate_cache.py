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
from affidavit.merkle import hashing
from affidavit.proto import affidavit_pb2 as pb
from affidavit.server.admission import StatementGate, _CommittedKV
from affidavit.server.logstore import LogStore
from affidavit.server.storage import Batch, Storage
from affidavit.statements import build
from affidavit.statements.ids import uuid7
from affidavit.statements.ingest import Prepared
from affidavit.statements.redact import parameters_digest
from affidavit.statements.signing import IdentityKey
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


def test_commits_are_kept_by_their_writes_too(db: Storage) -> None:
    """The writes kept for racing reads are bounded (a server's memory), so a read racing
    commits that wrote more than RECENT_WRITES is not cached, as one racing too many commits."""

    class Kept(_CommittedKV):
        RECENT_WRITES = 4

    def commit(w: Mapping[bytes, bytes]) -> None:
        db.lock_head()
        db.commit(Batch(0, (), (), {}, NOTE, dict(w)), previous=NOTE)
        kv.committed(w)

    racing = RacingReads(db, commit)
    kv = Kept(cast(LogStore, racing))
    racing.during = [{KEYS[1]: b"1", KEYS[2]: b"1"}, {KEYS[3]: b"2", KEYS[4]: b"2", KEYS[5]: b"2"}]
    assert kv.get(KEYS[0]) is None
    assert kv.cached(KEYS[0]) == (False, None)  # 5 writes raced it: the first commit's dropped
    racing.during = [{KEYS[1]: b"3", KEYS[2]: b"3"}]
    assert kv.get(KEYS[0]) is None
    assert kv.cached(KEYS[0]) == (True, None)
    assert kv.get(KEYS[1]) == b"3"


class CountedReads(Storage):
    """The real store, counting the point reads the gate makes of it; `shared` as given (a
    log shared by several frontends makes the gate read ahead by trying admission)."""

    reads = 0
    queries = 0  # get_many calls: one query each on a remote store
    shares = False
    race: Callable[[], None] | None = None  # run after the next get_many (a racing reset)

    @property
    def shared(self) -> bool:
        return self.shares

    def get(self, key: bytes) -> bytes | None:
        self.reads += 1
        return super().get(key)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        self.queries += 1
        values = super().get_many(keys)
        race, self.race = self.race, None  # once
        if race is not None:
            race()
        return values


@pytest.mark.parametrize("mode", ["local", "shared-after-reset", "shared-raced-reset"])
def test_reading_ahead_leaves_admission_nothing_to_read(
    tmp_path_factory: pytest.TempPathFactory, mode: str
) -> None:
    """What read_ahead reads (in the verifier threads) is all that admitting and applying the
    usual statements read: the integrator never waits on a read, nor lets go of the
    interpreter lock to make one. On a shared log every batch after another frontend's starts
    with an empty cache (reset, under the head lock): it reads in one query what the batch
    names and what the read-ahead's trials uncovered (the grant's issuer here), and admission
    must then find everything, sessions chained within the batch included (each session signs
    two statements a batch here). A read-ahead that raced a reset (the follower's, or one
    under the head lock) is not cached: the next batch reads what it missed in one query as
    it begins. And what the cache then holds is what is committed."""
    storage = CountedReads(tmp_path_factory.mktemp("gate") / "db", create=True, min_free_bytes=0)
    storage.shares = mode != "local"
    try:
        now = build.now_ms()
        gate = StatementGate(storage, clock=lambda: now)
        size, previous = 0, None

        def integrate(leaves: list[bytes], prepared: Sequence[Prepared]) -> list[tuple[int, str]]:
            nonlocal size, previous
            gate.begin()
            hashes = hashing.leaf_hashes(leaves)
            verdicts = [
                gate.admit(leaf, p, h, size + i)
                for i, (leaf, p, h) in enumerate(zip(leaves, prepared, hashes, strict=True))
            ]
            note = f"checkpoint {size + len(leaves)}"
            storage.commit(Batch(size, leaves, hashes, {}, note, gate.writes()), previous)
            gate.durable()
            size, previous = size + len(leaves), note
            return verdicts

        admin, human, agent = (IdentityKey.generate(n) for n in ("admin", "human", "agent"))
        boss, setup = build.SessionSigner(admin), []
        for key, kind in ((admin, pb.ADMIN), (human, pb.HUMAN), (agent, pb.AGENT)):
            setup.append(boss.sign(build.register(key.identity_id, kind, key.public_key)))
            boss.advance(setup[-1])
        grant_id = uuid7()
        granted = pb.Grant(grantee="agent", tools=["git.*"], resources=["repo:*"],
                           access=[pb.READ])  # fmt: skip
        setup.append(build.SessionSigner(human).sign(granted, statement_id=grant_id))
        integrate(setup, [gate.prepare(leaf) for leaf in setup])

        sessions = [build.SessionSigner(agent) for _ in range(3)]
        earlier: list[bytes] = []  # the last round's INTENTs, two a session
        for round_ in range(3):
            leaves = []
            for k, s in enumerate(sessions):
                for j in range(2):
                    action = pb.AgentAction(
                        phase=pb.AgentAction.INTENT, action_id=uuid7(),
                        actor=pb.Actor(agent_id="agent"), grant_ids=[grant_id],
                        authorization=pb.Authorization(decision=pb.ALLOW),
                        operation=pb.Operation(tool_name="git.pull", resource="repo:x",
                                               access=pb.READ, parameters_json="{}",
                                               parameters_digest=parameters_digest({})),
                    )  # fmt: skip
                    if round_ == 2:  # the OUTCOMEs of the last round's INTENTs
                        intent = earlier[2 * k + j]
                        action.CopyFrom(build.statement_of(intent).action)
                        action.phase = pb.AgentAction.OUTCOME
                        action.intent_leaf_hash = hashing.leaf_hash(intent)
                        action.outcome.status = pb.OK
                    leaves.append(s.sign(action))
                    s.advance(leaves[-1])
            earlier = leaves
            prepared = [gate.prepare(leaf) for leaf in leaves]
            raced = mode == "shared-raced-reset" and round_ > 0  # (the grantor uncovered)
            if raced:  # a reset (the follower's) during the read-ahead's first query
                storage.race = lambda: gate.reset(())
            gate.read_ahead(prepared)  # in the verifier threads
            if mode == "shared-after-reset":  # then another frontend's batch: the head moved
                before = storage.reads, storage.queries
                gate.reset(prepared)
                assert (storage.reads, storage.queries) == (before[0], before[1] + 1)
            before = storage.reads, storage.queries
            verdicts = integrate(leaves, prepared)
            assert verdicts == [(pb.IN_SCOPE, "")] * len(leaves)
            # begin() read what the read-ahead missed, in one query
            assert (storage.reads, storage.queries) == (before[0], before[1] + raced), round_
            # Every record the cache holds is the committed one: the batch's state records
            # were told to it; its search records (written once, read once there) were not.
            cached = dict(gate._committed._cache)
            assert cached and all(storage.get(k) == v for k, v in cached.items())
    finally:
        storage.close()
