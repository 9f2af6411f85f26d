"""The statement gate: the server's side of statements.ingest.

prepare() runs the history-free checks (decode, schema, secret guard, signature) in the RPC
handler's worker threads against the committed state; the integrator then admits each entry in
log order against the committed state plus the batch so far, applies it, and indexes it. All of
that lands in the batch's one WriteBatch, so state and indexes never drift from the entries.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

from affidavit.server import prepared as server_prepared
from affidavit.server import search_index
from affidavit.server.logstore import LogStore
from affidavit.server.prepared import ServerPrepared
from affidavit.statements import ingest
from affidavit.statements.build import now_ms
from affidavit.statements.errors import Rejection
from affidavit.statements.state import LogState, RecordCache

PREFETCH_ROUNDS = 3
"""Queries a run's prefetch makes at most (each can uncover records the next one reads)."""

UNCOVERED = 1024
"""Records uncovered by read-ahead trials that reset() reads again, at most (the newest)."""

_UNREAD = object()
"""What the committed-record cache holds for a key it has not read (None is an absent record)."""


def _ready(prepared: Sequence[object]) -> list[ServerPrepared]:
    """The entries of prepared that prepare() passed."""
    return [p for p in prepared if isinstance(p, ServerPrepared)]


def _named(ready: Sequence[ServerPrepared]) -> dict[bytes, None]:
    """The records ready's statements name, once each, in order."""
    return dict.fromkeys(k for p in ready for k in p.reads)


