"""Decoding and schema rules: what a well-formed signed statement is.

A statement decodes strictly (no unknown fields anywhere: nothing may hide in a leaf that a
reader of this schema cannot see), has its required fields, and stays within size bounds. The
walk that checks sizes also hands every string to the secret guard, so no string field escapes
either check. Each violation names the field path (e.g. action.operation.resource).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import names, redact, schema_walk, secret_values, secrets
from affidavit.statements.canonical import JSONLimitError, is_digest, parse
from affidavit.statements.errors import Rejection
from affidavit.statements.ids import is_identity_id, is_uuid7
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError, Message

SCHEMA_VERSION = 1

_HEX = re.compile(r"[0-9a-f]+")
_ROLE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_REASON = re.compile(r"[a-z][a-z-]{0,63}")


def decode(leaf: bytes) -> tuple[pb.SignedStatement, pb.Statement]:
    """The envelope and the statement inside it, strictly decoded; Rejection otherwise."""
    try:
        signed = pb.SignedStatement.FromString(leaf)
    except DecodeError:
        raise Rejection.invalid(
            "entry is not a SignedStatement (protobuf does not decode)"
        ) from None
    _no_unknown_fields(signed, "signed_statement")
    try:
        statement = pb.Statement.FromString(signed.statement)
    except DecodeError:
        raise Rejection.invalid(
            "statement bytes are not a Statement (protobuf does not decode)"
        ) from None
    return signed, statement


def _no_unknown_fields(message: Message, path: str) -> None:
    if len(unknown_fields.UnknownFieldSet(message)):
        raise Rejection.invalid(
            f"{path} has fields this log's schema does not define; upgrade or remove them"
        )


def check(signed: pb.SignedStatement, statement: pb.Statement) -> None:
    """Schema, sizes and the secret guard; Rejection names the first field that fails.

    ``statement`` must be ``signed.statement`` decoded (what ``decode`` returns): the walk
    reads those bytes for it."""
    body = statement.WhichOneof("body")
    # An action, its operation and its parameters' text are read once and handed down: each
    # read of a submessage makes (and then frees) a wrapper unless one is alive, which costs
    # more than a check, and each read of a string makes a new str.
    action = statement.action if body == "action" else None
    operation = action.operation if action is not None else None
    text = operation.parameters_json if operation is not None else ""
    parameters, known_canonical = _parse_parameters(text)
    _guard_secrets(statement, parameters, signed.statement)
    if not _is_key_id(signed.key_id):
        raise Rejection.invalid("key_id must be 32 lowercase hex characters")
    _check_header(statement)
    if body is None:
        raise Rejection.invalid(
            "statement has no body: set identity, grant, approval, action or grant_revocation"
            " (or, for the log itself, refusal)"
        )
    if action is not None and operation is not None:
        _check_action(action, operation, text, parameters, known_canonical)
        return
    {
        "identity": _check_identity,
        "grant": _check_grant,
        "approval": _check_approval,
        "session": _check_session_event,
        "grant_revocation": _check_grant_revocation,
        "refusal": _check_refusal,
    }[body](statement)


# The same few keys sign statement after statement: judged once each.
@functools.lru_cache(maxsize=4096)
def _is_key_id(text: str) -> bool:
    """A key's id: 32 lowercase hex characters (signing.key_id)."""
    return len(text) == 32 and _HEX.fullmatch(text) is not None


def _parse_parameters(text: str) -> tuple[Any, bool]:
    """An action's parameters_json (``text``; empty when there is no action) parsed once, for
    the guard and the action's rules: the value, the JSONLimitError that parsing raised, or
    None when there are none to parse; and whether the text is already known canonical
    (canonical.parse)."""
    if not text:
        return None, False
    try:
        return parse(text)
    except JSONLimitError as e:
        return e, False


PARAMETERS = "action.operation.parameters_json"


def _guard_secrets(statement: pb.Statement, parameters: Any, wire: bytes | None = None) -> None:
    """Every string field of every statement kind through the secret guard: parameters as the
    JSON they hold (parsed by _parse_parameters; their text when they are not JSON), each map
    with its keys and sibling keys as context (secret_values.py), every other field as text.
    Fields are judged in walk order, maps last. The Rejection names the field, the JSON
    pointer and the rule, never the value. The walk (schema_walk) also refuses unknown fields,
    sizes and enum values, so every statement is walked here. ``wire``: the bytes
    ``statement`` was decoded from, if the caller has them (schema_walk.walk)."""
    found = schema_walk.walk(statement, "statement", wire=wire)
    # One loud pass over the fields and the parameters' strings: only what it marks is judged.
    pieces: list[str] = []
    named = False
    if found.parameters_at >= 0:
        pieces, named = secret_values.pieces(_guarded_parameters(statement, parameters))
    marks = secrets.loud([*found.texts, *pieces] if pieces else found.texts)
    if marks or named:  # else nothing is judged: most statements
        _judge_marked(statement, parameters, found, marks, named)
    for at, (_, entries) in enumerate(found.maps):
        for h in secret_values.scan_value(entries)[:1]:
            path = schema_walk.walk(statement, "statement", paths=True).maps[at][0]
            key = next(k for k in entries if f"/{secret_values.pointer_part(k)}" == h.path)
            _refuse_secret(f"{path}.key" if h.in_key else f"{path}[{key!r}]", h.rule)


