"""The Log service's interceptor: malformed requests and unexpected failures answered with a
status a person can act on, never gRPC's generic UNKNOWN."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from affidavit.server.errors import Context, abort, invalid, storage_refusal
from google.protobuf.message import DecodeError


class StrictRequests(grpc.aio.ServerInterceptor):
    """Requests to the Log service that are not valid protobuf get INVALID_ARGUMENT with a
    message saying so, instead of gRPC's generic failure (the handlers decode, not gRPC); and
    no exception escapes a handler as UNKNOWN: storage faults get their status (DATA_LOSS,
    RESOURCE_EXHAUSTED, ...), anything else INTERNAL (see storage_refusal)."""

    def __init__(self) -> None:
        # Each method's handler as this interceptor answers it, made once: a server's
        # handlers are fixed once it starts, and wrapping them per call cost every read
        # its closures, a namedtuple copy and a context manager. So this interceptor must be
        # the server's last: the handler one after it gave for one call would serve them all.
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        try:
            return self._handlers[method]
        except KeyError:
            pass
        handler = _strict(method, await continuation(details))
        if handler is not None:  # an unknown method's None is not kept: names are unbounded
            self._handlers[method] = handler
        return handler


def _strict(
    method: str, handler: grpc.RpcMethodHandler[Any, Any] | None
) -> grpc.RpcMethodHandler[Any, Any] | None:
    """handler answering as StrictRequests says, for a Log method; any other as it is."""
    decode = getattr(handler, "request_deserializer", None)
    if handler is None or decode is None or not method.startswith("/affidavit.v1.Log/"):
        return handler

    async def malformed(context: Context) -> NoReturn:
        await abort(context, invalid(f"the request to {method} is not a valid protobuf message"))

    async def requests(raws: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
        async for raw in raws:
            try:
                message = decode(raw)
            except DecodeError:
                await malformed(context)
            yield message

    h: Any = handler
    if h.unary_unary is not None:

        async def unary_unary(raw: bytes, context: Context) -> Any:
            try:
                try:
                    request = decode(raw)
                except DecodeError:
                    await malformed(context)
                return await h.unary_unary(request, context)
            except Exception as e:  # not through _answered: a context manager a call costs
                await _refuse(context, e)

        return h._replace(request_deserializer=None, unary_unary=unary_unary)  # type: ignore[no-any-return]
    if h.unary_stream is not None:

        async def unary_stream(raw: bytes, context: Context) -> AsyncIterator[Any]:
            async with _answered(context):
                try:
                    request = decode(raw)
                except DecodeError:
                    await malformed(context)
                async for item in h.unary_stream(request, context):
                    yield item

        return h._replace(request_deserializer=None, unary_stream=unary_stream)  # type: ignore[no-any-return]
    if h.stream_stream is not None:

        async def stream_stream(raws: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
            async with _answered(context):
                async for item in h.stream_stream(requests(raws, context), context):
                    yield item

        return h._replace(request_deserializer=None, stream_stream=stream_stream)  # type: ignore[no-any-return]
    return handler


@contextlib.asynccontextmanager
async def _answered(context: Context) -> AsyncIterator[None]:
    """A handler's failure as a status (see storage_refusal); an abort passes through."""
    try:
        yield
    except Exception as e:
        await _refuse(context, e)


async def _refuse(context: Context, e: Exception) -> NoReturn:
    """Answer a handler's failure e as a status (see storage_refusal); an abort passes."""
    if isinstance(e, grpc.aio.AbortError):
        raise e
    await abort(context, storage_refusal(e))
