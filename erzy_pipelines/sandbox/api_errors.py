"""The API's error envelope as an exception a route can raise from anywhere."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Answered as ``{"error": {"code", "message", "details"?}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


def validation_error(details: list[dict[str, str]]) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", "The request failed validation.", details)


def not_found(what: str = "Resource") -> ApiError:
    return ApiError(404, "NOT_FOUND", f"{what} not found.")
