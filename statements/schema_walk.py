"""The walk over every field of a statement: unknown fields, sizes, enums, and the strings.

Strict decoding leaves three things for a walk to refuse: fields this schema does not define
(nothing may hide in a leaf a reader cannot see), sizes beyond the bounds, and enum values the
schema does not define (proto3 keeps them; the rules would read them as some defined value).
The same walk hands every string to the secret guard, so no string field escapes either check.

What the walk does per field is fixed by the message type, so it is worked out once per type
(a Plan) and each statement only reads its fields. Field paths (``action.operation.resource``)
are formatted only when something is wrong: the walk runs without them, and when it finds a
problem, or the guard needs to name a string, it runs again with them (``walk(..., paths=True)``
visits the same fields in the same order).

Where the C core is built (statements/_walkcore.c), a walk without paths first reads the
statement's wire bytes with it: it gives the strings in walk order when the bytes are plainly
clean, and declines anything else (an unknown field, a bound broken, a map, fields out of
order or repeated), which the walk here then judges. Its plan is made from the same steps, so
the bounds stay written once, here; tests run the walk both with and without it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final, cast

from affidavit.statements import compiled
from affidavit.statements.errors import Rejection
from google.protobuf import unknown_fields
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

MAX_STRING: Final = 1024
LONG_STRINGS: Final = {"parameters_json": 32 * 1024, "justification": 4096, "comment": 4096}
MAX_REPEATED: Final = 64
MAX_ATTRIBUTES: Final = 32
PARAMETERS: Final = "affidavit.v1.Operation.parameters_json"
"""The one string the guard reads as the JSON it holds, not as text (schema._guard_secrets)."""

_STRING, _PARAMETERS, _BYTES, _ENUM, _MESSAGE, _MAP, _ONEOF, _SCALARS = range(8)


@dataclass(frozen=True)
class _Step:
    """What the walk does with one field (or, for _ONEOF, with the set member of a oneof)."""

    kind: int
    name: str
    repeated: bool = False
    limit: int = MAX_STRING
    message: Descriptor | None = None
    enum_numbers: frozenset[int] = frozenset()
    enum_name: str = ""
    members: dict[str, _Step] | None = None


@functools.cache
def _plan(descriptor: Descriptor) -> tuple[_Step, ...]:
    """The steps of a message type, in field-number order (the order of ListFields, so the
    first problem found is the one a walk field by field would find). A oneof whose members
    are numbered together is one step (the member that is set); scalars other than strings,
    bytes and enums have no bounds, and only repeated ones (counted) are kept."""
    fields = sorted(descriptor.fields, key=lambda f: f.number)
    steps: list[_Step] = []
    for i, f in enumerate(fields):
        oneof = f.containing_oneof
        if oneof is not None and _together(fields, oneof.name):
            before = fields[i - 1].containing_oneof if i else None
            if before is not None and before.name == oneof.name:
                continue  # a member after the first: in the group step already
            members = {m.name: s for m in oneof.fields if (s := _step(m)) is not None}
            steps.append(_Step(_ONEOF, oneof.name, members=members))
        elif (step := _step(f)) is not None:
            steps.append(step)
    return tuple(steps)


def _together(fields: list[FieldDescriptor], oneof: str) -> bool:
    """Whether the members of a oneof are consecutive in field-number order."""
    at = [
        i for i, f in enumerate(fields) if f.containing_oneof and f.containing_oneof.name == oneof
    ]
    return at == list(range(at[0], at[0] + len(at)))


def _step(f: FieldDescriptor) -> _Step | None:
    repeated = f.is_repeated
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        return _Step(_MAP, f.name, limit=MAX_ATTRIBUTES)
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        return _Step(_MESSAGE, f.name, repeated, message=f.message_type)
    if f.type == FieldDescriptor.TYPE_STRING:
        kind = _PARAMETERS if f.full_name == PARAMETERS else _STRING
        return _Step(kind, f.name, repeated, LONG_STRINGS.get(f.name, MAX_STRING))
    if f.type == FieldDescriptor.TYPE_BYTES:
        return _Step(_BYTES, f.name, repeated)
    if f.type == FieldDescriptor.TYPE_ENUM and f.enum_type is not None:
        numbers = frozenset(f.enum_type.values_by_number)
        return _Step(_ENUM, f.name, repeated, enum_numbers=numbers, enum_name=f.enum_type.name)
    return _Step(_SCALARS, f.name, repeated) if repeated else None


_WIRE: Final = {
    **dict.fromkeys(
        (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_MESSAGE), 2
    ),
    **dict.fromkeys(
        (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64),
        1,
    ),
    **dict.fromkeys(
        (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32),
        5,
    ),
}
"""Each field type's wire type (any other but groups: varint, 0)."""

