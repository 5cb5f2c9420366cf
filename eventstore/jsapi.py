"""A thin JSON client for the JetStream API subjects (``$JS.API.*``).

We speak the API directly for stream settings newer than nats-py's models
(``allow_atomic``, ``allow_batched``) and to keep error codes intact.
"""

from __future__ import annotations

import json
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from eventstore.errors import EventStoreError, JetStreamUnavailableError


class JetStreamApiError(EventStoreError):
    """The JetStream API answered with an error."""

    def __init__(self, subject: str, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{subject}: {description} (code {code}, err_code {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description


ERR_STREAM_NOT_FOUND = 10059


async def raw_api_request(
    nc: NatsClient, subject: str, body: dict[str, Any] | None = None, *, timeout: float = 5.0
) -> Msg:
    """Send one API request and return the answer as it came (a direct get answers with
    the message itself), raising when JetStream does not answer."""
    payload = b"" if body is None else json.dumps(body).encode()
    try:
        return await nc.request(subject, payload, timeout=timeout)
    except NoRespondersError as exc:
        raise JetStreamUnavailableError(
            "JetStream is not enabled on this server or account (no responders on "
            f"{subject}); start nats-server with -js"
        ) from exc
    except NatsTimeoutError as exc:
        raise JetStreamUnavailableError(
            f"JetStream API {subject} did not answer within {timeout}s"
        ) from exc


async def api_request(
    nc: NatsClient, subject: str, body: dict[str, Any] | None = None, *, timeout: float = 5.0
) -> dict[str, Any]:
    """Send one API request and return the decoded answer, raising on an error answer."""
    reply = await raw_api_request(nc, subject, body, timeout=timeout)
    answer: dict[str, Any] = json.loads(reply.data)
    error = answer.get("error")
    if isinstance(error, dict):
        raise JetStreamApiError(
            subject,
            int(error.get("code", 0)),
            int(error.get("err_code", 0)),
            str(error.get("description", "unknown error")),
        )
    return answer


__all__ = ["ERR_STREAM_NOT_FOUND", "JetStreamApiError", "api_request", "raw_api_request"]
