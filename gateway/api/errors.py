"""One error body for every failure: ``{"error": {"code", "message", "details"}}``.

Routes raise :class:`ApiError` (or a subclass); FastAPI's own 404 / 405 / 422, the read
model or NATS going away (503) and anything unexpected (500) are turned into the same
body by the handlers installed with :func:`install_error_handlers`.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from eventstore.errors import EventStoreError, EventTooLargeError, SubjectError

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    500: "internal_error",
    503: "unavailable",
}
"""The default ``code`` of each status; routes use more specific codes where they can."""


class ApiError(Exception):
    """An answer other than success; ``code`` is a stable machine-readable name."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class NotFound(ApiError):
    def __init__(self, what: str, ident: str) -> None:
        super().__init__(404, "not_found", f"{what} {ident!r} not found", {what: ident})


class NatsUnavailable(ApiError):
    def __init__(self, reason: str) -> None:
        super().__init__(
            503, "nats_unavailable", f"NATS is not reachable: {reason}", {"retry": True}
        )


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        jsonable_encoder(error_body(code, message, details)), status_code=status, headers=headers
    )


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(exc.status, exc.code, exc.message, exc.details, headers)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = STATUS_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, message, None, exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    return error_response(422, "validation_error", "the request is not valid", {"errors": problems})


async def _read_model_error(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("read model unavailable: %s", exc)
    return error_response(
        503,
        "read_model_unavailable",
        f"the read-model database is not available: {type(exc).__name__}",
        {"retry": True},
    )


async def _nats_error(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("NATS unavailable: %s", exc)
    return error_response(503, "nats_unavailable", f"NATS is not available: {exc}", {"retry": True})


_DATABASE_DRIVERS = ("sqlalchemy", "asyncpg", "aiosqlite")


def _from_database_driver(exc: BaseException) -> bool:
    """Whether the traceback runs through a database driver (a refused connection to
    PostgreSQL surfaces as a bare OSError, not as a SQLAlchemy error)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return any(driver in frame.filename for frame in frames for driver in _DATABASE_DRIVERS)


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    if _from_database_driver(exc):
        return await _read_model_error(request, exc)
    log.warning("backing service unavailable: %s", exc)
    return error_response(
        503, "unavailable", f"a backing service is not reachable: {exc}", {"retry": True}
    )


async def _too_large(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(413, "payload_too_large", str(exc))


async def _bad_subject(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(400, "invalid_identifier", str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error (logged on the server)")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DBAPIError, _read_model_error)
    app.add_exception_handler(OperationalError, _read_model_error)
    app.add_exception_handler(EventStoreError, _nats_error)
    app.add_exception_handler(NatsError, _nats_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(EventTooLargeError, _too_large)
    app.add_exception_handler(SubjectError, _bad_subject)
    app.add_exception_handler(Exception, _unexpected)


__all__ = [
    "STATUS_CODES",
    "ApiError",
    "NatsUnavailable",
    "NotFound",
    "error_body",
    "error_response",
    "install_error_handlers",
]
