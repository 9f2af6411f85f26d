"""The client: talk to a log, and verify everything it says.

Every checkpoint must carry the log's signature (and, with a witness policy, a quorum of
cosignatures); every receipt's inclusion proof must verify; every new checkpoint must be
consistent with the last one this client trusted, which is kept on disk so a restarted client
still catches a log that was rolled back or forked. Any failure is a VerificationError.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
from affidavit.client.errors import (
    NotFoundError,
    NotSentError,
    RefusedError,
    UnavailableError,
    VerificationError,
)
from affidavit.client.trust import TrustStore
from affidavit.client.verify import (
    TrustPolicy,
    Verified,
    check_consistency,
    check_inclusion,
    open_checkpoint,
)
from affidavit.proto import affidavit_pb2 as pb
from affidavit.proto import affidavit_pb2_grpc as pb_grpc
from affidavit.statements import ingest
from affidavit.statements.errors import Rejection

from affidavit import merkle

if TYPE_CHECKING:  # aiohttp is imported only by whoever reads tiles
    from affidavit.client.tiles import TileLog

T = TypeVar("T")

RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
NOT_FOUND = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE}


def refusal(code: grpc.StatusCode, details: str | None) -> RefusedError:
    """The error for a status the log answered: NotFoundError when it has no such thing."""
    if code in NOT_FOUND:
        return NotFoundError(details or "", code.name)
    return RefusedError(code.name, details or "")


@dataclass(frozen=True)
class Tls:
    """TLS to the log: the CA that signed its certificate; a client certificate for mTLS."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes() if self.ca else None,
            private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None,
        )


@dataclass(frozen=True)
class Receipt:
    """A verified append: the entry is at index in the tree of checkpoint."""

    index: int
    leaf_hash: bytes
    checkpoint: Verified
    proof: tuple[bytes, ...]
    duplicate: bool
    verdict: str
    verdict_reason: str


@dataclass(frozen=True)
class _GivenProof:
    """A consistency proof the log sent beside a receipt: from tree size first to the receipt's
    checkpoint. Used only while first is still the trusted size; a log that sent none (older
    servers) is asked for it. For first < size a proof is never empty (RFC 9162 2.1.4)."""

    first: int
    hashes: list[bytes]


