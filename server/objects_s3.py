"""A log's objects in S3-compatible storage, laid out as the C2SP tlog-tiles read API.

    s3://BUCKET/PREFIX/checkpoint              the latest published checkpoint note (replaced)
    s3://BUCKET/PREFIX/tile/<L>/<N>[.p/<W>]    tiles: full ones and each published partial width
    PRIVATE/tile/entries/<N>[.p/<W>]           entry bundles (tlog-tiles: uint16 length-prefixed)

PREFIX/ is public: give it public read (or put a CDN in front of it) and it is the log's tiles
API; a client needs nothing else to check checkpoints and proofs. Entry bundles hold the
entries themselves, which only auditors may read, so they live in a private location: by
default the sibling prefix PREFIX.private/ in the same bucket (never under PREFIX/, so a public
PREFIX/ cannot expose them), or a separate bucket given by --private-objects.

Every tile and bundle object is immutable once written: a full tile never changes, and a
partial tile's path names its width. They are written create-only (If-None-Match: *); finding
one already there (a redone publication) is fine only if its bytes are the same, otherwise the
bucket belongs to another log or was altered, and that is a StorageError. Objects are cached in
memory by path (bounded), which is safe for the same reason.

Endpoint and credentials come from the standard S3 settings, read by the client library
(obstore, over Rust's object_store: requests run outside the interpreter lock):
AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for a non-AWS store (http:// is allowed only when the
endpoint says so), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or a web
identity token (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN), a container's or an EC2 instance's
role; AWS_REGION (or AWS_DEFAULT_REGION). Shared config files (~/.aws, AWS_PROFILE) are not
read: export the settings instead. With a custom endpoint, path-style addressing is used;
against AWS itself, virtual-hosted style.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import obstore
from affidavit.server.logstore import StorageUnavailableError
from affidavit.server.storage import StorageError
from obstore.exceptions import AlreadyExistsError, BaseError
from obstore.store import S3Store

log = logging.getLogger("affidavit.server")

CHECKPOINT = "checkpoint"
CACHE_BYTES = 32 << 20
"""Objects kept in memory at most (about 4,000 full tiles)."""
WRITERS = 8
"""Objects written in parallel while publishing a batch."""


def request_kind(verb: str, path: str) -> str:
    """How ObjectStore.requests counts a request: verb (put, get, exists: a create-only put
    that found the object there) and what path holds: checkpoint; bundle or tile<L>, each
    full or partial."""
    if path == CHECKPOINT:
        return f"{verb}_checkpoint"
    _, level, rest = path.split("/", 2)
    what = "bundle" if level == "entries" else f"tile{level}"
    return f"{verb}_{what}_{'partial' if '.p/' in rest else 'full'}"


def bundle_entries(data: bytes) -> list[bytes]:
    """The entries of a tlog-tiles entry bundle (each uint16-length-prefixed)."""
    out, at = [], 0
    while at < len(data):
        n = int.from_bytes(data[at : at + 2], "big")
        if at + 2 + n > len(data):
            raise StorageError("an entry bundle is truncated")
        out.append(data[at + 2 : at + 2 + n])
        at += 2 + n
    return out


def make_bundle(entries: Sequence[bytes]) -> bytes:
    """A tlog-tiles entry bundle of entries (each at most 65,535 bytes)."""
    return b"".join(len(e).to_bytes(2, "big") + e for e in entries)


@dataclass(frozen=True)
class Location:
    """A bucket and a key prefix (no leading or trailing slash; may be empty)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise StorageError(f"{url!r} is not an object store URL; give s3://BUCKET[/PREFIX]")
        return cls(parts.netloc, parts.path.strip("/"))

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def private(self) -> Location:
        """The default private location: the sibling prefix PREFIX.private."""
        return Location(self.bucket, f"{self.prefix}.private" if self.prefix else "private")


