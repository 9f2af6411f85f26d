"""The planned schema walk (statements.schema_walk) finds exactly what a walk field by field
finds: the same first problem with the same message, else the same strings in the same order,
with the same paths, the same maps and the parameters at the same place.

The reference below is the straightforward walk (ListFields, every path formatted as it goes),
kept here only as the specification the planned one must match, on statements of every kind
mutated at random: strings set in any field (oversize ones too), items added to repeated
fields and maps, enum values the schema does not define, unknown fields at any depth. Each
runs with the walk's C fast path (statements/_walkcore.c) and without it; and the fast path
itself, on wire bytes mutated at random, either finds what the walk finds or declines.
"""

from __future__ import annotations

from typing import Any

import pytest
from affidavit.proto import affidavit_pb2 as pb
from affidavit.statements import _walkcore, schema_walk
from affidavit.statements.errors import Rejection
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, unknown_fields
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as hs

from tests.c_cores import skip_if_c_cores_off
from tests.statement_world import KINDS, base

Walked = tuple[list[tuple[str, str]], list[tuple[str, dict[str, str]]], int]


@pytest.fixture(params=["c", "pure-python"], autouse=True)
def walk_core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with the C fast path of the walk and without it."""
    if request.param == "c":
        skip_if_c_cores_off()
        assert schema_walk.CORE is not None, "the C core is built by pip install -e ."
    else:
        monkeypatch.setattr(schema_walk, "CORE", None)
    return str(request.param)


def reference_walk(message: Message, path: str = "") -> Walked:
    """(path, text) of every string but map values and the parameters; each map's path and
    entries; how many strings precede the parameters (-1: none). Rejection as the walk's."""
    texts: list[tuple[str, str]] = []
    maps: list[tuple[str, dict[str, str]]] = []
    at = [-1]
    _reference(message, path, texts, maps, at)
    return texts, maps, at[0]


def _reference(
    message: Message,
    path: str,
    texts: list[tuple[str, str]],
    maps: list[tuple[str, dict[str, str]]],
    at: list[int],
) -> None:
    if len(unknown_fields.UnknownFieldSet(message)):
        raise Rejection.invalid(
            f"{path or 'statement'} has fields this log's schema does not define; "
            "upgrade or remove them"
        )
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if len(value) > schema_walk.MAX_ATTRIBUTES:
                raise Rejection.invalid(
                    f"{name} has {len(value)} entries; at most {schema_walk.MAX_ATTRIBUTES}"
                )
            entries = dict(sorted(value.items()))  # key order: protobuf's is per process
            for k, v in entries.items():
                _length(f"{name}.key", k, schema_walk.MAX_STRING)
                texts.append((f"{name}.key", k))
                _length(f"{name}[{k!r}]", v, schema_walk.MAX_STRING)
            maps.append((name, entries))
            continue
        repeated = field.is_repeated
        items = value if repeated else [value]
        if repeated and len(items) > schema_walk.MAX_REPEATED:
            raise Rejection.invalid(
                f"{name} has {len(items)} items; at most {schema_walk.MAX_REPEATED}"
            )
        for i, item in enumerate(items):
            item_path = f"{name}[{i}]" if repeated else name
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                _reference(item, item_path, texts, maps, at)
            elif field.type == FieldDescriptor.TYPE_STRING:
                limit = schema_walk.LONG_STRINGS.get(field.name, schema_walk.MAX_STRING)
                _length(item_path, item, limit)
                if field.full_name == schema_walk.PARAMETERS:
                    at[0] = len(texts)
                else:
                    texts.append((item_path, item))
            elif field.type == FieldDescriptor.TYPE_BYTES and len(item) > schema_walk.MAX_STRING:
                raise Rejection.invalid(
                    f"{item_path} is {len(item)} bytes; at most {schema_walk.MAX_STRING}"
                )
            elif field.type == FieldDescriptor.TYPE_ENUM:
                enum = field.enum_type
                assert enum is not None
                if item not in enum.values_by_number:
                    raise Rejection.invalid(
                        f"{item_path} is {item}, which {enum.name} does not define"
                    )


