"""Publishing one event with its JetStream guarantees: ``Nats-Msg-Id`` dedupe (G3),
optimistic concurrency on the subject, and retries across timeouts and reconnects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import NamedTuple

from nats.aio.client import Client as NatsClient
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError
from nats.errors import TimeoutError as NatsTimeoutError

from eventstore.errors import AppendError, ConcurrencyError, EventTooLargeError
from eventstore.settings import StoreSettings
from eventstore.types import AppendResult

log = logging.getLogger(__name__)

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_MESSAGE_TOO_LARGE = 10054
_LAST_SEQ_RE = re.compile(r"wrong last sequence: (\d+)")

RETRYABLE = (NatsTimeoutError, NoRespondersError, OutboundBufferLimitError, asyncio.TimeoutError)


class Outgoing(NamedTuple):
    """An event ready for the wire: its id, subject and encoded body (one per event on the
    bulk path, hence a NamedTuple)."""

    event_id: str
    subject: str
    body: bytes


def parse_pub_ack(outgoing: Outgoing, data: bytes, expected: int | None) -> AppendResult:
    """Turn a publish acknowledgement into a result, raising for refusals."""
    try:
        ack = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AppendError(
            outgoing.event_id, f"unreadable publish acknowledgement {data[:80]!r}"
        ) from exc
    error = ack.get("error") if isinstance(ack, dict) else None
    if isinstance(error, dict):
        err_code = int(error.get("err_code", 0))
        description = str(error.get("description", "refused"))
        if err_code == ERR_WRONG_LAST_SEQUENCE and expected is not None:
            match = _LAST_SEQ_RE.search(description)
            actual = int(match.group(1)) if match else None
            raise ConcurrencyError(outgoing.subject, expected, actual)
        raise AppendError(outgoing.event_id, description, err_code)
    if not isinstance(ack, dict) or "seq" not in ack:
        raise AppendError(outgoing.event_id, f"unexpected acknowledgement {data[:80]!r}")
    return AppendResult(
        event_id=outgoing.event_id,
        subject=outgoing.subject,
        seq=int(ack["seq"]),
        duplicate=bool(ack.get("duplicate", False)),
    )


async def publish_one(
    nc: NatsClient,
    outgoing: Outgoing,
    settings: StoreSettings,
    expected_last_subject_seq: int | None = None,
) -> AppendResult:
    """Publish and wait for the acknowledgement, retrying while the outcome is unknown.

    Retrying is safe because the id is sent as ``Nats-Msg-Id``: if an earlier attempt was
    stored, the server answers ``duplicate`` instead of storing it again.
    """
    if len(outgoing.body) > settings.max_msg_size:
        raise EventTooLargeError(
            outgoing.event_id,
            f"{len(outgoing.body)} bytes exceeds the {settings.max_msg_size}-byte event limit; "
            "put large content in the Object Store and reference it",
        )
    headers = {MSG_ID: outgoing.event_id}
    if expected_last_subject_seq is not None:
        headers[EXPECTED_LAST_SUBJECT_SEQ] = str(expected_last_subject_seq)
    delay = settings.append_retry_backoff
    last_problem = "no attempt made"
    for attempt in range(settings.append_retries + 1):
        if nc.is_closed:
            raise AppendError(outgoing.event_id, "the NATS connection is closed")
        try:
            reply = await nc.request(
                outgoing.subject, outgoing.body, timeout=settings.request_timeout, headers=headers
            )
        except RETRYABLE as exc:
            last_problem = type(exc).__name__
            log.debug("append %s attempt %d: %s", outgoing.event_id, attempt + 1, last_problem)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.request_timeout)
            continue
        except ConnectionClosedError as exc:
            raise AppendError(outgoing.event_id, "the NATS connection is closed") from exc
        return parse_pub_ack(outgoing, reply.data, expected_last_subject_seq)
    raise AppendError(
        outgoing.event_id,
        f"no acknowledgement after {settings.append_retries + 1} attempts ({last_problem}); "
        "the event may or may not be stored: retry with the same id",
    )


async def publish_one_result(
    nc: NatsClient, outgoing: Outgoing, settings: StoreSettings
) -> AppendResult:
    """Like :func:`publish_one`, but a refusal becomes ``AppendResult.error``."""
    try:
        return await publish_one(nc, outgoing, settings)
    except AppendError as exc:
        return AppendResult(outgoing.event_id, outgoing.subject, error=exc.reason)


__all__ = ["MSG_ID", "Outgoing", "parse_pub_ack", "publish_one", "publish_one_result"]
