"""Protocol buffer messages as plain JSON values, in the one form every command prints.

protobuf's own JSON mapping writes 64-bit integers as strings and bytes as base64; people and
jq read integers as numbers and compare hashes as the lowercase hex the rest of affidavit
prints. So here: integers are JSON numbers; hashes (every bytes field but a public key) are
lowercase hex; a public key is standard base64, the form of the .pub file `affidavit keygen`
writes and `--public-key` takes; enums are their names; fields left at their default are
omitted; field names are as in the .proto.
"""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_json(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        if field.name == "public_key":
            return base64.b64encode(value).decode("ascii")
        return bytes(value).hex()
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        enum = field.enum_type.values_by_number.get(value)
        return enum.name if enum is not None else value
    return value


def message_json(message: Message) -> dict[str, Any]:
    """The message's set fields as a JSON-ready dict (see the module docstring)."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        else:
            out[field.name] = _value(field, value)
    return out
