"""A store of bytes in memory, for tests and benchmarks of the statement rules.

It is what a LogState over the server's stores (LevelDB, PostgreSQL) works with: records are
encoded on put and decoded (and cached beside their bytes) on read. A DictKV, the auditor's
store, keeps records as objects instead, so a LogState over one has nothing to decode or cache.
"""


class BytesKV:
    """A store of bytes only, as the server's are, without a database."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes, /) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes, /) -> None:
        self.data[key] = value