class _CommittedKV:
    """Reads of committed records, through a cache: safe from any thread while a batch is in
    flight.

    Derived records change only through the batches this gate admits (the sequencer commits
    writes() with each batch, and nothing else writes the derived namespaces), so once a
    batch is durable, committed() updates every cached record the batch wrote, and a cached
    value is the committed one. On a log shared by several frontends, others commit too: the
    sequencer sees it when the head it extends is not its own, and clear() drops the cache.

    Only state records (s/...) are told to committed(): a search record (x/...) is written
    once, by the batch that appends its statement, and read only once it is there (the hit
    of an earlier statement, server.search), so a cached one is never stale. A batch of a
    thousand statements writes some four thousand state records beside fifteen thousand
    search records, and committed() is the integrator's.

    A read from storage may race a commit of this gate's (under load one is nearly always in
    flight), and may then have seen a record before or after that commit wrote it. So what
    the last RECENT commits wrote is kept: a record read while some of them were made takes
    the value the newest of them wrote, if any wrote it, else the value read (no commit in
    between touched it). A read that raced a clear(), or more commits than are kept, is not
    cached. Commits are kept by count and by their writes. At most MAX_RECORDS are kept
    (absent ones too: most reads of new ids find nothing); the one longest since it was read
    from storage or committed is dropped first.
    """

    MAX_RECORDS = 20_000
    """A few MB: the records the last few thousand statements read."""
    RECENT = 64
    """Commits whose writes are kept for reads that raced them..."""
    RECENT_WRITES = 12_000
    """...and at most about this many of their state writes (the latest commit's are always
    kept): about three thousand statements' worth (four a statement), as many statements as
    the fifty thousand writes of every kind this bound counted before search records were
    left out. A state record is some 300 bytes; at 50,000 they held ≈20 MB more."""

    def __init__(self, storage: LogStore) -> None:
        self._storage = storage
        # Oldest first; an OrderedDict drops its oldest in O(1) (a dict's first key, once many
        # were deleted before it, is found by scanning past every deleted slot).
        self._cache: OrderedDict[bytes, bytes | None] = OrderedDict()
        self.lookup = self._cache.get
        """lookup(key, default): the cached value, or default; never reads storage."""
        self._commits = 0
        self._clears = 0
        self._recent: list[Mapping[bytes, bytes]] = []  # the last commits' writes, oldest first
        self._recent_writes = 0  # how many writes _recent holds
        self._lock = threading.Lock()

    def get(self, key: bytes, /) -> bytes | None:
        cached = self._cache.get(key, _UNREAD)
        if cached is not _UNREAD:
            return cached  # type: ignore[return-value]
        commits, clears = self._commits, self._clears
        value = self._storage.get(key)
        with self._lock:
            if self._commits != commits or self._clears != clears:
                return self._remember({key: value}, commits, clears)[key]
            cache = self._cache  # nothing raced the read (most reads): cached as read
            cache[key] = value
            if len(cache) > self.MAX_RECORDS:
                cache.popitem(last=False)
            return value

    def put(self, key: bytes, value: bytes, /) -> None:
        raise RuntimeError("committed state changes only through a batch")

    @property
    def clears(self) -> int:
        """How many times the cache was cleared."""
        return self._clears

    def cached(self, key: bytes) -> tuple[bool, bytes | None]:
        """Whether key is cached, and its cached value."""
        value = self._cache.get(key, _UNREAD)
        return (False, None) if value is _UNREAD else (True, value)  # type: ignore[return-value]

    def fetch(self, keys: Sequence[bytes]) -> None:
        """Read keys in one storage call and cache them (as get() does, one by one)."""
        commits, clears = self._commits, self._clears
        values = self._storage.get_many(keys)
        with self._lock:
            self._remember({key: values.get(key) for key in keys}, commits, clears)

    def _remember(
        self, read: dict[bytes, bytes | None], commits: int, clears: int
    ) -> dict[bytes, bytes | None]:
        """Values read since commits and clears were as given, brought up to the latest
        commit, cached when that is known to be right (see the class doc); holding the lock."""
        raced = self._commits - commits
        if self._clears != clears or raced > len(self._recent):
            return read  # not known to be current: used once, not cached
        for writes in self._recent[len(self._recent) - raced :] if raced else ():
            for key in read.keys() & writes.keys():
                read[key] = writes[key]
        cache = self._cache
        cache.update(read)
        while len(cache) > self.MAX_RECORDS:
            cache.popitem(last=False)
        return read

    def clear(self) -> None:
        """Another frontend committed: no cached record can be trusted (nor a read racing)."""
        with self._lock:
            self._clears += 1
            self._cache.clear()

    def committed(self, writes: Mapping[bytes, bytes]) -> None:
        """A batch with these state writes is durable: cached records it wrote take their
        values."""
        with self._lock:
            self._commits += 1
            recent = self._recent
            recent.append(writes)
            self._recent_writes += len(writes)
            while len(recent) > 1 and (
                len(recent) > self.RECENT or self._recent_writes > self.RECENT_WRITES
            ):
                self._recent_writes -= len(recent.pop(0))
            cache = self._cache
            for key in cache.keys() & writes.keys():  # scans the smaller of the two
                cache[key] = writes[key]
                # Just written (a session's head, an intent, a grant's uses): likely read
                # again soon, so dropped last, not by when it was first read.
                cache.move_to_end(key)


class _Wanted:
    """The cached committed records, recording every key asked for (asked), and apart those
    not cached (keys; read as absent, for now)."""

    def __init__(self, committed: _CommittedKV) -> None:
        self._committed = committed
        self.asked: dict[bytes, None] = {}
        self.keys: dict[bytes, None] = {}

    def get(self, key: bytes, /) -> bytes | None:
        self.asked[key] = None
        found, value = self._committed.cached(key)
        if not found:
            self.keys[key] = None
        return value

    def put(self, key: bytes, value: bytes, /) -> None:
        raise RuntimeError("prefetching never writes")


