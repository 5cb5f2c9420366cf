"""Errors raised by the event store. Each says what went wrong and what to do about it."""

from __future__ import annotations


class EventStoreError(Exception):
    """Base class of every error raised by :mod:`eventstore`."""


class ServerVersionError(EventStoreError):
    """The NATS server is too old (or not JetStream-enabled) for jetledger."""

    def __init__(self, found: str, required: str) -> None:
        super().__init__(
            f"nats-server {found} is too old: jetledger needs nats-server {required} or newer "
            f"(atomic batches, per-message TTL and expected-subject-sequence checks). "
            f"Upgrade the server, or run the embedded one with `jetledger server`."
        )
        self.found = found
        self.required = required


class ServerUnreachableError(EventStoreError):
    """No NATS server answered at the configured URL."""


class JetStreamUnavailableError(EventStoreError):
    """The server answered but JetStream is not enabled for this account."""


class StreamConfigError(EventStoreError):
    """The stream exists with a configuration that cannot be changed in place."""


class ConcurrencyError(EventStoreError):
    """An optimistic-concurrency check failed: the subject moved on since it was read.

    ``actual_last_seq`` is the stream sequence of the last message on the subject as the
    server saw it (``None`` when the server did not say).
    """

    def __init__(self, subject: str, expected_last_seq: int, actual_last_seq: int | None) -> None:
        actual = "unknown" if actual_last_seq is None else str(actual_last_seq)
        super().__init__(
            f"subject {subject!r}: expected last sequence {expected_last_seq}, found {actual}"
        )
        self.subject = subject
        self.expected_last_seq = expected_last_seq
        self.actual_last_seq = actual_last_seq


class AppendError(EventStoreError):
    """The server refused to store an event (not a concurrency conflict)."""

    def __init__(self, event_id: str, reason: str, code: int | None = None) -> None:
        super().__init__(f"event {event_id!r} was not stored: {reason}")
        self.event_id = event_id
        self.reason = reason
        self.code = code


class EventTooLargeError(AppendError):
    """The encoded event exceeds the stream's maximum message size."""


class SubjectError(EventStoreError, ValueError):
    """A subject or subject token cannot be built or parsed."""


class ObjectIntegrityError(EventStoreError):
    """An object read back from the Object Store does not match its recorded sha256."""
