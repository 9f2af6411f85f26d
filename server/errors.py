"""The one error a request handler raises to refuse a request, and the refusal of an entry
whose checks failed unexpectedly."""

from __future__ import annotations

import logging

import grpc
from affidavit.statements.errors import Rejection

log = logging.getLogger("affidavit.server")


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