def _judge_marked(
    statement: pb.Statement,
    parameters: Any,
    found: schema_walk.Strings,
    marks: set[int],
    named: bool,
) -> None:
    """The fields and parameters the loud pass marked (``marks``: indices of the walk's texts,
    then of the parameters' pieces; ``named``: a piece names a credential), judged in walk
    order; Rejection for the first that holds a secret."""
    parameters_at = found.parameters_at
    count = len(found.texts)
    in_parameters = {i - count for i in marks if i >= count}
    if not named and not in_parameters:
        parameters_at = -1  # quiet parameters: scan_value would find nothing in them
    loud = sorted(i for i in marks if i < count)
    for i in loud:
        if 0 <= parameters_at <= i:
            _guard_parameters(statement, parameters, in_parameters)
            parameters_at = -1
        findings = secrets.scan(found.texts[i])
        if findings:
            path = schema_walk.walk(statement, "statement", paths=True).paths[i]
            _refuse_secret(path, findings[0].rule)
    if parameters_at >= 0:
        _guard_parameters(statement, parameters, in_parameters)


def _guard_parameters(statement: pb.Statement, parameters: Any, loud: set[int]) -> None:
    """loud: what secrets.loud marked of secret_values.pieces of the guarded parameters."""
    guarded = _guarded_parameters(statement, parameters)
    _refuse_hits(PARAMETERS, secret_values.scan_value(guarded, loud))


def _guarded_parameters(statement: pb.Statement, parameters: Any) -> Any:
    """What the guard reads of the parameters: their value; their text when they are not JSON
    (refused as not JSON later, but guarded here first)."""
    if isinstance(parameters, JSONLimitError):
        return statement.action.operation.parameters_json
    return parameters


def _refuse_hits(path: str, hits: list[secret_values.Hit]) -> None:
    if hits:
        h = hits[0]
        where = h.path.rsplit("/", 1)[0] if h.in_key else h.path
        detail = f" in a key at {where or '/'}" if h.in_key else f" at {where or '/'}"
        _refuse_secret(path, h.rule, detail)


def _refuse_secret(path: str, rule: str, detail: str = "") -> None:
    raise Rejection.invalid(
        f"{path} holds what looks like a secret (rule {rule}){detail}; redact it before "
        "signing (the client library does) — the value is not shown here"
    )


def _require_names(kind: names.Kind, path: str, items: list[str], *, pattern: bool) -> None:
    """Every item of a repeated field a well-formed name (or pattern) of kind (statements.names)."""
    for i, text in enumerate(items):
        if pattern or not names.is_name(kind, text):
            _refuse_name(kind, f"{path}[{i}]", text, pattern=pattern)


def _refuse_name(kind: names.Kind, path: str, text: str, *, pattern: bool = False) -> None:
    """Rejection saying why text is not a well-formed name (or pattern) of kind; nothing when
    it is one. For a name, callers ask names.is_name first (the one-pass check, cached)."""
    problem = names.problem(kind, text, pattern=pattern)
    if problem:
        what = f"{kind} pattern" if pattern else f"{kind} name"
        raise Rejection.invalid(f"{path} is not a well-formed {what}: it {problem}")


def _check_header(statement: pb.Statement) -> None:
    if not statement.HasField("header"):
        raise Rejection.invalid("header is missing")
    h = statement.header
    if not is_uuid7(h.statement_id):
        raise Rejection.invalid("header.statement_id must be a lowercase UUIDv7")
    if not is_identity_id(h.issuer):
        raise Rejection.invalid("header.issuer must be an identity id ([A-Za-z0-9._:@/-], 1-128)")
    if not (0 < len(h.session_id) <= 128):
        raise Rejection.invalid("header.session_id must be 1-128 characters")
    if h.sequence == 0:
        if h.previous_hash:
            raise Rejection.invalid("header.previous_hash must be empty at sequence 0")
    elif len(h.previous_hash) != 32:
        raise Rejection.invalid(
            "header.previous_hash must be the 32-byte leaf hash "
            "of the issuer's previous statement in this session"
        )
    if h.client_time_ms <= 0:
        raise Rejection.invalid("header.client_time_ms must be set (Unix milliseconds)")
    if h.schema_version != SCHEMA_VERSION:
        raise Rejection.invalid(f"header.schema_version must be {SCHEMA_VERSION}")
    producer = h.producer
    if not producer.adapter:
        raise Rejection.invalid("header.producer.adapter must name the producing adapter")
    if producer.assurance == pb.ASSURANCE_UNSPECIFIED:
        raise Rejection.invalid("header.producer.assurance must be set")


