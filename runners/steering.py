"""Durable steering (issue 4 §8): ``command.steer`` joins a live run's inbox.

The inbox lives in a KV bucket, never on the run's ``.out`` subject (a parked run's
``.out`` subject is appended to with an expected last sequence; nothing else may write
there). One key per item, ``<run>.m.<steer id>``, with the steer's id, sequence, content
and a state: ``queued`` until the run's end claims it as ``dropping``.

Who may touch an item, so that each steer ends exactly one way (injected, dropped, or
the start of a new run):

* the handler reads ``queued`` items and records ``steering.injected`` (its journal
  returns them again, in order, when the handler is re-invoked);
* the run's end (``close``) first writes ``<run>.closed``, then claims every item not
  injected with a compare-and-set to ``dropping``, records ``steering.dropped`` and
  deletes the keys, all before the terminal event;
* the worker that offered an item checks, after writing it, whether the run is closing
  or ended; if so it deletes its item with the revision it wrote (a compare-and-delete)
  and, if that wins, starts a new run with the steer instead. One of the two
  compare-and-sets fails, so the steer is either dropped or re-routed, never both.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from eventstore.catalog import (
    CommandAsk,
    CommandAskData,
    CommandSteer,
    SteeringDropped,
    SteeringInjected,
)
from eventstore.codec import Undecodable
from eventstore.routing import TERMINAL_TYPES
from eventstore.store import EventStore
from eventstore.subjects import encode_token, run_end_subject, session_filter

log = logging.getLogger(__name__)

INBOX_BUCKET: Final = "jl_inbox"
QUEUED: Final = "queued"
DROPPING: Final = "dropping"


@dataclass(frozen=True, slots=True)
class SteeringMessage:
    """One steering message handed to a handler."""

    steer_event_id: str
    content: Any
    """A string, or a list of content parts (dicts)."""

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = self.content or []
        return "".join(str(part.get("text", "")) for part in parts if isinstance(part, dict))


def content_json(content: Any) -> Any:
    """A command's content as JSON (parts as dicts)."""
    if content is None or isinstance(content, str):
        return content
    return [part.model_dump(mode="json", exclude_none=True) for part in content]


def steer_run_id(steer_id: str) -> str:
    """The run a steer starts when no live run takes it (deterministic: redeliveries
    of the steer find the same run)."""
    return f"run-{steer_id}"


def ask_from_steer(steer: CommandSteer) -> CommandAsk:
    """The ``command.ask`` equivalent to a steer that starts a run."""
    return CommandAsk(
        id=steer.id,
        time=steer.time,
        session_id=steer.session_id,
        run_id=steer_run_id(steer.id),
        agent_type=steer.agent_type,
        user_code=steer.user_code,
        trace_id=steer.trace_id,
        causation_id=steer.causation_id,
        data=CommandAskData(content=steer.data.content, attachments=steer.data.attachments),
    )


def _token(value: str) -> str:
    return encode_token(value).replace("~", "=")  # '~' is not a KV key character


async def inbox_kv(store: EventStore, bucket: str = INBOX_BUCKET) -> KeyValue:
    """The inbox bucket (created on first use, like the registry bucket)."""
    try:
        return await store.js.key_value(bucket)
    except BucketNotFoundError:
        return await store.js.create_key_value(
            bucket=bucket, history=1, replicas=store.settings.replicas
        )


# -- finding the run a steer joins ------------------------------------------------------


@dataclass(slots=True)
class SessionRuns:
    """What a session's log says about its runs, for routing a steer."""

    started: dict[str, str | None] = field(default_factory=dict)
    """Run id -> agent type, in order of first ``run.started``."""
    ended: set[str] = field(default_factory=set)
    handled_steers: set[str] = field(default_factory=set)
    """Steers already recorded as injected or dropped."""

    def live_run(self, agent_type: str | None, target_run_id: str | None) -> str | None:
        """The run a steer for ``agent_type`` joins: ``target_run_id`` if it is live,
        else the most recently started live run of that agent type."""
        candidates = [target_run_id] if target_run_id else list(reversed(self.started))
        for run_id in candidates:
            live = run_id in self.started and run_id not in self.ended
            if live and self.started[run_id] == agent_type:
                return run_id
        return None


async def scan_session(store: EventStore, session_id: str) -> SessionRuns:
    runs = SessionRuns()
    records = store.records(1, subject_filter=session_filter(session_id, store.settings.root))
    async with contextlib.aclosing(records):
        async for record in records:
            event = record.item
            if isinstance(event, Undecodable) or event.run_id is None:
                continue
            if event.type == "run.started":
                runs.started.setdefault(event.run_id, event.agent_type)
            elif event.type in TERMINAL_TYPES:
                runs.ended.add(event.run_id)
            elif isinstance(event, SteeringInjected | SteeringDropped):
                runs.handled_steers.add(event.data.steer_event_id)
    return runs


