"""Our JSON Schema (draft 2020-12) of the OCSF events affidavit writes: API Activity, class 6003.

Written by hand for this project from the facts of the OCSF 1.8.0 specification (the version
client/ocsf.py claims, OCSF_VERSION); no OCSF file is copied here. It states:

- the class: class_uid 6003 API Activity in category_uid 6 Application Activity, and
  type_uid = class_uid * 100 + activity_id, with each *_name caption matching its *_id;
- the attributes OCSF 1.8.0 requires of an API Activity event (base event: activity_id,
  category_uid, class_uid, type_uid, severity_id, time, metadata; the class: actor, api,
  src_endpoint), and inside them what OCSF requires (metadata: version and product; api:
  operation; api.request: uid; trace: uid) and its "at least one" constraints (actor: user,
  session or app_name...; user: uid or name; network endpoint: name, uid or svc_name...;
  policy: uid or name). cloud is not required of API Activity in 1.8.0 (it is the cloud
  profile's, which these events do not apply);
- the enum values: activity_id, severity_id, status_id, disposition_id, action_id;
- the type of every attribute client/ocsf.py emits: integer_t (32-bit), long_t and
  timestamp_t (64-bit, milliseconds), string_t, boolean_t, ip_t (an IPv4 or IPv6 address),
  port_t (0 to 65535), arrays, objects; unmapped is OCSF's free-form object;
- closed objects: the event and every object in it hold only the attributes listed here, and
  each one listed is an attribute OCSF 1.8.0 defines at that place (the event's from the base
  event, API Activity, and the security_control and trace profiles the events apply, which
  metadata.profiles must name). An attribute OCSF defines but affidavit does not emit is
  refused too: to emit one, add it here from the specification.
"""

from __future__ import annotations

from typing import Any

OCSF_SPEC_VERSION = "1.8.0"
CLASS_UID, CATEGORY_UID = 6003, 6
PROFILES = ("security_control", "trace")

# The event's attribute set in OCSF 1.8.0, by where the specification defines each.
BASE_EVENT = frozenset(
    {
        "activity_id", "activity_name", "category_name", "category_uid", "class_name",
        "class_uid", "count", "duration", "end_time", "enrichments", "message", "metadata",
        "observables", "raw_data", "raw_data_hash", "raw_data_size", "severity", "severity_id",
        "start_time", "status", "status_code", "status_detail", "status_id", "time",
        "timezone_offset", "type_name", "type_uid", "unmapped",
    }
)  # fmt: skip
API_ACTIVITY = frozenset(
    {"actor", "api", "dst_endpoint", "http_request", "http_response", "resources", "src_endpoint"}
)
SECURITY_CONTROL = frozenset(
    {
        "action", "action_id", "attacks", "authorizations", "confidence", "confidence_id",
        "confidence_score", "disposition", "disposition_id", "firewall_rule", "is_alert",
        "malware", "malware_scan_info", "policy", "risk_details", "risk_level",
        "risk_level_id", "risk_score",
    }
)  # fmt: skip
TRACE = frozenset({"trace"})
CLASS_ATTRIBUTES = BASE_EVENT | API_ACTIVITY | SECURITY_CONTROL | TRACE

# Enum values and their captions (99 Other: the producer names it in the *_name sibling).
ACTIVITY = {0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
SEVERITY = {
    0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical",
    6: "Fatal", 99: "Other",
}  # fmt: skip
STATUS = {0: "Unknown", 1: "Success", 2: "Failure", 99: "Other"}
DISPOSITION = {
    0: "Unknown", 1: "Allowed", 2: "Blocked", 3: "Quarantined", 4: "Isolated", 5: "Deleted",
    6: "Dropped", 7: "Custom Action", 8: "Approved", 9: "Restored", 10: "Exonerated",
    11: "Corrected", 12: "Partially Corrected", 13: "Uncorrected", 14: "Delayed",
    15: "Detected", 16: "No Action", 17: "Logged", 18: "Tagged", 19: "Alert", 20: "Count",
    21: "Reset", 22: "Captcha", 23: "Challenge", 24: "Access Revoked", 25: "Rejected",
    26: "Unauthorized", 27: "Error", 99: "Other",
}  # fmt: skip
ACTION = {0: "Unknown", 1: "Allowed", 2: "Denied", 3: "Observed", 4: "Modified", 99: "Other"}

STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
LONG: dict[str, Any] = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
TIMESTAMP = LONG  # milliseconds since the epoch
BOOLEAN: dict[str, Any] = {"type": "boolean"}
IP: dict[str, Any] = {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}
PORT: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 65535}


def _strings() -> dict[str, Any]:
    return {"type": "array", "items": STRING}


def _enum(values: dict[int, str]) -> dict[str, Any]:
    return {**INTEGER, "enum": sorted(values)}