def _check_identity(statement: pb.Statement) -> None:
    e = statement.identity
    if e.op == pb.IdentityEvent.OP_UNSPECIFIED:
        raise Rejection.invalid("identity.op must be REGISTER, ROTATE_KEY or REVOKE")
    if not is_identity_id(e.identity_id):
        raise Rejection.invalid("identity.identity_id must be an identity id")
    if e.op == pb.IdentityEvent.REGISTER and e.kind == pb.IDENTITY_KIND_UNSPECIFIED:
        raise Rejection.invalid("identity.kind must be set to register")
    if e.op in (pb.IdentityEvent.REGISTER, pb.IdentityEvent.ROTATE_KEY):
        if len(e.public_key) != 32:
            raise Rejection.invalid("identity.public_key must be a 32-byte Ed25519 key")
    elif e.public_key:
        raise Rejection.invalid("identity.public_key must be empty to revoke")
    if e.owner and not is_identity_id(e.owner):
        raise Rejection.invalid("identity.owner must be an identity id")


def _check_grant(statement: pb.Statement) -> None:
    g = statement.grant
    if not is_identity_id(g.grantee):
        raise Rejection.invalid("grant.grantee must be an identity id")
    if not g.tools:
        raise Rejection.invalid("grant.tools must list at least one tool pattern")
    if not g.resources:
        raise Rejection.invalid("grant.resources must list at least one resource pattern")
    if not g.access:
        raise Rejection.invalid("grant.access must list at least one access kind")
    if not all(g.access):
        raise Rejection.invalid("grant.access holds ACCESS_KIND_UNSPECIFIED")
    if not (all(g.tools) and all(g.resources) and all(g.operations)):
        raise Rejection.invalid("grant patterns must not be empty")
    _require_names("tool", "grant.tools", list(g.tools), pattern=True)
    _require_names("tool", "grant.operations", list(g.operations), pattern=True)
    _require_names("resource", "grant.resources", list(g.resources), pattern=True)
    p = g.approval
    _require_names("tool", "grant.approval.tools", list(p.tools), pattern=True)
    _require_names("resource", "grant.approval.resources", list(p.resources), pattern=True)
    if not all(p.access):
        raise Rejection.invalid("grant.approval.access holds ACCESS_KIND_UNSPECIFIED")
    if not all(is_identity_id(a) for a in p.approvers):
        raise Rejection.invalid("grant.approval.approvers must be identity ids")
    if not all(_ROLE.fullmatch(r) for r in p.roles):
        raise Rejection.invalid("grant.approval.roles must be role names ([A-Za-z0-9_.-], 1-64)")
    if g.not_before_ms and g.not_after_ms and g.not_before_ms >= g.not_after_ms:
        raise Rejection.invalid("grant.not_before_ms must be before not_after_ms")
    if g.parent_grant_id and not is_uuid7(g.parent_grant_id):
        raise Rejection.invalid("grant.parent_grant_id must be a statement id (UUIDv7)")


def _check_approval(statement: pb.Statement) -> None:
    a = statement.approval
    if not a.action_id:
        raise Rejection.invalid("approval.action_id must name the action decided on")
    if not is_digest(a.parameters_digest):
        raise Rejection.invalid("approval.parameters_digest must be 64 lowercase hex")
    if a.decision == pb.Approval.DECISION_UNSPECIFIED:
        raise Rejection.invalid("approval.decision must be set")
    if not is_identity_id(a.agent_id):
        raise Rejection.invalid(
            "approval.agent_id must name the agent that is to act (an identity id)"
        )


def _check_refusal(statement: pb.Statement) -> None:
    r = statement.refusal
    if len(r.leaf_hash) != 32:
        raise Rejection.invalid("refusal.leaf_hash must be the refused leaf's 32-byte hash")
    if not _REASON.fullmatch(r.reason):
        raise Rejection.invalid("refusal.reason must be a reason code")
    if r.key_id and not _is_key_id(r.key_id):
        raise Rejection.invalid("refusal.key_id must be empty or 32 lowercase hex")
    if r.identity_id and not is_identity_id(r.identity_id):
        raise Rejection.invalid("refusal.identity_id must be empty or an identity id")
    if r.count < 1:
        raise Rejection.invalid("refusal.count must be at least 1")
    if not (0 < r.first_ms <= r.last_ms):
        raise Rejection.invalid("refusal.first_ms must be set and not after last_ms")