async def route_steer(store: EventStore, steer: CommandSteer, seq: int, *, enabled: bool) -> bool:
    """Put ``steer`` in a live run's inbox. True: it is there (or was handled before);
    False: the caller starts a new run with it (:func:`ask_from_steer`)."""
    session_id = steer.session_id or ""
    if not enabled or not session_id:
        return False
    runs = await scan_session(store, session_id)
    if steer_run_id(steer.id) in runs.started:
        return False  # a redelivered steer that started its own run: continue that run
    if steer.id in runs.handled_steers:
        return True
    target = runs.live_run(steer.agent_type, steer.data.target_run_id)
    if target is None:
        return False
    joined = await Inbox(store, session_id, target).offer(steer, seq)
    log.info("steer %s %s run %s", steer.id, "joined" if joined else "could not join", target)
    return joined


# -- one run's inbox --------------------------------------------------------------------


class Inbox:
    """The KV keys of one run's inbox."""

    def __init__(
        self, store: EventStore, session_id: str, run_id: str, bucket: str = INBOX_BUCKET
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.run_id = run_id
        self.bucket = bucket
        self.prefix = f"{_token(run_id)}.m."
        self.closed_key = f"{_token(run_id)}.closed"
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        if self._kv is None:
            self._kv = await inbox_kv(self.store, self.bucket)
        return self._kv

    async def exists(self) -> bool:
        """Whether the inbox bucket exists (without creating it, unlike :meth:`kv`): a
        system where no worker has steering enabled has none, so no run has items."""
        if self._kv is None:
            try:
                self._kv = await self.store.js.key_value(self.bucket)
            except BucketNotFoundError:
                return False
        return True

    def key(self, steer_id: str) -> str:
        return self.prefix + _token(steer_id)

    async def offer(self, steer: CommandSteer, seq: int) -> bool:
        """Write the item; False if the run turned out to be ending and the item was
        taken back (the steer then starts a new run)."""
        kv = await self.kv()
        key = self.key(steer.id)
        value = {
            "steer_event_id": steer.id,
            "seq": seq,
            "content": content_json(steer.data.content),
            "state": QUEUED,
        }
        try:
            revision = await kv.create(key, json.dumps(value).encode())
        except KeyWrongLastSequenceError:
            entry = await kv.get(key)  # a redelivered steer: the item is there already
            if entry.value is None or json.loads(entry.value).get("state") != QUEUED:
                return True
            revision = entry.revision or 0
        if not await self._closing():
            return True
        try:
            await kv.delete(key, last=revision)
        except KeyWrongLastSequenceError:
            return True  # the run's end claimed it first: it is recorded as dropped
        return False

    async def _closing(self) -> bool:
        kv = await self.kv()
        with contextlib.suppress(KeyNotFoundError, NotFoundError):
            entry = await kv.get(self.closed_key)
            if entry.value is not None:
                return True
        end = run_end_subject(self.session_id, self.run_id, self.store.settings.root)
        return await self.store.last_on_subject(end) is not None

    async def watch(self) -> KeyValue.KeyWatcher:
        kv = await self.kv()
        return await kv.watch(self.prefix + ">")

    async def snapshot(self) -> list[KeyValue.Entry]:
        """The items now in the inbox, in the order they were written."""
        watcher = await (await self.kv()).watch(self.prefix + ">", ignore_deletes=True)
        entries: list[KeyValue.Entry] = []
        try:
            while True:
                timeout = self.store.settings.request_timeout
                entry = await watcher.updates(timeout=timeout)  # type: ignore[no-untyped-call]
                if entry is None:
                    return entries
                entries.append(entry)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    async def close(
        self, injected: set[str], drop: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> int:
        """At the run's end: every item not injected is claimed, recorded through ``drop``
        and deleted. Returns how many were dropped."""
        kv = await self.kv()
        await kv.put(self.closed_key, b"1")  # from now on new steers start runs instead
        dropped = 0
        entries = await self.snapshot()
        for entry in entries:
            value = json.loads(entry.value or b"null")
            if not isinstance(value, dict) or value.get("steer_event_id") in injected:
                continue
            if value.get("state") == QUEUED:
                try:
                    await kv.update(
                        entry.key,
                        json.dumps({**value, "state": DROPPING}).encode(),
                        last=entry.revision,
                    )
                except KeyWrongLastSequenceError:
                    continue  # its sender took it back and starts a run with it
            await drop(value)
            dropped += 1
        for entry in entries:
            with contextlib.suppress(KeyNotFoundError, NotFoundError):
                await kv.delete(entry.key)
        return dropped

    async def forget(self) -> None:
        """Delete the closing marker once the terminal event is stored."""
        kv = await self.kv()
        with contextlib.suppress(KeyNotFoundError, NotFoundError):
            await kv.delete(self.closed_key)


__all__ = [
    "INBOX_BUCKET",
    "QUEUED",
    "Inbox",
    "SessionRuns",
    "SteeringMessage",
    "ask_from_steer",
    "content_json",
    "route_steer",
    "scan_session",
    "steer_run_id",
]
