"""The log: event envelope and catalog, subjects, codec, and the JetStream store.

>>> from eventstore import EventStore, StoreSettings  # doctest: +SKIP
"""

from eventstore.codec import Undecodable, decode, encode
from eventstore.connection import ConnectOptions, connect
from eventstore.envelope import Event, Payload, RunEvent, SystemEvent
from eventstore.errors import (
    AppendError,
    ConcurrencyError,
    EventStoreError,
    EventTooLargeError,
    ServerUnreachableError,
    ServerVersionError,
    StreamConfigError,
    SubjectError,
)
from eventstore.settings import StoreSettings
from eventstore.store import EventStore
from eventstore.types import AppendResult, EventLog, Record

__all__ = [
    "AppendError",
    "AppendResult",
    "ConcurrencyError",
    "ConnectOptions",
    "Event",
    "EventLog",
    "EventStore",
    "EventStoreError",
    "EventTooLargeError",
    "Payload",
    "Record",
    "RunEvent",
    "ServerUnreachableError",
    "ServerVersionError",
    "StoreSettings",
    "StreamConfigError",
    "SubjectError",
    "SystemEvent",
    "Undecodable",
    "connect",
    "decode",
    "encode",
]