class Client:
    """A connection to one log, with the trust policy its answers are checked against.

    With tiles (a TileLog), checkpoints and proofs come from the log's tlog-tiles HTTP API
    instead of gRPC: proofs are built from fetched tiles and checked exactly as gRPC's are.
    """

    def __init__(
        self,
        address: str,
        policy: TrustPolicy,
        *,
        trust_dir: Path | None = None,
        token: str | None = None,
        tls: Tls | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        tiles: TileLog | None = None,
    ) -> None:
        self.address = address
        self.tiles = tiles
        self.policy = policy
        options = [("grpc.max_receive_message_length", 64 << 20)]
        if tls is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            self._channel = grpc.secure_channel(address, tls.credentials(), options=options)
        self.stub = pb_grpc.LogStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout = timeout
        self._retries = retries
        self._store = TrustStore(trust_dir) if trust_dir is not None else None
        self._origin = policy.log_verifier().name
        self.trusted: Verified | None = None
        if self._store is not None:
            saved = self._store.load(self._origin)
            if saved is not None:
                # What we trusted before still has to be the log's own signed checkpoint.
                self.trusted = open_checkpoint(saved, policy, require_quorum=False)

    def close(self) -> None:
        self._channel.close()
        if self.tiles is not None:
            self.tiles.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Calls.

    def call(self, method: Callable[..., T], request: object, *, retry: bool = True) -> T:
        """One RPC with the client's credentials and deadline, retried with back-off while the
        log is unavailable or busy (appends are idempotent: a retry dedups to the same index)."""
        delay = 0.1
        for attempt in range(self._retries + 1 if retry else 1):
            try:
                return method(request, timeout=self._timeout, metadata=self._metadata)
            except grpc.RpcError as e:
                code = e.code()
                if code in RETRYABLE and attempt < self._retries and retry:
                    time.sleep(delay)
                    delay *= 2
                    continue
                if code in RETRYABLE:
                    raise UnavailableError(f"{self.address}: {code.name}: {e.details()}") from None
                raise refusal(code, e.details()) from None
        raise AssertionError("unreachable")

    # Trust.

    def _prove_consistent(
        self, old: Verified, new: Verified, given: _GivenProof | None = None
    ) -> None:
        """Check one of two checkpoints extends the other, with the proof the log gave beside
        a receipt when it is from the old size to the new one, else asking the log for it."""
        small, large = (old, new) if old.checkpoint.size <= new.checkpoint.size else (new, old)
        proof: list[bytes] = []
        if (
            given is not None
            and given.hashes
            and given.first == small.checkpoint.size
            and small is old
            and 0 < small.checkpoint.size < large.checkpoint.size
        ):
            proof = given.hashes
        elif 0 < small.checkpoint.size < large.checkpoint.size and self.tiles is not None:
            proof = self.tiles.consistency_proof(small.checkpoint.size, large.checkpoint.size)
        elif 0 < small.checkpoint.size < large.checkpoint.size:
            try:
                response = self.call(
                    self.stub.GetConsistencyProof,
                    pb.GetConsistencyProofRequest(
                        first=small.checkpoint.size, second=large.checkpoint.size
                    ),
                )
            except RefusedError as e:
                raise VerificationError(
                    f"the log cannot prove size {large.checkpoint.size} extends size "
                    f"{small.checkpoint.size} ({e.message}): it was rolled back or forked"
                ) from None
            proof = list(response.hashes)
        check_consistency(small.checkpoint, large.checkpoint, proof)

    def observe(self, checkpoint: Verified, given: _GivenProof | None = None) -> None:
        """Check a checkpoint against the trusted one; trust it if it is newer and the policy's
        quorum is met."""
        if self.trusted is not None:
            self._prove_consistent(self.trusted, checkpoint, given)
            if checkpoint.checkpoint.size <= self.trusted.checkpoint.size:
                return
        if len(checkpoint.witnesses) < self.policy.quorum:
            return
        self.trusted = checkpoint
        if self._store is not None:
            self._store.save(self._origin, checkpoint.note)

    def checkpoint(self) -> Verified:
        """The newest checkpoint the policy accepts (with a quorum: the newest cosigned one),
        checked against and then trusted in place of the last trusted one."""
        if self.tiles is not None:
            # The log publishes one note: with a quorum policy it must carry the quorum.
            published = open_checkpoint(
                self.tiles.checkpoint(), self.policy, require_quorum=self.policy.quorum > 0
            )
            self.observe(published)
            return published
        response = self.call(self.stub.GetCheckpoint, pb.GetCheckpointRequest())
        latest = open_checkpoint(response.note, self.policy, require_quorum=False)
        self.observe(latest)
        if self.policy.quorum == 0:
            return latest
        if not response.cosigned_note:
            raise VerificationError(
                f"the log has no cosigned checkpoint; the policy needs {self.policy.quorum}"
            )
        cosigned = open_checkpoint(response.cosigned_note, self.policy)
        self.observe(cosigned)
        return cosigned

    # Appends and reads.

    def append(self, leaf: bytes) -> Receipt:
        """Append a signed statement (exact bytes) and verify the receipt.

        The statement is first held to the same history-free rules the log applies (schema,
        sizes, the secret guard), so a leak is stopped here, before it leaves the process.
        """
        try:
            ingest.prepare(leaf, lambda _key_id: None)
        except Rejection as e:
            raise NotSentError(e.code, e.message) from None
        return self._append(leaf)

    def append_opaque(self, entry: bytes) -> Receipt:
        """Append raw bytes to a log of opaque entries, verifying the receipt."""
        return self._append(entry)

    def _append(self, entry: bytes) -> Receipt:
        """One Append RPC; the receipt brings the consistency proof from the trusted size, so
        checking the new checkpoint needs no second round trip."""
        first = self.trusted.checkpoint.size if self.trusted is not None else 0
        r = self.call(self.stub.Append, pb.AppendRequest(entry=entry, consistency_from=first))
        return self._verify_receipt(entry, r, _GivenProof(first, list(r.consistency_proof)))

    def _verify_receipt(
        self, entry: bytes, r: pb.AppendResponse, given: _GivenProof | None = None
    ) -> Receipt:
        leaf_hash = merkle.leaf_hash(entry)
        if r.leaf_hash != leaf_hash:
            raise VerificationError(
                f"the log reports leaf hash {r.leaf_hash.hex()} "
                f"for an entry hashing to {leaf_hash.hex()}"
            )
        cp = open_checkpoint(r.checkpoint, self.policy, require_quorum=False)
        check_inclusion(leaf_hash, r.index, r.inclusion_proof, cp.checkpoint)
        self.observe(cp, given)
        return Receipt(
            r.index,
            leaf_hash,
            cp,
            tuple(r.inclusion_proof),
            r.duplicate,
            pb.Verdict.Name(r.verdict),
            r.verdict_reason,
        )

    def prove(
        self, *, index: int | None = None, leaf_hash: bytes | None = None
    ) -> tuple[pb.InclusionProof, Verified]:
        """A verified inclusion proof of an entry in the newest checkpoint the policy accepts."""
        cp = self.checkpoint()
        if self.tiles is not None:
            if index is None:
                raise ValueError("reading tiles, give the entry's index (tiles have no hash index)")
            if index >= cp.checkpoint.size:
                raise NotFoundError(
                    f"entry {index} is not in the tree of size {cp.checkpoint.size}", "OUT_OF_RANGE"
                )
            leaf, hashes = self.tiles.inclusion_proof(index, cp.checkpoint.size)
            check_inclusion(leaf, index, hashes, cp.checkpoint)
            return pb.InclusionProof(
                index=index, tree_size=cp.checkpoint.size, leaf_hash=leaf, hashes=hashes
            ), cp
        request = pb.GetInclusionProofRequest(tree_size=cp.checkpoint.size)
        if index is not None:
            request.index = index
        elif leaf_hash is not None:
            request.leaf_hash = leaf_hash
        else:
            raise ValueError("give index or leaf_hash")
        proof = self.call(self.stub.GetInclusionProof, request)
        if proof.tree_size != cp.checkpoint.size:
            raise VerificationError(
                f"asked for a proof to size {cp.checkpoint.size}, got one to {proof.tree_size}"
            )
        # A valid proof of some other entry proves nothing about the one asked for.
        if index is not None and proof.index != index:
            raise VerificationError(f"asked for a proof of entry {index}, got one of {proof.index}")
        if leaf_hash is not None and proof.leaf_hash != leaf_hash:
            raise VerificationError(
                f"asked for a proof of leaf {leaf_hash.hex()}, got one of {proof.leaf_hash.hex()}"
            )
        check_inclusion(proof.leaf_hash, proof.index, proof.hashes, cp.checkpoint)
        return proof, cp

    def entries(self, start: int = 0, end: int = 0) -> Iterator[pb.Entry]:
        """Entries [start, end) (end 0: to the latest checkpoint), page after page; each
        entry's leaf hash is recomputed from its bytes."""
        if end == 0:
            end = self.call(self.stub.GetCheckpoint, pb.GetCheckpointRequest()).size
        while start < end:
            page = self.stub.GetEntries(
                pb.GetEntriesRequest(start=start, end=end),
                timeout=self._timeout,
                metadata=self._metadata,
            )
            first = start
            try:
                for entry in page:
                    if entry.index != start or merkle.leaf_hash(entry.data) != entry.leaf_hash:
                        raise VerificationError(f"entry {start} from the log is not what it claims")
                    start += 1
                    yield entry
            except grpc.RpcError as e:
                if e.code() in RETRYABLE:
                    raise UnavailableError(
                        f"{self.address}: {e.code().name}: {e.details()}"
                    ) from None
                raise refusal(e.code(), e.details()) from None
            if start == first:  # an empty page would have us ask again forever
                raise VerificationError(f"the log sent no entries for [{start}, {end})")

    def search(self, **criteria: object) -> Iterator[pb.SearchHit]:
        """Every hit of a search (see SearchRequest for the criteria), page after page.

        A criterion takes one value or a list of values (any of which may match):
        search(actor="bot"), search(verdict=[pb.OUT_OF_SCOPE, pb.NO_GRANT]); empty values are
        left out."""
        request = search_request(**criteria)
        while True:
            response = self.call(self.stub.Search, request)
            yield from response.hits
            if not response.next_index:
                return
            request.start_index = response.next_index


def search_request(**criteria: object) -> pb.SearchRequest:
    """A SearchRequest from criteria given as one value or a list of values each.

    The criteria are repeated fields, and protobuf would take a string given for one as the
    list of its characters: a lone value is wrapped here, and empty values are dropped."""
    request = pb.SearchRequest()
    fields = pb.SearchRequest.DESCRIPTOR.fields_by_name
    for name, value in criteria.items():
        if name not in fields:
            raise ValueError(f"unknown search criterion {name!r}")
        if fields[name].is_repeated:
            values = [value] if isinstance(value, str | int) else list(value)  # type: ignore[call-overload]
            getattr(request, name).extend(v for v in values if v)
        elif value:
            setattr(request, name, value)
    return request