def _check_grant_revocation(statement: pb.Statement) -> None:
    if not is_uuid7(statement.grant_revocation.grant_id):
        raise Rejection.invalid("grant_revocation.grant_id must be a grant's statement id (UUIDv7)")


def _check_session_event(statement: pb.Statement) -> None:
    if statement.session.op == pb.SessionEvent.OP_UNSPECIFIED:
        raise Rejection.invalid("session.op must be set")
    if statement.session.op != pb.SessionEvent.OPEN and statement.session.purpose:
        raise Rejection.invalid("session.purpose belongs to the OPEN")


def _check_action(
    a: pb.AgentAction, op: pb.Operation, parameters_json: str, parsed: Any, known_canonical: bool
) -> None:
    """The statement's action and its operation; parameters_json: op's, as check read it;
    parsed, known_canonical: the parameters as _parse_parameters gave them. Each field is read
    once (a read of a protobuf field costs as much as a check): the checks, in their order,
    use locals."""
    phase = a.phase
    if phase == pb.AgentAction.PHASE_UNSPECIFIED:
        raise Rejection.invalid("action.phase must be INTENT or OUTCOME")
    if not a.action_id:
        raise Rejection.invalid("action.action_id must be set")
    if not is_identity_id(a.actor.agent_id):
        raise Rejection.invalid("action.actor.agent_id must be an identity id")
    tool_name, resource, operation_name = op.tool_name, op.resource, op.operation_name
    if not tool_name:
        raise Rejection.invalid("action.operation.tool_name must be set")
    if not resource:
        raise Rejection.invalid("action.operation.resource must be set")
    if not names.is_name("tool", tool_name):
        _refuse_name("tool", "action.operation.tool_name", tool_name)
    if not names.is_name("resource", resource):
        _refuse_name("resource", "action.operation.resource", resource)
    if operation_name and not names.is_name("tool", operation_name):
        _refuse_name("tool", "action.operation.operation_name", operation_name)
    authorization = a.authorization
    if authorization.scopes_granted:
        raise Rejection.invalid(
            "action.authorization.scopes_granted must be empty: what was granted is what the log's "
            "grants say, not what the producer claims"
        )
    principal_chain = a.principal_chain
    if principal_chain and not all(is_identity_id(p) for p in principal_chain):
        raise Rejection.invalid("action.principal_chain must list identity ids")
    if op.access == pb.ACCESS_KIND_UNSPECIFIED:
        raise Rejection.invalid("action.operation.access must be set")
    parameters_digest = op.parameters_digest
    if not is_digest(parameters_digest):
        raise Rejection.invalid("action.operation.parameters_digest must be 64 lowercase hex")
    # The digest is checked on every action, whatever its redactions say: it is what an
    # approval binds to, so parameters not shown here can never appear approved (redact.py).
    if not parameters_json:
        raise Rejection.invalid("action.operation.parameters_json must be set ({} for none)")
    if isinstance(parsed, JSONLimitError):
        raise Rejection.invalid(f"action.operation.parameters_json {parsed}")
    try:
        problem = redact.check_shown(
            parameters_json,
            parsed,
            parameters_digest,
            op.redactions,
            known_canonical=known_canonical,
        )
    except JSONLimitError as e:
        problem = f"parameters_json {e}"
    if problem is not None:
        raise Rejection.invalid(f"action.operation.{problem}")
    if phase == pb.AgentAction.INTENT:
        if authorization.decision == pb.POLICY_DECISION_UNSPECIFIED:
            raise Rejection.invalid("action.authorization.decision must be set on an INTENT")
        if a.intent_leaf_hash:
            raise Rejection.invalid("action.intent_leaf_hash is for OUTCOMEs only")
    else:
        if len(a.intent_leaf_hash) != 32:
            raise Rejection.invalid(
                "action.intent_leaf_hash must be the INTENT's 32-byte leaf hash"
            )
        if a.outcome.status == pb.OUTCOME_STATUS_UNSPECIFIED:
            raise Rejection.invalid("action.outcome.status must be set")
    c = a.correlation
    trace_id, span_id = c.trace_id, c.span_id
    if trace_id and (len(trace_id) != 32 or not _HEX.fullmatch(trace_id)):
        raise Rejection.invalid("correlation.trace_id must be 32 hex")
    if span_id and (len(span_id) != 16 or not _HEX.fullmatch(span_id)):
        raise Rejection.invalid("correlation.span_id must be 16 hex")
    # Most actions carry no credential: asking costs less than reading an unset submessage.
    fingerprint = a.credential.fingerprint if a.HasField("credential") else ""
    if fingerprint and (len(fingerprint) != 8 or not _HEX.fullmatch(fingerprint)):
        raise Rejection.invalid(
            "action.credential.fingerprint must be 8 hex (an HMAC fingerprint, never the secret)"
        )
