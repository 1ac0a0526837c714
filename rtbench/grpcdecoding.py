"""gRPC services that decode their own requests, so malformed bytes get a clear status.

grpcio's generated servicers let the framework decode each request; bytes that are
not the method's message then end the call with UNKNOWN and a traceback in the
server's log, which is what a port scanner or a client of the wrong version would
see. ``decoding_handler`` builds the generic handler of a service from its
descriptor instead: every request arrives as raw bytes, is decoded here, and a
``DecodeError`` ends the call with INVALID_ARGUMENT and a message the caller chose
(the collector names the message type; the simulated containerd words it as
containerd does). Unary-unary and unary-stream methods are supported; a
unary-stream behaviour may be an async generator or write through ``context``.
Nothing here raises; errors reach the client as statuses.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

__all__ = ["decoding_handler", "only_service"]

Describe = Callable[[type[Message], bytes, DecodeError], str]


def _default_describe(kind: type[Message], raw: bytes, exc: DecodeError) -> str:
    return f"malformed {kind.DESCRIPTOR.name} ({len(raw)} bytes): {exc}"


def only_service(module: Any) -> ServiceDescriptor:
    """The one service a generated ``*_pb2`` module declares."""
    (service,) = module.DESCRIPTOR.services_by_name.values()
    return service  # type: ignore[no-any-return]


async def _decoded(raw: bytes, kind: type[Message], context: Any, describe: Describe) -> Message:
    try:
        return kind.FromString(raw)
    except DecodeError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, describe(kind, raw, exc))
        raise  # not reached: abort raises


def decoding_handler(
    servicer: Any, service: ServiceDescriptor, describe: Describe = _default_describe
) -> Any:
    """The generic RPC handler of ``service``, calling ``servicer``'s method of each name
    with the decoded request; ``describe`` words the INVALID_ARGUMENT message. Methods
    the servicer does not define are left out, so callers get UNIMPLEMENTED."""
    handlers = {}
    for method in service.methods:
        kind = message_factory.GetMessageClass(method.input_type)
        serialize = message_factory.GetMessageClass(method.output_type).SerializeToString
        behavior: Callable[..., Any] | None = getattr(servicer, method.name, None)
        if behavior is None:
            continue
        if method.client_streaming:
            raise ValueError(f"{service.full_name}.{method.name}: client streaming is not handled")
        if method.server_streaming and inspect.isasyncgenfunction(behavior):

            async def stream(
                raw: bytes, context: Any, fn: Any = behavior, kind: Any = kind
            ) -> AsyncIterator[Any]:
                async for item in fn(await _decoded(raw, kind, context, describe), context):
                    yield item

            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=None, response_serializer=serialize
            )
            continue

        async def call(raw: bytes, context: Any, fn: Any = behavior, kind: Any = kind) -> Any:
            return await fn(await _decoded(raw, kind, context, describe), context)

        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(call, request_deserializer=None, response_serializer=serialize)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