def bucket_client(name: str) -> S3Store:
    """A client for one bucket, from the standard S3 settings in the environment (the driver's
    own, and the storage benchmark's PUT ceiling, so the two measure one configuration)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return S3Store(
        name,
        virtual_hosted_style_request=not endpoint,
        client_options={
            "allow_http": bool(endpoint and endpoint.startswith("http://")),
            "connect_timeout": timedelta(seconds=5),
            "timeout": timedelta(seconds=30),
        },
        # The library's default (10 retries over 3 minutes) would hold a batch for minutes
        # before the caller hears UNAVAILABLE.
        retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=30)},
    )


class ObjectStore:
    """The public and private locations of one log, through one client per bucket
    (thread-safe)."""

    def __init__(self, public: Location, private: Location | None = None) -> None:
        self.public = public
        self.private = private or public.private()
        if self.private.bucket == public.bucket and (
            not public.prefix or self.private.prefix.startswith(public.prefix + "/")
        ):
            raise StorageError(
                f"the private location {self.private.url()} is inside the public one "
                f"{public.url()}; entry bundles would be public"
            )
        try:
            self._buckets = {b: bucket_client(b) for b in {public.bucket, self.private.bucket}}
        except BaseError as e:
            raise StorageError(f"cannot use the S3 settings: {_reason(e)}") from None
        self._cache: OrderedDict[tuple[bool, str], bytes] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()
        self._writers = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="s3-put")
        self._requests: dict[str, int] = {}

    def requests(self) -> dict[str, int]:
        """The requests made so far, by request_kind."""
        with self._lock:
            return dict(self._requests)

    def _count(self, verb: str, path: str) -> None:
        kind = request_kind(verb, path)
        with self._lock:
            self._requests[kind] = self._requests.get(kind, 0) + 1

    def close(self) -> None:
        self._writers.shutdown(wait=True)

    def _where(self, path: str) -> tuple[str, str, bool]:
        private = path.startswith("tile/entries/")
        loc = self.private if private else self.public
        return loc.bucket, loc.key(path), private

    def _read(self, bucket: str, key: str) -> bytes | None:
        try:
            return bytes(obstore.get(self._buckets[bucket], key).bytes())
        except FileNotFoundError:
            return None
        except BaseError as e:
            raise _unavailable(e, f"read s3://{bucket}/{key}") from None

    def get(self, path: str) -> bytes | None:
        """An object's bytes (tile and bundle objects through the cache), or None if absent."""
        bucket, key, private = self._where(path)
        immutable = path != CHECKPOINT
        if immutable:
            with self._lock:
                data = self._cache.get((private, key))
                if data is not None:
                    self._cache.move_to_end((private, key))
                    return data
        self._count("get", path)
        body = self._read(bucket, key)
        if immutable and body is not None:
            self._remember(private, key, body)
        return body

    def _remember(self, private: bool, key: str, data: bytes) -> None:
        with self._lock:
            if (private, key) not in self._cache:
                self._cache[(private, key)] = data
                self._cached += len(data)
            while self._cached > CACHE_BYTES:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old)

    def put_immutable(self, path: str, data: bytes, *, unpublished: bool = False) -> None:
        """Create path with data; if it exists, it must hold exactly data (StorageError).

        unpublished: no published checkpoint covers path (it holds hashes or entries beyond
        every one), so different bytes there are what a writer that died mid-publication left
        (an upload cut short, or a batch that was never committed): they are replaced."""
        bucket, key, private = self._where(path)
        store = self._buckets[bucket]
        self._count("put", path)
        try:
            obstore.put(store, key, data, mode="create")
        except AlreadyExistsError:
            self._count("exists", path)
            if self._read(bucket, key) != data:
                if not unpublished:
                    raise StorageError(
                        f"s3://{bucket}/{key} already holds different bytes; the bucket belongs "
                        "to another log or was altered, refusing to overwrite it"
                    ) from None
                log.warning("replacing s3://%s/%s, left by an interrupted publication", bucket, key)
                try:
                    obstore.put(store, key, data)
                except BaseError as e:
                    raise _unavailable(e, f"write s3://{bucket}/{key}") from None
        except BaseError as e:
            raise _unavailable(e, f"write s3://{bucket}/{key}") from None
        self._remember(private, key, data)

    def put_unpublished(self, objects: Sequence[tuple[str, bytes]]) -> None:
        """put_immutable(unpublished=True) each (path, data), in parallel; returns once all are
        written. For a batch being published: every object it writes holds something beyond
        the published tree."""
        writes = [
            self._writers.submit(self.put_immutable, p, d, unpublished=True) for p, d in objects
        ]
        for done in writes:
            done.result()

    def put_checkpoint(self, note: str) -> None:
        """Replace the published checkpoint (callers serialise this: it must never go back)."""
        bucket, key, _ = self._where(CHECKPOINT)
        self._count("put", CHECKPOINT)
        try:
            obstore.put(
                self._buckets[bucket],
                key,
                note.encode(),
                attributes={
                    "Content-Type": "text/plain; charset=utf-8",
                    "Cache-Control": "no-cache",
                },
            )
        except BaseError as e:
            raise _unavailable(e, f"write s3://{bucket}/{key}") from None

    def check_reachable(self) -> None:
        """Fail early, with the URL, when a location's bucket cannot be reached."""
        for loc in (self.public, self.private):
            try:
                obstore.list_with_delimiter(self._buckets[loc.bucket], loc.key(CHECKPOINT))
            except BaseError as e:
                raise StorageError(
                    f"cannot use bucket {loc.bucket!r}: {_reason(e)} (create it first, and "
                    "check the S3 credentials and endpoint settings)"
                ) from None


def _reason(e: Exception) -> str:
    """The client's message without its debug dump (it holds no credentials: requests are
    signed in headers, and only the URL and the server's answer are quoted)."""
    text = str(e).split("Debug source:", 1)[0]
    return " ".join(text.split())[:600]


def _unavailable(e: Exception, what: str) -> StorageUnavailableError:
    return StorageUnavailableError(f"cannot {what}: {_reason(e)}")