WirePlan = list[tuple[int, int, bool, int, Any, frozenset[int] | None, int] | None]
"""The C core's plan of a message type, indexed by field number (a list: the core reads it
without making an int of each field number): (step kind, wire type, repeated, limit (a
string's characters, a bytes field's bytes), the message field's own plan, enum numbers,
index of its oneof or -1), or None for a number the type lacks. The core's one bound of its
own, MAX_REPEATED, is exported by it and held equal to this module's by a test."""

MAX_PLANNED_NUMBER: Final = 4096
"""A type with a field numbered beyond this is left to the walk (its plan would be a list
that long)."""

_WIRE_PLANS: dict[Descriptor, WirePlan | None] = {}
"""Keyed by the descriptor itself, as _plan is: two pools may each hold a type of one name
(an older and a newer schema), and one's plan read over the other's bytes could pass what
the walk refuses."""


def _wire_plan(descriptor: Descriptor) -> WirePlan | None:
    """The C core's plan of a message type, made from the walk's own steps (_step); None for
    a type the core leaves to the walk (_unplanned). Built once per type (recursive types
    refer to their own plan); a plan another thread sees half built lacks fields, and the
    core declines a field its plan lacks, so a race costs time, never a verdict."""
    if descriptor in _WIRE_PLANS:
        return _WIRE_PLANS[descriptor]
    top = max((f.number for f in descriptor.fields), default=0)
    if top > MAX_PLANNED_NUMBER or any(_unplanned(f) for f in descriptor.fields):
        _WIRE_PLANS[descriptor] = None
        return None
    plan: WirePlan = [None] * (top + 1)
    _WIRE_PLANS[descriptor] = plan
    oneofs = {o.name: i for i, o in enumerate(descriptor.oneofs)}
    for f in descriptor.fields:
        step = _step(f)
        kind = _SCALARS if step is None else step.kind
        child = _wire_plan(f.message_type) if kind == _MESSAGE and f.message_type else None
        numbers = step.enum_numbers if step is not None and kind == _ENUM else None
        limit = step.limit if step is not None else MAX_STRING
        oneof = oneofs[f.containing_oneof.name] if f.containing_oneof is not None else -1
        wire = _WIRE.get(f.type, 0)
        plan[f.number] = (kind, wire, f.is_repeated, limit, child, numbers, oneof)
    return plan


def _unplanned(f: FieldDescriptor) -> bool:
    """Groups; and a proto2 string or bytes with a default, which the walk reads (and
    guards) while the field is unset, where no wire byte shows it to the core."""
    if f.type == FieldDescriptor.TYPE_GROUP:
        return True
    text = f.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
    return text and not f.is_repeated and bool(f.default_value)


CORE: ModuleType | None = compiled.load("_walkcore")
"""The C fast path in use (statements/_walkcore.c), or None: the walk here alone, with the
same results (tests run both; AFFIDAVIT_PURE_PYTHON=1 at import turns it off)."""


@dataclass
class Strings:
    """What a walk hands the secret guard, in walk order.

    ``texts``: every string but map values and the parameters (map keys included, as text);
    ``paths``: each text's field path, when the walk was asked for paths (else empty);
    ``parameters_at``: how many texts precede the parameters (-1: there are none);
    ``maps``: each map's entries, with its field path when the walk was asked for paths.
    """

    texts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    parameters_at: int = -1
    maps: list[tuple[str, dict[str, str]]] = field(default_factory=list)


class _Problem(Exception):
    """A bound broken somewhere in the walk; ``where`` is None when the walk had no paths."""

    def __init__(self, where: str | None, detail: str) -> None:
        super().__init__(detail)
        self.where = where
        self.detail = detail


def walk(message: Message, root: str, *, paths: bool = False, wire: bytes | None = None) -> Strings:
    """Every string of ``message`` (Strings); Rejection naming the field of the first field
    that is unknown, too big or an undefined enum value. ``root`` names ``message`` itself
    in errors about its own unknown fields (paths below it start from its fields' names).

    ``wire``: the bytes ``message`` was decoded from, when the caller has them (the C core
    reads them instead of serializing the message again). Any bytes that decode to
    ``message`` give the same result: the core declines whatever a decoder would normalise
    (fields out of order or seen twice, unknown fields, a wire type not the schema's)."""
    if not paths and CORE is not None:
        plan = _wire_plan(cast(Descriptor, message.DESCRIPTOR))  # the stubs' union of two kinds
        if wire is None:
            wire = message.SerializePartialToString()  # proto2: no required check
        fast = CORE.strings(wire, plan)
        if fast is not None:
            return Strings(fast[0], [], fast[1], [])  # positional: no default_factory calls
    found = Strings()
    try:
        _walk(message, _plan(message.DESCRIPTOR), "" if paths else None, found)
    except _Problem as problem:
        if problem.where is None:
            return walk(message, root, paths=True)  # the same problem, now with its path
        raise Rejection.invalid(f"{problem.where or root} {problem.detail}") from None
    return found


