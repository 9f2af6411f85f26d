"""gRPC server reflection under both of its names: grpc.reflection.v1 (what current grpcurl,
Postman and grpcui ask for) and grpc.reflection.v1alpha (older tools).

grpcio-reflection ships only v1alpha. The v1 protocol is the same messages, field for field, in
a package of another name, so one servicer answers both: v1 requests decode with the v1alpha
message classes (the wire format has no package names in it), and the v1 file descriptor —
v1alpha's with its package renamed — is added to the descriptor pool so that describing the v1
service itself works too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA: Final = "grpc.reflection.v1alpha"
V1: Final = "grpc.reflection.v1"
SERVICE_NAME_V1: Final = f"{V1}.ServerReflection"


def _add_v1_descriptor() -> None:
    """Put grpc/reflection/v1/reflection.proto in the default pool (once): v1alpha's file with
    every name moved to the v1 package."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("grpc/reflection/v1/reflection.proto")
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = V1
    for message in proto.message_type:
        for field in message.field:
            if field.type_name:  # a message field (setting it on a scalar would break it)
                field.type_name = field.type_name.replace(f".{V1ALPHA}.", f".{V1}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{V1ALPHA}.", f".{V1}.")
            method.output_type = method.output_type.replace(f".{V1ALPHA}.", f".{V1}.")
    pool.Add(proto)


def enable(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection (v1 and v1alpha) listing service_names and the reflection services."""
    _add_v1_descriptor()
    names = (*service_names, reflection.SERVICE_NAME, SERVICE_NAME_V1)
    servicer = reflection.aio.ReflectionServicer(names)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                reflection.SERVICE_NAME, {"ServerReflectionInfo": info}
            ),
            grpc.method_handlers_generic_handler(SERVICE_NAME_V1, {"ServerReflectionInfo": info}),
        )
    )
