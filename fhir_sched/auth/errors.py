"""OAuth 2.0 error responses (RFC 6749 section 5.2) as one exception type."""

from __future__ import annotations

from typing import Any


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}


def invalid_client(description: str) -> OAuthError:
    # 400, not 401: the client authenticated in the body, not with an Authorization header
    return OAuthError("invalid_client", description)


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)
