"""The one error a request handler raises to refuse a request, how every failure becomes one
(a status a person can act on), how a handler answers with it, and the refusal of an entry
whose checks failed unexpectedly."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc
from affidavit.server.storage import ConflictError, DataLossError, DiskFullError, StorageError
from affidavit.statements.errors import Rejection

log = logging.getLogger("affidavit.server")

Context = grpc.aio.ServicerContext[Any, Any]

RETRY_AFTER_MS = 100
"""The back-off suggested to appenders when the queue is full (also sent as retry-after-ms)."""


class RequestError(Exception):
    """A refused request: the gRPC status code and a message a person can act on."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def unexpected_failure(e: Exception) -> Rejection:
    """The refusal of one entry whose checks raised something other than a Rejection (a limit
    the rules do not name, or a bug): it fails alone, logged with its traceback; its
    neighbours in a batch or stream go on."""
    if isinstance(e, RecursionError):
        return Rejection.invalid("the entry nests too deeply to be checked; flatten it")
    log.error("checking an entry failed", exc_info=e)
    return Rejection(
        "INTERNAL",
        f"the server could not check this entry ({type(e).__name__}, logged with its details); "
        "it was not appended",
    )


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def out_of_range(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.OUT_OF_RANGE, message)


def storage_refusal(e: Exception) -> RequestError:
    """A failure as a status a person can act on: storage faults by kind, anything else
    INTERNAL (logged with its traceback; the caller sees only its type)."""
    if isinstance(e, DiskFullError):
        return RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
    if isinstance(e, DataLossError):
        return RequestError(grpc.StatusCode.DATA_LOSS, str(e))
    if isinstance(e, ConflictError):
        return RequestError(grpc.StatusCode.FAILED_PRECONDITION, str(e))
    if isinstance(e, StorageError):
        return RequestError(grpc.StatusCode.UNAVAILABLE, f"{e}; retry later")
    log.error("request failed", exc_info=e)
    return RequestError(
        grpc.StatusCode.INTERNAL,
        f"the server failed ({type(e).__name__}, logged with its details); an append that "
        "fails so was not acknowledged: retry later",
    )


UNAUTHENTICATED_STATEMENT = (
    "the statement is not signed by a key registered in this log: its key is not registered "
    "(an admin registers it first), or the signature does not verify with it"
)
"""The one answer to every unauthenticated statement: which of the two it was would tell an
unauthenticated caller whether a key id is registered."""


def refusal_status(rejection: Rejection) -> RequestError:
    if rejection.code == "UNAUTHENTICATED":
        return RequestError(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_STATEMENT)
    return RequestError(grpc.StatusCode[rejection.code], rejection.message)


async def abort(context: Context, e: RequestError) -> NoReturn:
    if e.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        context.set_trailing_metadata((("retry-after-ms", str(RETRY_AFTER_MS)),))
    await context.abort(e.code, e.message)
    raise AssertionError("context.abort returns only by raising")