def _at(prefix: str | None, part: str) -> str | None:
    return None if prefix is None else prefix + part


def _walk(message: Message, steps: tuple[_Step, ...], prefix: str | None, found: Strings) -> None:
    """One message: ``prefix`` is its path and a dot (None: no paths are kept)."""
    if len(unknown_fields.UnknownFieldSet(message)):
        where = None if prefix is None else prefix[:-1]
        raise _Problem(
            where, "has fields this log's schema does not define; upgrade or remove them"
        )
    texts = found.texts
    for step in steps:
        if step.kind == _ONEOF:
            which = message.WhichOneof(step.name)
            if which is None or step.members is None or which not in step.members:
                continue  # none set, or a scalar (no step: nothing to bound or guard)
            step = step.members[which]
        name = step.name
        if step.kind == _STRING:
            value = getattr(message, name)
            if not value:
                continue
            if step.repeated:
                _count(value, prefix, name)
                for i, item in enumerate(value):
                    if len(item) > step.limit:
                        raise _Problem(_at(prefix, f"{name}[{i}]"), _characters(item, step.limit))
                if prefix is not None:
                    found.paths += (f"{prefix}{name}[{i}]" for i in range(len(value)))
                texts += value
            else:
                if len(value) > step.limit:
                    raise _Problem(_at(prefix, name), _characters(value, step.limit))
                if prefix is not None:
                    found.paths.append(prefix + name)
                texts.append(value)
        elif step.kind == _MESSAGE:
            if step.repeated:
                items = getattr(message, name)
                _count(items, prefix, name)
                plan = _plan(step.message)
                for i, item in enumerate(items):
                    child = None if prefix is None else f"{prefix}{name}[{i}]."
                    _walk(item, plan, child, found)
            elif message.HasField(name):
                plan = _plan(step.message)
                child = None if prefix is None else f"{prefix}{name}."
                _walk(getattr(message, name), plan, child, found)
        else:
            value = getattr(message, name)
            if value:
                _other(step, value, prefix, found)


def _other(step: _Step, value: Any, prefix: str | None, found: Strings) -> None:
    """A set field that is neither a string nor a message."""
    kind, name, repeated = step.kind, step.name, step.repeated
    if kind == _PARAMETERS:
        if len(value) > step.limit:
            raise _Problem(_at(prefix, name), _characters(value, step.limit))
        found.parameters_at = len(found.texts)
    elif kind == _ENUM:
        numbers = step.enum_numbers
        if repeated:
            _count(value, prefix, name)
            if not numbers.issuperset(value):
                i, item = next((i, v) for i, v in enumerate(value) if v not in numbers)
                raise _Problem(_at(prefix, f"{name}[{i}]"), _undefined(item, step.enum_name))
        elif value not in numbers:
            raise _Problem(_at(prefix, name), _undefined(value, step.enum_name))
    elif kind == _BYTES:
        items = value if repeated else [value]
        if repeated:
            _count(value, prefix, name)
        for i, item in enumerate(items):
            if len(item) > step.limit:
                where = _at(prefix, f"{name}[{i}]" if repeated else name)
                raise _Problem(where, f"is {len(item)} bytes; at most {step.limit}")
    elif kind == _MAP:
        _map(value, prefix, name, found)
    elif kind == _SCALARS:
        _count(value, prefix, name)


def _map(entries: dict[str, str], prefix: str | None, name: str, found: Strings) -> None:
    """A map<string, string>: each key as text, the entries for the guard to read together,
    in key order. protobuf iterates a map in an order of its own, seeded per process: walked
    so, a token split across two values would be found by one process (the log's) and not by
    another (an auditor's), and the first problem named would differ."""
    if len(entries) > MAX_ATTRIBUTES:
        where = _at(prefix, name)
        raise _Problem(where, f"has {len(entries)} entries; at most {MAX_ATTRIBUTES}")
    entries = dict(sorted(entries.items()))
    for k, v in entries.items():
        if len(k) > MAX_STRING:
            raise _Problem(_at(prefix, f"{name}.key"), _characters(k, MAX_STRING))
        if prefix is not None:
            found.paths.append(f"{prefix}{name}.key")
        found.texts.append(k)
        if len(v) > MAX_STRING:
            raise _Problem(_at(prefix, f"{name}[{k!r}]"), _characters(v, MAX_STRING))
    found.maps.append(("" if prefix is None else prefix + name, entries))


def _count(items: object, prefix: str | None, name: str) -> None:
    count = len(items)  # type: ignore[arg-type]
    if count > MAX_REPEATED:
        raise _Problem(_at(prefix, name), f"has {count} items; at most {MAX_REPEATED}")


def _characters(text: str, limit: int) -> str:
    return f"is {len(text)} characters; at most {limit}"


def _undefined(value: int, enum_name: str) -> str:
    return f"is {value}, which {enum_name} does not define"
