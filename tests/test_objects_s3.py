"""server.objects_s3 on a real S3-compatible server (SeaweedFS): create-only writes honoured by
the server (a second create finds the object there, and the bytes decide), the private and
public locations, the checkpoint's headers, and errors that say what failed without a secret.
Every object is read back through the tests' own client (boto3), not the driver's."""

from __future__ import annotations

import socket

import pytest
from affidavit.server.logstore import StorageUnavailableError
from affidavit.server.objects_s3 import CHECKPOINT, Location, ObjectStore
from affidavit.server.storage import StorageError

from tests.backends import ObjectServer

TILE = "tile/0/000"
BUNDLE = "tile/entries/000.p/3"


def _store(objects: ObjectServer, monkeypatch: pytest.MonkeyPatch) -> tuple[ObjectStore, str]:
    for name, value in objects.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    bucket = objects.new_bucket()
    return ObjectStore(Location.parse(f"s3://{bucket}/log")), bucket


def _read(objects: ObjectServer, bucket: str, key: str) -> bytes:
    return objects.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def test_create_only_keeps_the_first_bytes(
    objects: ObjectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, bucket = _store(objects, monkeypatch)
    try:
        store.put_immutable(TILE, b"a" * 32)
        store.put_immutable(TILE, b"a" * 32)  # a redone publication: the same bytes
        with pytest.raises(StorageError, match="already holds different bytes"):
            store.put_immutable(TILE, b"b" * 32)
        assert _read(objects, bucket, "log/" + TILE) == b"a" * 32
        # A fresh store (no cache) reads the object from the server.
        assert ObjectStore(store.public).get(TILE) == b"a" * 32
    finally:
        store.close()


def test_unpublished_objects_are_replaced(
    objects: ObjectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, bucket = _store(objects, monkeypatch)
    try:
        objects.client().put_object(Bucket=bucket, Key="log/" + TILE, Body=b"cut short")
        store.put_unpublished([(TILE, b"c" * 64), ("tile/1/000.p/2", b"d" * 64)])
        assert _read(objects, bucket, "log/" + TILE) == b"c" * 64
        assert _read(objects, bucket, "log/tile/1/000.p/2") == b"d" * 64
    finally:
        store.close()


def test_bundles_are_private_and_the_checkpoint_is_replaced(
    objects: ObjectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, bucket = _store(objects, monkeypatch)
    try:
        assert store.get(BUNDLE) is None and store.get(CHECKPOINT) is None
        store.put_immutable(BUNDLE, b"\x00\x01x\x00\x01y\x00\x01z")
        assert _read(objects, bucket, "log.private/" + BUNDLE) == b"\x00\x01x\x00\x01y\x00\x01z"
        assert ObjectStore(store.public).get(BUNDLE) == b"\x00\x01x\x00\x01y\x00\x01z"
        store.put_checkpoint("one\n")
        store.put_checkpoint("two\n")
        assert store.get(CHECKPOINT) == b"two\n"
        head = objects.client().head_object(Bucket=bucket, Key="log/checkpoint")
        assert head["ContentType"] == "text/plain; charset=utf-8"
        assert head["CacheControl"] == "no-cache"
    finally:
        store.close()


def test_a_missing_bucket_is_named(objects: ObjectServer, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = _store(objects, monkeypatch)
    try:
        ObjectStore(store.public).check_reachable()
        missing = ObjectStore(Location.parse("s3://no-such-bucket/log"))
        with pytest.raises(StorageError, match=r"cannot use bucket 'no-such-bucket'.*create it"):
            missing.check_reachable()
    finally:
        store.close()


def test_an_unreachable_store_is_unavailable_and_no_secret_is_shown(
    objects: ObjectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in objects.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-to-be-shown-1f3a")
    store = ObjectStore(Location.parse("s3://somewhere/log"))
    try:
        with pytest.raises(StorageUnavailableError) as raised:
            store.put_immutable(TILE, b"a" * 32)
        message = str(raised.value)
        assert f"write s3://somewhere/log/{TILE}" in message
        assert "not-to-be-shown" not in message and "Debug source" not in message
        with pytest.raises(StorageUnavailableError):
            store.get(TILE)
    finally:
        store.close()
