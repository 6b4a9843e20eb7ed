"""gRPC server reflection in both protocols: ``grpc.reflection.v1`` (what grpcurl,
grpc_cli, Postman and other current tools ask for first) and ``grpc.reflection.v1alpha``
(older tools).

grpcio-reflection serves v1alpha only. The two protocols have the same messages, field
for field, under another package name, so v1 is the same servicer behind v1's method
path; v1's file descriptor, derived from v1alpha's, is added to the descriptor pool so
that reflection can describe itself under both names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool

from ridgeline_core.errors import MissingDependencyError

__all__ = ["V1_SERVICE", "enable_reflection", "v1_descriptor"]

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_V1ALPHA_PREFIX, _V1_PREFIX = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."


def _reflection() -> Any:
    try:
        from grpc_reflection.v1alpha import reflection
    except ImportError:
        raise MissingDependencyError.for_module("grpcio-reflection", "broker") from None
    return reflection


def v1_descriptor() -> Any:
    """The v1 protocol's file descriptor in the default pool (added on first use)."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(_V1_FILE)
    except KeyError:
        pass
    from grpc_reflection.v1alpha import reflection_pb2

    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = _V1_FILE, _V1_PREFIX.strip(".")
    proto.ClearField("options")  # v1alpha's: deprecated, its Java and Go packages
    for message in proto.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = field.type_name.replace(_V1ALPHA_PREFIX, _V1_PREFIX)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(_V1ALPHA_PREFIX, _V1_PREFIX)
            method.output_type = method.output_type.replace(_V1ALPHA_PREFIX, _V1_PREFIX)
    return pool.AddSerializedFile(proto.SerializeToString())


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection for ``service_names`` (and itself) in both protocols."""
    reflection = _reflection()
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    v1_descriptor()
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, handlers),))
    server.add_registered_method_handlers(V1_SERVICE, handlers)
