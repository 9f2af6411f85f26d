"""Statements as OCSF events: one API Activity event (class 6003) per statement, for SIEMs.

Each statement of the log is an API call an identity made, as its author signed it: an agent's
tool call (its INTENT, then its OUTCOME), or an admin's, human's or agent's call to the log
itself (registering an identity, delegating or revoking a grant, approving an action); the
log's record of a refused attempt is the claimant's call to append, failed (status Failure, the
reason code as status_detail, an aggregate's count over start_time..end_time). The event carries
the actor (user, session, credential), the authorisation (the policy decision at the
enforcement point, the log's scope verdict, the grants) through the security_control profile,
the resources, and the trace context through the trace profile. What OCSF has no attribute for
(the log index and leaf hash that prove the event, the digests, the grant ids) is under
unmapped.affidavit. The field-by-field mapping is in statements/README.md ("OCSF export").

The events are written against OCSF OCSF_VERSION and checked by the tests against our own JSON
Schema of the class, written from that version's specification (tests/ocsf_schema.py).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements.build import statement_of

OCSF_VERSION = "1.8.0"
CLASS_UID, CLASS_NAME = 6003, "API Activity"
CATEGORY_UID, CATEGORY_NAME = 6, "Application Activity"
PROFILES = ["security_control", "trace"]

_ACTIVITY = {  # OCSF API Activity activity_id: 1 Create, 2 Read, 3 Update, 4 Delete, 99 Other
    pb.CREATE: (1, "Create"),
    pb.READ: (2, "Read"),
    pb.UPDATE: (3, "Update"),
    pb.DELETE: (4, "Delete"),
    pb.EXECUTE: (99, "Execute"),
}
_IDENTITY_ACTIVITY = {
    pb.IdentityEvent.REGISTER: (1, "Create"),
    pb.IdentityEvent.ROTATE_KEY: (3, "Update"),
    pb.IdentityEvent.REVOKE: (4, "Delete"),
}
_STATUS = {  # OCSF status_id: 0 Unknown, 1 Success, 2 Failure
    pb.OK: (1, "Success"),
    pb.ERROR: (2, "Failure"),
    pb.DENIED: (2, "Failure"),
    pb.TIMEOUT: (2, "Failure"),
}
_SEVERITY = {1: "Informational", 3: "Medium", 4: "High"}


def _product_version() -> str:
    try:
        return version("affidavit")
    except PackageNotFoundError:
        return "unknown"


def _verdict_text(verdict: int, reason: str) -> str:
    name = pb.Verdict.Name(pb.Verdict.ValueType(verdict))
    return f"{name} ({reason})" if reason else name


def _action_fields(a: pb.AgentAction, verdict: int, reason: str) -> dict[str, Any]:
    op = a.operation
    activity_id, activity_name = _ACTIVITY.get(op.access, (0, "Unknown"))
    fields: dict[str, Any] = {
        "activity_id": activity_id,
        "activity_name": activity_name,
        "api": {
            "operation": op.operation_name or "execute_tool",
            "service": {"name": op.tool_name},
        },
        "resources": [{"uid": op.resource}],
    }
    if op.tool_call_id:
        fields["api"]["request"] = {"uid": op.tool_call_id}
    if op.tool_server:
        fields["dst_endpoint"] = {"svc_name": op.tool_server}
    out_of_scope = verdict in (pb.OUT_OF_SCOPE, pb.NO_GRANT)
    if a.phase == pb.AgentAction.OUTCOME:
        status_id, status = _STATUS.get(a.outcome.status, (0, "Unknown"))
        fields["status_id"], fields["status"] = status_id, status
        if a.outcome.error_code:
            fields["status_code"] = a.outcome.error_code
            fields["api"]["response"] = {"error": a.outcome.error_code}
    else:
        fields["status_id"], fields["status"] = 0, "Unknown"  # not done yet: an INTENT
        decision = a.authorization.decision
        if decision:
            fields["action_id"], fields["action"] = (
                (2, "Denied") if decision == pb.DENY else (1, "Allowed")
            )
    if verdict:
        if out_of_scope:
            fields["disposition_id"], fields["disposition"] = 26, "Unauthorized"
        elif a.authorization.decision == pb.DENY:
            fields["disposition_id"], fields["disposition"] = 2, "Blocked"
        elif a.authorization.decision == pb.ALLOW_IF_APPROVED:
            fields["disposition_id"], fields["disposition"] = 8, "Approved"
        else:
            fields["disposition_id"], fields["disposition"] = 1, "Allowed"
        fields["is_alert"] = out_of_scope
    if a.authorization.policy_id:
        policy: dict[str, Any] = {"uid": a.authorization.policy_id}
        if a.authorization.policy_version:
            policy["version"] = a.authorization.policy_version
        fields["policy"] = policy
    return fields


def _endpoint(source: str) -> dict[str, Any]:
    """The network endpoint of a gRPC peer address (ipv4:1.2.3.4:5, ipv6:[::1]:5); its text
    as the endpoint's name when it is neither."""
    family, _, rest = source.partition(":")
    host, _, port = rest.rpartition(":")
    if family in ("ipv4", "ipv6") and host and port.isdigit() and int(port) <= 65535:
        return {"ip": host.strip("[]"), "port": int(port)}
    return {"name": source or "unknown"}


