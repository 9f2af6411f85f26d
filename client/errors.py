"""What the client raises: one type per kind of failure."""

from __future__ import annotations


class ClientError(Exception):
    """Base of the client's errors."""


class VerificationError(ClientError):
    """Something the log sent does not verify: a signature, a proof, consistency with what this
    client trusted before. The log may be lying or forked; never carry on past this."""


class RefusedError(ClientError):
    """The log refused the request; code is the gRPC status name, message the log's reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class UnavailableError(ClientError):
    """The log could not be reached (after retries)."""
