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


class NotFoundError(RefusedError):
    """What was asked for is not in the log: no entry at that index (yet), no entry with that
    leaf hash, no statement or action with that id. code is the gRPC status the log answered
    (NOT_FOUND or OUT_OF_RANGE), or NOT_FOUND when a search came back empty."""

    def __init__(self, message: str, code: str = "NOT_FOUND") -> None:
        super().__init__(code, message)


class NotSentError(ClientError):
    """A check made before sending stopped a statement (schema, sizes, the secret guard): the
    same rule the log applies, so the log would refuse it too; nothing was sent. code is the
    rule's reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class UnavailableError(ClientError):
    """The log could not be reached (after retries)."""


class NotAuthorisedError(ClientError):
    """The log recorded an action's INTENT but judged it not authorised (verdict OUT_OF_SCOPE
    or NO_GRANT), so under enforcement the action was not executed; its OUTCOME is recorded
    as DENIED. verdict is the Verdict name, reason the log's explanation."""

    def __init__(self, action_id: str, verdict: str, reason: str) -> None:
        super().__init__(
            f"action {action_id} not executed: the log judged it {verdict}"
            + (f" ({reason})" if reason else "")
        )
        self.action_id = action_id
        self.verdict = verdict
        self.reason = reason