class _BatchKV:
    """A batch's writes in front of the committed records: all of them (writes), and apart,
    the state records of LogState (state), which alone the committed cache is told of."""

    def __init__(self, committed: _CommittedKV) -> None:
        self._committed = committed
        self._lookup = committed.lookup
        self.writes: dict[bytes, bytes] = {}
        self.state: dict[bytes, bytes] = {}
        self.index = _IndexKV(self)

    def get(self, key: bytes, /) -> bytes | None:
        # Every admission read comes here: the batch, then the committed cache, in one call.
        value = self.writes.get(key)
        if value is not None:
            return value
        cached = self._lookup(key, _UNREAD)
        if cached is _UNREAD:
            return self._committed.get(key)
        return cached  # type: ignore[return-value]

    def put(self, key: bytes, value: bytes, /) -> None:
        self.writes[key] = value
        self.state[key] = value


class _IndexKV:
    """The batch as search indexing sees it: its search records (about fifteen a statement) go
    into writes alone, and it reads as the batch."""

    def __init__(self, batch: _BatchKV) -> None:
        self._batch = batch
        self._writes = batch.writes

    def get(self, key: bytes, /) -> bytes | None:
        return self._batch.get(key)

    def put(self, key: bytes, value: bytes, /) -> None:
        self._writes[key] = value


