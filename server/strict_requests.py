"""The Log service's interceptor: malformed requests and unexpected failures answered with a
status a person can act on, never gRPC's generic UNKNOWN."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from affidavit.server.errors import Context, abort, invalid, storage_refusal
from google.protobuf.message import DecodeError


class StrictRequests(grpc.aio.ServerInterceptor):
    """Requests to the Log service that are not valid protobuf get INVALID_ARGUMENT with a
    message saying so, instead of gRPC's generic failure (the handlers decode, not gRPC); and
    no exception escapes a handler as UNKNOWN: storage faults get their status (DATA_LOSS,
    RESOURCE_EXHAUSTED, ...), anything else INTERNAL (see storage_refusal)."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        method = details.method
        decode = getattr(handler, "request_deserializer", None)
        if handler is None or decode is None or not method.startswith("/affidavit.v1.Log/"):
            return handler

        async def parse(raw: bytes, context: Context) -> Any:
            try:
                return decode(raw)
            except DecodeError:
                await abort(
                    context, invalid(f"the request to {method} is not a valid protobuf message")
                )

        async def requests(raws: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
            async for raw in raws:
                try:  # decoded here, not through parse: no coroutine for each message
                    message = decode(raw)
                except DecodeError:
                    message = await parse(raw, context)  # aborts
                yield message

        h: Any = handler
        if h.unary_unary is not None:

            async def unary_unary(raw: bytes, context: Context) -> Any:
                async with _answered(context):
                    return await h.unary_unary(await parse(raw, context), context)

            return h._replace(request_deserializer=None, unary_unary=unary_unary)  # type: ignore[no-any-return]
        if h.unary_stream is not None:

            async def unary_stream(raw: bytes, context: Context) -> AsyncIterator[Any]:
                async with _answered(context):
                    async for item in h.unary_stream(await parse(raw, context), context):
                        yield item

            return h._replace(request_deserializer=None, unary_stream=unary_stream)  # type: ignore[no-any-return]
        if h.stream_stream is not None:

            async def stream_stream(
                raws: AsyncIterator[bytes], context: Context
            ) -> AsyncIterator[Any]:
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
    except grpc.aio.AbortError:
        raise
    except Exception as e:
        await abort(context, storage_refusal(e))