def _refusal(r: pb.Refusal, actor: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A refused attempt: a call to append to the log (Create) that failed, the log's reason
    as status_detail, the claimed issuer and key as the actor (the log signed the record, but
    the attempt is theirs); an aggregate's count over [start_time, end_time]."""
    user: dict[str, Any] = {"uid": r.identity_id} if r.identity_id else {"name": "several"}
    if r.key_id:
        user["credential_uid"] = r.key_id
    actor.clear()
    actor["user"] = user
    fields: dict[str, Any] = {
        "activity_id": 1,
        "activity_name": "Create",
        "api": {"operation": "append", "service": {"name": "affidavit"}},
        "status_id": 2,
        "status": "Failure",
        "status_detail": r.reason,
        "action_id": 2,
        "action": "Denied",
        "disposition_id": 2,
        "disposition": "Blocked",
        "is_alert": True,
        "count": r.count,
        "src_endpoint": _endpoint(r.source),
        "resources": [],
    }
    if r.first_ms:
        fields["start_time"], fields["end_time"] = r.first_ms, r.last_ms or r.first_ms
    unmapped = {
        "refused_leaf_hash": r.leaf_hash.hex(),
        "claimed_issuer": r.identity_id,
        "claimed_key_id": r.key_id,
        "reason": r.reason,
        "source": r.source,
        "count": r.count,
    }
    return fields, unmapped


def event(
    index: int, leaf: bytes, leaf_hash: bytes, verdict: int, verdict_reason: str, log: str
) -> dict[str, Any]:
    """The OCSF API Activity event of the statement at index (leaf: its exact bytes; verdict:
    what the log recorded at ingest; log: the log's origin)."""
    signed = pb.SignedStatement.FromString(leaf)
    st = statement_of(leaf)
    h, body = st.header, st.WhichOneof("body")
    affidavit: dict[str, Any] = {
        "log_index": index,
        "leaf_hash": leaf_hash.hex(),
        "key_id": signed.key_id,
        "statement_kind": body,
        "session_sequence": h.sequence,
    }
    user: dict[str, Any] = {"uid": h.issuer}
    actor: dict[str, Any] = {"user": user, "session": {"uid": h.session_id}}
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": {
            "name": "affidavit",
            "vendor_name": "affidavit",
            "version": _product_version(),
        },
        "uid": h.statement_id,
        "log_name": log,
        "profiles": list(PROFILES),
    }
    if h.producer.adapter:
        metadata["log_provider"] = h.producer.adapter
    src: dict[str, Any] = {"name": h.issuer}
    fields: dict[str, Any]
    if body == "action":
        a = st.action
        if a.actor.agent_name:
            user["name"] = a.actor.agent_name
        if a.actor.framework:
            actor["app_name"] = a.actor.framework
        credential = a.credential.key_id or a.credential.token_jti
        if credential:
            user["credential_uid"] = credential
        if a.actor.workload_id or a.actor.instance_id:
            src["uid"] = a.actor.workload_id or a.actor.instance_id
        if verdict:
            decision = _verdict_text(verdict, verdict_reason)
            actor["authorizations"] = [
                {"decision": decision, "policy": {"uid": g, "name": "grant"}} for g in a.grant_ids
            ] or [{"decision": decision}]
        fields = _action_fields(a, verdict, verdict_reason)
        t = a.correlation
        if t.trace_id:
            fields["trace"] = {"uid": t.trace_id}
            metadata["correlation_uid"] = t.trace_id
        affidavit.update(
            {
                "phase": pb.AgentAction.Phase.Name(a.phase),
                "action_id": a.action_id,
                "grant_ids": list(a.grant_ids),
                "approval_id": a.approval_id,
                "parameters_digest": a.operation.parameters_digest,
                "verdict": pb.Verdict.Name(pb.Verdict.ValueType(verdict)) if verdict else "",
                "verdict_reason": verdict_reason,
                "intent_leaf_hash": a.intent_leaf_hash.hex(),
                "effect_ref": a.outcome.effect_ref,
                "result_digest": a.outcome.result_digest,
                "span_id": t.span_id,
                "parent_action_id": t.parent_action_id,
                "principal_chain": list(a.principal_chain),
            }
        )
        what = (
            f"{pb.AgentAction.Phase.Name(a.phase)} of {a.operation.tool_name} on "
            f"{a.operation.resource}"
        )
        if verdict:
            what += f": {_verdict_text(verdict, verdict_reason)}"
    elif body == "identity":
        e = st.identity
        activity_id, activity_name = _IDENTITY_ACTIVITY[e.op]
        op = pb.IdentityEvent.Op.Name(e.op).lower()
        fields = {
            "activity_id": activity_id,
            "activity_name": activity_name,
            "api": {"operation": f"identity.{op}", "service": {"name": "affidavit"}},
            "resources": [{"uid": f"identity:{e.identity_id}", "type": "identity"}],
            "status_id": 1,
            "status": "Success",
        }
        what = f"identity {op} of {e.identity_id}"
    elif body == "grant":
        g = st.grant
        fields = {
            "activity_id": 1,
            "activity_name": "Create",
            "api": {"operation": "grant", "service": {"name": "affidavit"}},
            "resources": [{"uid": r, "type": "grant-resource"} for r in g.resources],
            "status_id": 1,
            "status": "Success",
        }
        if g.ticket:
            metadata["labels"] = [g.ticket]
        affidavit.update({"grantee": g.grantee, "parent_grant_id": g.parent_grant_id})
        what = f"grant to {g.grantee}"
    elif body == "session":
        session = st.session
        opens = session.op == pb.SessionEvent.OPEN
        op = pb.SessionEvent.Op.Name(session.op).lower()
        fields = {
            "activity_id": 1 if opens else 99,
            "activity_name": "Create" if opens else "Close",
            "api": {"operation": f"session.{op}", "service": {"name": "affidavit"}},
            "resources": [{"uid": f"session:{h.session_id}", "type": "session"}],
            "status_id": 1,
            "status": "Success",
        }
        if session.purpose:
            affidavit["purpose"] = session.purpose
        what = (
            f"session {op} ({h.sequence} statement(s) before it)" if not opens else "session open"
        )
    elif body == "approval":
        ap = st.approval
        fields = {
            "activity_id": 1,
            "activity_name": "Create",
            "api": {"operation": "approve", "service": {"name": "affidavit"}},
            "resources": [{"uid": f"action:{ap.action_id}", "type": "action"}],
            "status_id": 1,
            "status": "Success",
        }
        if ap.ticket:
            metadata["labels"] = [ap.ticket]
        affidavit.update(
            {
                "action_id": ap.action_id,
                "parameters_digest": ap.parameters_digest,
                "decision": pb.Approval.Decision.Name(ap.decision),
            }
        )
        what = f"approval ({pb.Approval.Decision.Name(ap.decision)}) of action {ap.action_id}"
    elif body == "grant_revocation":
        gr = st.grant_revocation
        fields = {
            "activity_id": 4,
            "activity_name": "Delete",
            "api": {"operation": "grant.revoke", "service": {"name": "affidavit"}},
            "resources": [{"uid": f"grant:{gr.grant_id}", "type": "grant"}],
            "status_id": 1,
            "status": "Success",
        }
        affidavit.update({"grant_id": gr.grant_id, "revocation_reason": gr.reason})
        what = f"revocation of grant {gr.grant_id}"
    elif body == "refusal":
        r = st.refusal
        fields, refused = _refusal(r, actor)
        affidavit.update(refused)
        claimed = r.identity_id or "several identities"
        what = f"refused {r.count} attempt(s) claiming {claimed}: {r.reason}"
    else:  # a kind this mapping does not name yet: an API call to the log, by its kind
        fields = {
            "activity_id": 99,
            "activity_name": "Other",
            "api": {"operation": str(body), "service": {"name": "affidavit"}},
            "resources": [],
            "status_id": 1,
            "status": "Success",
        }
        what = str(body)
    if not fields["resources"]:
        del fields["resources"]
    severity_id = 4 if verdict in (pb.OUT_OF_SCOPE, pb.NO_GRANT) else 1
    if body == "refusal":
        severity_id = 3  # stopped at the door: below an out-of-scope action, which was recorded
        src = fields.pop("src_endpoint")
    activity_id = fields["activity_id"]
    return {
        "class_uid": CLASS_UID,
        "class_name": CLASS_NAME,
        "category_uid": CATEGORY_UID,
        "category_name": CATEGORY_NAME,
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": f"{CLASS_NAME}: {fields['activity_name']}",
        "time": h.client_time_ms,
        "severity_id": severity_id,
        "severity": _SEVERITY[severity_id],
        "message": f"{h.issuer}: {what}",
        "metadata": metadata,
        "actor": actor,
        "src_endpoint": src,
        **fields,
        "unmapped": {"affidavit": {k: v for k, v in affidavit.items() if v not in ("", [])}},
    }