def _length(path: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise Rejection.invalid(f"{path} is {len(text)} characters; at most {limit}")


def _outcome(walk: Any) -> object:
    try:
        return walk()
    except Rejection as e:
        return ("rejected", e.message)


def planned(message: Message) -> Walked:
    found = schema_walk.walk(message, "statement", paths=True)
    assert len(found.paths) == len(found.texts)
    return list(zip(found.paths, found.texts, strict=True)), found.maps, found.parameters_at


def _strings_of(message: Message) -> list[tuple[Message, Any]]:
    """Every string field (its descriptor) of the message and of its set submessages."""
    out: list[tuple[Message, Any]] = []
    for f in message.DESCRIPTOR.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            out.append((message, f))
        elif (
            f.type == FieldDescriptor.TYPE_MESSAGE
            and not f.is_repeated
            and message.HasField(f.name)
        ):
            out += _strings_of(getattr(message, f.name))
    return out


_TEXT = hs.one_of(
    hs.sampled_from(["", "x", "a" * 1025, "j" * 4097, "main", "ghp_x", "repo:acme/web"]),
    hs.text(max_size=20),
)
_MUTATION = hs.tuples(hs.integers(0, 6), hs.integers(0, 10_000), _TEXT, hs.integers(0, 99))


def mutate(st: pb.Statement, mutations: list[tuple[int, int, str, int]]) -> pb.Statement:
    for what, pick, text, number in mutations:
        fields = _strings_of(st)
        message, field = fields[pick % len(fields)]
        if what <= 2:
            if field.is_repeated:
                getattr(message, field.name).append(text)
            else:
                setattr(message, field.name, text)
        elif what == 3:
            body = st.WhichOneof("body")
            if body == "grant":
                st.grant.access.append(number % 8)  # type: ignore[arg-type]
            elif body == "action":
                st.action.phase = number % 4  # type: ignore[assignment]
            st.header.producer.assurance = number % 5  # type: ignore[assignment]
        elif what == 4 and st.WhichOneof("body") == "identity":
            st.identity.attributes[text[:40]] = text
        elif what == 5 and st.WhichOneof("body") == "grant":
            st.grant.tools.extend(["t"] * (number % 70))
        elif what == 6:
            # an unknown field: on the statement, or inside the header
            target = st if number % 2 else st.header
            raw = target.SerializeToString() + bytes([0xF8, 0x3E, number % 100])
            target.ParseFromString(raw)
    return st


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=hs.sampled_from(KINDS), mutations=hs.lists(_MUTATION, max_size=4), decoded=hs.booleans()
)
def test_the_planned_walk_matches_the_walk_field_by_field(
    kind: str, mutations: list[tuple[int, int, str, int]], decoded: bool
) -> None:
    st = mutate(base(kind), mutations)
    if decoded:  # as the log sees it: parsed from the signed bytes
        st = pb.Statement.FromString(st.SerializeToString())
    expected = _outcome(lambda: reference_walk(st))
    event("rejected" if isinstance(expected, tuple) and expected[0] == "rejected" else "walked")
    assert _outcome(lambda: planned(st)) == expected
    # Without paths the walk finds the same problem, or the same strings.
    fast = _outcome(lambda: schema_walk.walk(st, "statement"))
    if isinstance(fast, schema_walk.Strings):
        assert fast.texts == [t for _, t in planned(st)[0]]
    else:
        assert fast == expected


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_walked_like_the_reference(kind: str) -> None:
    st = base(kind)
    assert planned(st) == reference_walk(st)


def python_walk(message: Message) -> object:
    """The walk without the C core: its strings and parameters' place, or its Rejection."""
    core, schema_walk.CORE = schema_walk.CORE, None
    try:
        found = _outcome(lambda: schema_walk.walk(message, "statement"))
    finally:
        schema_walk.CORE = core
    if isinstance(found, schema_walk.Strings):
        return found.texts, found.parameters_at, bool(found.maps)
    return found


