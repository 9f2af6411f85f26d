"""Why a statement is refused: one error type, carrying a gRPC status name and a message.

The status names are gRPC's (google.rpc.Code), kept as text so this package needs no gRPC.
"""

from __future__ import annotations


class Rejection(Exception):
    """A statement the log refuses. message names the field and rule, never a secret value."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def invalid(cls, message: str) -> Rejection:
        """Malformed: the statement itself is wrong (INVALID_ARGUMENT)."""
        return cls("INVALID_ARGUMENT", message)

    @classmethod
    def precondition(cls, message: str) -> Rejection:
        """Well-formed but not valid at this point of the log (FAILED_PRECONDITION)."""
        return cls("FAILED_PRECONDITION", message)

    @classmethod
    def unauthenticated(cls, message: str) -> Rejection:
        return cls("UNAUTHENTICATED", message)

    @classmethod
    def denied(cls, message: str) -> Rejection:
        return cls("PERMISSION_DENIED", message)

    @classmethod
    def exists(cls, message: str) -> Rejection:
        return cls("ALREADY_EXISTS", message)
