"""affidavit: a verifiable, witnessed audit log for AI agents.

The names an integrator needs, importable from `affidavit` itself::

    from affidavit import AccessKind, Actor, Client, IdentityKey, TrustPolicy

    policy = TrustPolicy(log_key=open("log.pub").read().strip())
    with Client("127.0.0.1:7420", policy, trust_dir=".affidavit") as client:
        agent = Actor(client, IdentityKey.load("code-agent.key"))
        with agent.action("github.create_pull_request", "repo:acme/web", AccessKind.CREATE,
                          params, grant_ids=[grant_id]) as act:
            act.effect_ref = open_pull_request(params)

    Client          a connection to one log; verifies every checkpoint, proof and receipt
    Actor           one identity's statements (register, grant, approve, action) in a session
    IdentityKey     an Ed25519 identity key (C2SP signer key text) that signs statements
    TrustPolicy     the log's key, the witnesses known and how many must cosign
    Tls             TLS / mTLS settings for a Client
    Receipt         a verified append: index, leaf hash, checkpoint, proof, verdict
    Verdict         the log's scope verdict enum (IN_SCOPE, OUT_OF_SCOPE, NO_GRANT, ...)
    AccessKind      what an action does to its resource (READ, CREATE, UPDATE, DELETE, EXECUTE)
    ClientError     base of every error below
    VerificationError   something the log sent does not verify (never carry on past it)
    RefusedError    the log refused the request (gRPC status name and the log's reason)
    NotAuthorisedError  recorded, but the log judged the action OUT_OF_SCOPE or NO_GRANT, so
                    Actor.action (enforcing by default) did not run it
    NotFoundError   (a RefusedError) the log holds no such entry, statement or action
    NotSentError    a check made before sending (the log's own rule) stopped a statement
    UnavailableError    the log could not be reached after retries

The parts live in subpackages: `affidavit.merkle` (proofs, notes, tiles; no I/O),
`affidavit.statements` (the statement model and every ingest rule), `affidavit.client`,
`affidavit.server` and `affidavit.proto`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from affidavit.client.actor import Actor
    from affidavit.client.client import Client, Receipt, Tls
    from affidavit.client.errors import (
        ClientError,
        NotAuthorisedError,
        NotFoundError,
        NotSentError,
        RefusedError,
        UnavailableError,
        VerificationError,
    )
    from affidavit.client.verify import TrustPolicy
    from affidavit.proto.affidavit_pb2 import AccessKind, Verdict
    from affidavit.statements.signing import IdentityKey

# Loaded on first use, so that `import affidavit.merkle` (or the server) does not pay for,
# or depend on, the client and gRPC: name -> defining module.
_EXPORTS = {
    "Actor": "affidavit.client.actor",
    "Client": "affidavit.client.client",
    "Receipt": "affidavit.client.client",
    "Tls": "affidavit.client.client",
    "ClientError": "affidavit.client.errors",
    "NotAuthorisedError": "affidavit.client.errors",
    "NotFoundError": "affidavit.client.errors",
    "NotSentError": "affidavit.client.errors",
    "RefusedError": "affidavit.client.errors",
    "UnavailableError": "affidavit.client.errors",
    "VerificationError": "affidavit.client.errors",
    "TrustPolicy": "affidavit.client.verify",
    "Verdict": "affidavit.proto.affidavit_pb2",
    "AccessKind": "affidavit.proto.affidavit_pb2",
    "IdentityKey": "affidavit.statements.signing",
}

__all__ = [
    "AccessKind",
    "Actor",
    "Client",
    "ClientError",
    "IdentityKey",
    "NotAuthorisedError",
    "NotFoundError",
    "NotSentError",
    "Receipt",
    "RefusedError",
    "Tls",
    "TrustPolicy",
    "UnavailableError",
    "Verdict",
    "VerificationError",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'affidavit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
