"""The bundle file: its JSON layout, written in one spelling and read strictly by content
(any indentation, key order or line ending; every value in one spelling). The format is
described in the package docstring."""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from dataclasses import dataclass
from typing import Any

from affidavit.client.errors import VerificationError
from affidavit.merkle import tlogproof
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import build
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from affidavit import merkle

FORMAT = "affidavit-bundle/1"
MAX_ENTRIES = 10_000
"""Most entries a bundle may hold (a hostile file cannot make verify work without bound)."""

_KEYS = ("format", "checkpoint", "entries")
_ENTRY_KEYS = ("index", "leaf", "proof", "tlog_proof")
_ACTION_ENTRY_KEYS = (*_ENTRY_KEYS, "admitted_ms")
"""An agent action's entry also carries the log's admission time, which its windows are
judged at (the log's word, like the verdict it recorded: not in the leaf)."""
_ENTRY_VIEW = "decoded"


@dataclass(frozen=True)
class BundleEntry:
    """One leaf, as the log holds it, with its index and inclusion proof."""

    index: int
    leaf: bytes
    proof: tuple[bytes, ...]
    admitted_ms: int = 0

    def tlog_proof(self, checkpoint: str) -> str:
        """This entry's proof as c2sp.org/tlog-proof@v1 text, to checkpoint."""
        return tlogproof.format_proof(self.index, self.proof, checkpoint)


@dataclass(frozen=True)
class Bundle:
    """A checkpoint note and entries proven included in it (see the module docstring)."""

    checkpoint: str
    entries: tuple[BundleEntry, ...]

    def to_json(self) -> str:
        """The bundle file's text: the only form verify accepts."""
        entries = []
        for e in self.entries:
            item: dict[str, Any] = {
                "index": e.index,
                "leaf": _b64(e.leaf),
                "proof": [_b64(h) for h in e.proof],
                "tlog_proof": e.tlog_proof(self.checkpoint),
            }
            if e.admitted_ms:
                item["admitted_ms"] = e.admitted_ms
            decoded = _decoded(e.leaf)
            if decoded is not None:
                item[_ENTRY_VIEW] = decoded
            entries.append(item)
        data = {"format": FORMAT, "checkpoint": self.checkpoint, "entries": entries}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Bundle:
        """Parse a bundle file (its text, or its bytes as UTF-8) strictly (its content: any
        layout); VerificationError says what is wrong with it."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                raise VerificationError(f"the bundle is not UTF-8 text (byte {e.start})") from None
        try:
            data = json.loads(text, object_pairs_hook=_object)
        except ValueError as e:
            raise VerificationError(f"the bundle is not valid JSON: {e}") from None
        if not isinstance(data, dict) or set(data) != set(_KEYS):
            raise VerificationError(f"the bundle must be a JSON object with keys {list(_KEYS)}")
        if data["format"] != FORMAT:
            raise VerificationError(
                f"the bundle's format is {data['format']!r}; this verifier reads {FORMAT!r}"
            )
        if not isinstance(data["checkpoint"], str):
            raise VerificationError("the bundle's checkpoint must be a signed note (a string)")
        raw = data["entries"]
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_ENTRIES:
            raise VerificationError(f"the bundle's entries must be a list of 1-{MAX_ENTRIES}")
        entries = tuple(_entry(item, n) for n, item in enumerate(raw))
        for before, after in itertools.pairwise(entries):
            if after.index <= before.index:
                raise VerificationError(
                    f"entry {after.index} follows entry {before.index}: entries must ascend "
                    "strictly by index"
                )
        bundle = cls(data["checkpoint"], entries)
        for item, entry in zip(raw, entries, strict=True):
            if item["tlog_proof"] != entry.tlog_proof(bundle.checkpoint):
                raise VerificationError(
                    f"entry {entry.index}'s tlog_proof is not its index and proof to the "
                    "bundle's checkpoint"
                )
        return bundle


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise VerificationError(f"{what} must be a base64 string")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{what} is not valid base64") from None
    if _b64(data) != text:
        raise VerificationError(f"{what} is not canonical base64")
    return data


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise VerificationError(f"the bundle repeats the key {key!r}")
        out[key] = value
    return out


def _decoded(leaf: bytes) -> dict[str, Any] | None:
    """A leaf decoded for reading: its key id and statement (proto3 JSON); None when it does
    not decode (verify then says why)."""
    try:
        signed = pb.SignedStatement.FromString(leaf)
        statement = build.statement_of(leaf)
    except DecodeError:
        return None
    view = json_format.MessageToDict(statement, preserving_proto_field_name=True)
    return {"key_id": signed.key_id, "statement": view}


def _entry(item: object, n: int) -> BundleEntry:
    if not isinstance(item, dict) or set(item) - {_ENTRY_VIEW} not in (
        set(_ENTRY_KEYS),
        set(_ACTION_ENTRY_KEYS),
    ):
        raise VerificationError(
            f"entries[{n}] must be an object with keys {list(_ENTRY_KEYS)} (and admitted_ms, "
            f"for an agent action; optionally {_ENTRY_VIEW!r})"
        )
    index = item["index"]
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise VerificationError(f"entries[{n}].index must be a non-negative integer")
    leaf = _unb64(item["leaf"], f"entry {index}'s leaf")
    if not isinstance(item["proof"], list) or len(item["proof"]) > 64:
        raise VerificationError(f"entry {index}'s proof must be a list of at most 64 hashes")
    proof = tuple(_unb64(h, f"a hash in entry {index}'s proof") for h in item["proof"])
    if any(len(h) != merkle.HASH_SIZE for h in proof):
        raise VerificationError(f"entry {index}'s proof holds a hash that is not 32 bytes")
    if not isinstance(item["tlog_proof"], str):
        raise VerificationError(f"entry {index}'s tlog_proof must be a string")
    admitted_ms = item.get("admitted_ms", 0)
    if isinstance(admitted_ms, bool) or not isinstance(admitted_ms, int) or admitted_ms < 0:
        raise VerificationError(f"entry {index}'s admitted_ms must be Unix milliseconds")
    if _ENTRY_VIEW in item and item[_ENTRY_VIEW] != _decoded(leaf):
        raise VerificationError(
            f"entry {index}'s {_ENTRY_VIEW!r} is not what its leaf decodes to: the readable "
            "copy was edited (the leaf's bytes are the evidence)"
        )
    return BundleEntry(index, leaf, proof, admitted_ms)
