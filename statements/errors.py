"""Why a statement is refused: one error type, carrying a gRPC status name and a message.

The status names are gRPC's (google.rpc.Code), kept as text so this package needs no gRPC. A
refusal of a well-formed statement (one that got past the schema) also carries a reason code:
those are the attempts the log records (statements.refusals); a malformed one has none.
"""

from __future__ import annotations


class Rejection(Exception):
    """A statement the log refuses. message names the field and rule, never a secret value."""

    def __init__(self, code: str, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason

    @classmethod
    def invalid(cls, message: str, reason: str = "") -> Rejection:
        """Malformed: the statement itself is wrong (INVALID_ARGUMENT)."""
        return cls("INVALID_ARGUMENT", message, reason)

    @classmethod
    def precondition(cls, message: str, reason: str = "") -> Rejection:
        """Well-formed but not valid at this point of the log (FAILED_PRECONDITION)."""
        return cls("FAILED_PRECONDITION", message, reason)

    @classmethod
    def unauthenticated(cls, message: str, reason: str = "") -> Rejection:
        return cls("UNAUTHENTICATED", message, reason)

    @classmethod
    def denied(cls, message: str, reason: str = "") -> Rejection:
        return cls("PERMISSION_DENIED", message, reason)

    @classmethod
    def exists(cls, message: str, reason: str = "") -> Rejection:
        return cls("ALREADY_EXISTS", message, reason)