class StatementGate:
    """Implements server.batch_admission.Gate for signed statements."""

    def __init__(
        self, storage: LogStore, clock: Callable[[], int] = now_ms, *, log_key: bytes | None = None
    ) -> None:
        self._clock = clock
        self._log_key = log_key  # the log's public key: its own refusal records verify with it
        self._last_admitted = 0  # admission times never go backwards, whatever the clock does
        self._prefetch = storage.shared  # read_ahead() tries admission (see there)
        # Records the trials uncovered (not named by any statement), newest last: reset()
        # reads them; the verifier threads add to them.
        self._uncovered: OrderedDict[bytes, None] = OrderedDict()
        # Records a read-ahead read while a reset cleared the cache: the next batch reads
        # them as it begins (or in its reset), with the head held.
        self._missed: dict[bytes, None] = {}
        self._lock = threading.Lock()  # guards _uncovered and _missed
        self._committed = _CommittedKV(storage)
        # One cache of decoded records for both views: it checks the bytes behind each record.
        self._records = RecordCache()
        self.committed = LogState(self._committed, self._records)
        self._batch = _BatchKV(self._committed)
        self._state = LogState(self._batch, self._records)

    def prepare(self, entry: bytes) -> ServerPrepared:
        """History-free checks, and what the server derives from the statement (server.prepared:
        its free search facets and named reads); raises Rejection. Thread-safe."""
        return server_prepared.prepare(entry, self.committed.key)

    def read_ahead(self, prepared: Sequence[object]) -> None:
        """Read what admitting prepared (entries prepare() passed; anything else is skipped)
        will read, in the verifier threads, so that the integrator finds it cached in its
        critical section.

        On a local store, the records the statements name (state.reads_named_by), in one
        call: a LevelDB read is quick but lets go of the interpreter lock, and the
        integrator gets it back only once the thread that took it lets go in turn (up to
        sys.getswitchinterval() later): under load, most of the integrator's time went there.

        On a remote store every read is a round trip: the named records are fetched in one
        query as above, then admission is tried against the cached records, every record it
        asks for that is not cached is fetched in one query, and again while that uncovers
        more (a grant's grantor, ...), a few queries for the whole run. The records a trial
        uncovers are remembered (UNCOVERED of them, the newest): reset() reads them again."""
        ready = _ready(prepared)
        clears = self._committed.clears
        lookup = self._committed.lookup
        named = _named(ready)
        keys = [k for k in named if lookup(k, _UNREAD) is _UNREAD]
        if keys:
            self._committed.fetch(keys)
        if not self._prefetch:
            return
        try:
            self._try_admission(ready, named)
        finally:
            if self._committed.clears != clears:
                # A reset (another frontend's batch) dropped what was read before it, and
                # what was read meanwhile is not cached: the next batch reads it all again.
                with self._lock:
                    self._missed.update(named)

    def _try_admission(self, ready: list[ServerPrepared], named: dict[bytes, None]) -> None:
        """read_ahead's trials on a remote store: fetch what admitting ready asks for and is
        not cached, a query a round (a round can uncover what the next one reads)."""
        # Admission at about the time the integrator will admit them: an action is judged
        # only with an admission time, and its verdict reads the most (intent, grants, ...).
        at = max(self._last_admitted, self._clock())
        for _ in range(PREFETCH_ROUNDS):
            wanted = _Wanted(self._committed)
            state = LogState(wanted)
            for p in ready:
                with contextlib.suppress(Rejection):  # the integrator judges, in log order
                    ingest.admit(p, state, at, self._log_key)
            self._uncover(wanted.asked.keys() - named)
            if not wanted.keys:
                return
            named.update(wanted.keys)  # (read again with them after a reset, see read_ahead)
            self._committed.fetch(list(wanted.keys))

    def _uncover(self, keys: Iterable[bytes]) -> None:
        """Remember keys as uncovered by a trial, the newest (UNCOVERED at most)."""
        with self._lock:
            uncovered = self._uncovered
            for key in keys:
                uncovered[key] = None
                uncovered.move_to_end(key)
            while len(uncovered) > UNCOVERED:
                uncovered.popitem(last=False)

    def begin(self) -> None:
        """A batch opens, the head held: what read-aheads missed is read first, in one query."""
        with self._lock:
            missed, self._missed = self._missed, {}
        if missed:
            self._committed.fetch(list(missed))
        self._batch = _BatchKV(self._committed)
        self._state = LogState(self._batch, self._records)

    def admit(
        self, entry: bytes, prepared: object, leaf_hash: bytes, index: int
    ) -> tuple[int, str]:
        if not isinstance(prepared, ServerPrepared):
            # Not prepared beforehand (its key was registered earlier in this batch, say).
            prepared = server_prepared.prepare(entry, self._state.key)
        self._last_admitted = max(self._last_admitted, self._clock())
        verdict = ingest.admit(prepared, self._state, self._last_admitted, self._log_key)
        self._state.apply(index, leaf_hash, prepared.statement, verdict)
        search_index.index_statement(
            self._batch.index, self._state, index, leaf_hash, prepared.facets, verdict
        )
        return (verdict.verdict, verdict.reason) if verdict is not None else (0, "")

    def writes(self) -> Mapping[bytes, bytes]:
        return self._batch.writes

    def durable(self) -> None:
        """The batch's writes are committed, durably (the sequencer says so)."""
        self._committed.committed(self._batch.state)

    def forget(self) -> None:
        """The log grew by other frontends' batches while no batch of this one was open (the
        sequencer's follower saw it): drop the cached committed records, so no reader is
        answered from them. What the next batch needs is read by its reset(), with the head
        held; what read-aheads missed and uncovered is kept for it."""
        self._committed.clear()

    def reset(self, prepared: Sequence[object]) -> None:
        """The log grew by another frontend's batches (the sequencer says so, holding the
        head): drop the cache, and read in one query the records admitting prepared (the
        batch to come) will read: those its statements name, those the read-aheads' trials
        uncovered lately (the same grantors and parent grants, batch after batch), and those
        read-aheads missed (see begin()).

        No trial admission here: it ran in the verifier threads already, and under the head
        lock it cost 50-135 ms a batch of 600 (two rounds) while every frontend waited.
        A record neither named nor uncovered lately is read when admission asks for it."""
        self._committed.clear()
        keys = _named(_ready(prepared))
        with self._lock:
            keys.update(self._uncovered)
            keys.update(self._missed)
            self._missed = {}
        if keys:
            self._committed.fetch(list(keys))

    def known(self, index: int) -> tuple[int, str]:
        verdict = self.committed.verdict(index)
        return (verdict.verdict, verdict.reason) if verdict is not None else (0, "")