def _object(
    properties: dict[str, Any], required: tuple[str, ...] = (), at_least_one: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A closed OCSF object: only these attributes, the required ones present, and (OCSF's
    at_least_one constraint) one of at_least_one present when it is given."""
    shape: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        shape["required"] = list(required)
    if at_least_one:
        shape["anyOf"] = [{"required": [n]} for n in at_least_one]
    return shape


def _captioned(id_name: str, name: str, values: dict[int, str]) -> list[dict[str, Any]]:
    """For each enum value but Other: when the id is present with it, the caption is OCSF's."""
    return [
        {
            "if": {"required": [id_name], "properties": {id_name: {"const": v}}},
            "then": {"properties": {name: {"const": caption}}},
        }
        for v, caption in values.items()
        if v != 99
    ]


_POLICY = _object(
    {"uid": STRING, "name": STRING, "version": STRING},
    at_least_one=("name", "type", "uid"),
)
_ENDPOINT = _object(
    {"name": STRING, "uid": STRING, "svc_name": STRING, "ip": IP, "port": PORT},
    at_least_one=(
        "ip", "uid", "name", "hostname", "svc_name", "instance_uid", "interface_uid",
        "interface_name", "domain",
    ),
)  # fmt: skip

DEFS: dict[str, Any] = {
    "metadata": _object(
        {
            "version": STRING,
            "product": {"$ref": "#/$defs/product"},
            "uid": STRING,
            "log_name": STRING,
            "log_provider": STRING,
            "profiles": {
                **_strings(),
                # The event applies both profiles, so it must say so.
                "allOf": [{"contains": {"const": p}} for p in PROFILES],
            },
            "correlation_uid": STRING,
            "labels": _strings(),
        },
        required=("version", "product", "profiles"),
    ),
    "product": _object({"name": STRING, "vendor_name": STRING, "version": STRING}),
    "actor": _object(
        {
            "user": {"$ref": "#/$defs/user"},
            "session": {"$ref": "#/$defs/session"},
            "app_name": STRING,
            "authorizations": {"type": "array", "items": {"$ref": "#/$defs/authorization"}},
        },
        at_least_one=("process", "user", "invoked_by", "session", "app_name", "app_uid"),
    ),
    "user": _object(
        {"uid": STRING, "name": STRING, "credential_uid": STRING},
        at_least_one=("account", "name", "uid"),
    ),
    "session": _object({"uid": STRING}),
    "authorization": _object({"decision": STRING, "policy": {"$ref": "#/$defs/policy"}}),
    "policy": _POLICY,
    "network_endpoint": _ENDPOINT,
    "api": _object(
        {
            "operation": STRING,
            "service": {"$ref": "#/$defs/service"},
            "request": {"$ref": "#/$defs/request"},
            "response": {"$ref": "#/$defs/response"},
        },
        required=("operation",),
    ),
    "service": _object({"name": STRING}),
    "request": _object({"uid": STRING}, required=("uid",)),
    "response": _object({"error": STRING}),
    "resource_details": _object({"uid": STRING, "type": STRING}),
    "trace": _object({"uid": STRING}, required=("uid",)),
}

_EVENT_PROPERTIES: dict[str, Any] = {
    # base event
    "class_uid": {**INTEGER, "const": CLASS_UID},
    "class_name": {"const": "API Activity"},
    "category_uid": {**INTEGER, "const": CATEGORY_UID},
    "category_name": {"const": "Application Activity"},
    "activity_id": _enum(ACTIVITY),
    "activity_name": STRING,
    "type_uid": {**LONG, "enum": [CLASS_UID * 100 + a for a in sorted(ACTIVITY)]},
    "type_name": STRING,
    "time": TIMESTAMP,
    "severity_id": _enum(SEVERITY),
    "severity": STRING,
    "status_id": _enum(STATUS),
    "status": STRING,
    "status_code": STRING,
    "status_detail": STRING,
    "count": INTEGER,
    "start_time": TIMESTAMP,
    "end_time": TIMESTAMP,
    "message": STRING,
    "metadata": {"$ref": "#/$defs/metadata"},
    "unmapped": {"type": "object"},
    # API Activity
    "actor": {"$ref": "#/$defs/actor"},
    "api": {"$ref": "#/$defs/api"},
    "src_endpoint": {"$ref": "#/$defs/network_endpoint"},
    "dst_endpoint": {"$ref": "#/$defs/network_endpoint"},
    "resources": {"type": "array", "items": {"$ref": "#/$defs/resource_details"}},
    # security_control profile
    "action_id": _enum(ACTION),
    "action": STRING,
    "disposition_id": _enum(DISPOSITION),
    "disposition": STRING,
    "is_alert": BOOLEAN,
    "policy": {"$ref": "#/$defs/policy"},
    # trace profile
    "trace": {"$ref": "#/$defs/trace"},
}

REQUIRED = (
    "activity_id", "category_uid", "class_uid", "type_uid", "severity_id", "time", "metadata",
    "actor", "api", "src_endpoint",
)  # fmt: skip


def api_activity_schema() -> dict[str, Any]:
    """The JSON Schema of one API Activity event as affidavit writes it."""
    type_uids = [
        {
            "if": {"required": ["activity_id"], "properties": {"activity_id": {"const": a}}},
            "then": {
                "properties": {
                    "type_uid": {"const": CLASS_UID * 100 + a},
                    "type_name": {"const": f"API Activity: {caption}"}
                    if a != 99
                    else {"pattern": "^API Activity: "},
                }
            },
        }
        for a, caption in ACTIVITY.items()
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"OCSF {OCSF_SPEC_VERSION} API Activity ({CLASS_UID}), as affidavit writes it",
        **_object(_EVENT_PROPERTIES, required=REQUIRED),
        "allOf": [
            *type_uids,
            *_captioned("activity_id", "activity_name", ACTIVITY),
            *_captioned("severity_id", "severity", SEVERITY),
            *_captioned("status_id", "status", STATUS),
            *_captioned("disposition_id", "disposition", DISPOSITION),
            *_captioned("action_id", "action", ACTION),
        ],
        "$defs": DEFS,
    }
