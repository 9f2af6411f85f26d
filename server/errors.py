"""The one error a request handler raises to refuse a request."""

from __future__ import annotations

import grpc


class RequestError(Exception):
    """A refused request: the gRPC status code and a message a person can act on."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