_WIRE_EDIT = hs.tuples(hs.integers(0, 5), hs.integers(0, 10_000), hs.binary(max_size=6))


def edit_wire(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Byte-level edits that a decoder may still accept: fields repeated, moved out of order,
    bytes inserted, replaced or cut, a truncated tail."""
    for what, at, blob in edits:
        at %= len(data) + 1
        if what == 0:
            data = data[:at] + blob + data[at:]
        elif what == 1:
            data = data[:at] + blob + data[at + len(blob) :]
        elif what == 2:
            data = data[:at] + data[at + len(blob) + 1 :]
        elif what == 3:
            data = data + data[at:]  # a tail again: fields seen twice, out of order
        elif what == 4:
            data = data[at:] + data[:at]
        else:
            data = data[:at]
    return data


@settings(
    max_examples=600,
    deadline=None,
    # walk_core only says which run this is; nothing in it changes between examples.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    kind=hs.sampled_from(KINDS),
    mutations=hs.lists(_MUTATION, max_size=3),
    edits=hs.lists(_WIRE_EDIT, max_size=3),
)
def test_the_fast_path_finds_what_the_walk_finds_or_declines(
    walk_core: str, kind: str, mutations: list[tuple[int, int, str, int]], edits: list[Any]
) -> None:
    if walk_core != "c":
        return  # the fast path itself, called directly: once is enough
    data = edit_wire(mutate(base(kind), mutations).SerializeToString(), edits)
    try:
        st = pb.Statement.FromString(data)
    except DecodeError:
        event("does not decode")
        return
    # On the bytes as they came (any order, anything repeated) and as a message serializes.
    for wire in (data, st.SerializeToString()):
        fast = _walkcore.strings(wire, schema_walk._wire_plan(st.DESCRIPTOR))
        expected = python_walk(st)
        if fast is None:
            event("declined")
            continue
        event("found")
        assert expected == (fast[0], fast[1], False)
    # walk(..., wire=) as schema.check calls it, on the bytes the statement was decoded from.
    walked = _outcome(lambda: schema_walk.walk(st, "statement", wire=data))
    if isinstance(walked, schema_walk.Strings):
        walked = walked.texts, walked.parameters_at, bool(walked.maps)
    assert walked == python_walk(st)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "identity"])
def test_the_fast_path_reads_every_clean_kind(kind: str) -> None:
    # An identity's attributes (a map) are left to the walk; every other kind is read in C.
    st = base(kind)
    fast = _walkcore.strings(st.SerializeToString(), schema_walk._wire_plan(st.DESCRIPTOR))
    assert fast is not None
    assert python_walk(st) == (fast[0], fast[1], False)


def test_a_scalar_member_of_a_oneof_is_walked_past() -> None:
    # A oneof whose set member is a plain scalar has no step of its own: the walk once looked
    # it up anyway (KeyError) where the core answered.
    request = pb.GetInclusionProofRequest(index=5, tree_size=9)
    found = schema_walk.walk(request, "request")
    assert (found.texts, found.parameters_at) == ([], -1)
    fast = _walkcore.strings(
        request.SerializeToString(), schema_walk._wire_plan(request.DESCRIPTOR)
    )
    assert fast == ([], -1)
    assert python_walk(request) == ([], -1, False)


def test_a_closed_enum_zero_it_does_not_define_is_refused() -> None:
    # proto2 enums are closed: FieldDescriptorProto.Type starts at 1, so a 0 on the wire is kept
    # as an unknown field, which re-serializes as `type = 0`. The core once skipped the check
    # of a zero enum (proto3 always defines 0) and read the message as clean.
    field = descriptor_pb2.FieldDescriptorProto.FromString(b"\x0a\x01n\x28\x00")
    assert len(unknown_fields.UnknownFieldSet(field)) == 1
    plan = schema_walk._wire_plan(field.DESCRIPTOR)
    assert _walkcore.strings(field.SerializeToString(), plan) is None
    with pytest.raises(Rejection, match="field has fields this log's schema does not define"):
        schema_walk.walk(field, "field")


def test_the_core_bounds_repeated_fields_as_the_walk_does() -> None:
    # The core's one bound of its own: were it above the walk's, it would read as clean a
    # statement the walk refuses.
    assert _walkcore.MAX_REPEATED == schema_walk.MAX_REPEATED


def _one_field_type(field_type: int) -> Any:
    """A message class t.M { <field_type> x = 1; } in a pool of its own (E: 0 and 1)."""
    fdp = descriptor_pb2.FileDescriptorProto(name="t.proto", package="t", syntax="proto3")
    enum = fdp.enum_type.add(name="E")
    enum.value.add(name="Z", number=0)
    enum.value.add(name="A", number=1)
    field = fdp.message_type.add(name="M").field.add(name="x", number=1, type=field_type)
    field.label = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    if field_type == descriptor_pb2.FieldDescriptorProto.TYPE_ENUM:
        field.type_name = ".t.E"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.M"))


def test_two_types_of_one_name_each_have_their_own_plan() -> None:
    # Plans were once kept by type name: the int32 type's plan, read over the enum type's
    # bytes, found no enum to check and passed a value the walk refuses.
    older = _one_field_type(descriptor_pb2.FieldDescriptorProto.TYPE_INT32)
    newer = _one_field_type(descriptor_pb2.FieldDescriptorProto.TYPE_ENUM)
    assert schema_walk.walk(older(x=7), "m").texts == []
    with pytest.raises(Rejection, match="x is 7, which E does not define"):
        schema_walk.walk(newer.FromString(b"\x08\x07"), "m")


def test_a_proto2_string_default_is_left_to_the_walk() -> None:
    # The walk reads an unset proto2 string as its default (and so guards it); no wire byte
    # shows it, so the core, which once answered without it, leaves such a type to the walk.
    fdp = descriptor_pb2.FileDescriptorProto(name="p2.proto", package="p2", syntax="proto2")
    fdp.message_type.add(name="M").field.add(
        name="s",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        default_value="ghp_default",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    descriptor = pool.FindMessageTypeByName("p2.M")
    message = message_factory.GetMessageClass(descriptor)()
    assert schema_walk._wire_plan(descriptor) is None
    assert schema_walk.walk(message, "m").texts == ["ghp_default"]


def test_a_proto2_message_missing_a_required_field_is_walked() -> None:
    # The core reads the message's bytes; serializing them once raised EncodeError for an
    # unset proto2 required field, where the walk has nothing to refuse.
    part = descriptor_pb2.UninterpretedOption.NamePart(name_part="x")
    assert not part.IsInitialized()
    assert schema_walk.walk(part, "part").texts == ["x"]


@pytest.mark.parametrize("number", [3, schema_walk.MAX_PLANNED_NUMBER + 1])
def test_a_plan_is_indexed_by_field_number(number: int) -> None:
    # The core's plan is a list indexed by field number: a type with a field numbered beyond
    # MAX_PLANNED_NUMBER is left to the walk, which finds the same strings.
    fdp = descriptor_pb2.FileDescriptorProto(name=f"n{number}.proto", package=f"n{number}")
    fields = fdp.message_type.add(name="M").field
    for name, at in (("a", 1), ("b", number)):
        fields.add(
            name=name,
            number=at,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    descriptor = pool.FindMessageTypeByName(f"n{number}.M")
    message = message_factory.GetMessageClass(descriptor)()
    message.a, message.b = "x", "y"  # type: ignore[attr-defined]  # a dynamic type
    plan = schema_walk._wire_plan(descriptor)
    if number > schema_walk.MAX_PLANNED_NUMBER:
        assert plan is None
    else:
        assert plan is not None and len(plan) == number + 1
        wire = message.SerializeToString()
        assert _walkcore.strings(wire, plan) == (["x", "y"], -1)
        # Numbers the type lacks, in the list (2) or beyond it (4), are declined.
        assert _walkcore.strings(b"\x12\x01z" + wire, plan) is None
        assert _walkcore.strings(wire + b"\x22\x01z", plan) is None
    assert schema_walk.walk(message, "m").texts == ["x", "y"]
