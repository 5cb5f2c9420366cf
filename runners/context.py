"""``AgentContext``: what a handler uses to emit output while its run is live.

Every emit is an event on the run's ``.out`` subject. Token chunks are coalesced over
``chunk_window`` (G8): the first chunk after a quiet window goes out at once (time to
first token is not taxed), later ones at most once per window, and whatever is buffered
is flushed before the run's terminal event.

The context keeps the run's identity and the order of its output (replayed by position,
G5); the coalescing of chunks is :mod:`runners.chunk_coalescer`, the tool-call events
:mod:`runners.tool_calls`, the naming of state keys :mod:`runners.state_scopes`, and
orchestration and steering are delegated to :mod:`runners.orchestration` and
:mod:`runners.steering_reader`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, overload

from eventstore.catalog import (
    ArtifactCreated,
    ArtifactCreatedData,
    MessageDelta,
    MessageDeltaData,
    ObjectRef,
    RunState,
    RunStateData,
    StateUpdated,
    StateUpdatedData,
)
from eventstore.catalog_common import Content
from eventstore.envelope import Event
from eventstore.store import EventStore
from runners.chunk_coalescer import ChunkCoalescer
from runners.journal import Journal
from runners.orchestration import CalledAgent, GroupTask, Steps
from runners.outcomes import AgentReply, MemberResult
from runners.plugins import HookName, PluginHost
from runners.registry import ActiveWorker, get_active_workers
from runners.settings import WorkerSettings
from runners.state_scopes import STATE_BUCKET, Scope, state_key
from runners.steering import Inbox, SteeringMessage
from runners.steering_reader import SteeringReader
from runners.tool_calls import (
    ToolCallReplayError,
    call_failed,
    call_started,
    call_succeeded,
    replayed_outcome,
)
from runners.worker import Command


class AgentContext:
    def __init__(
        self,
        store: EventStore,
        command: Command,
        *,
        worker_id: str,
        attempt: int,
        settings: WorkerSettings,
        journal: Journal | None = None,
        driver_id: str | None = None,
        plugins: PluginHost | None = None,
    ) -> None:
        self._store = store
        self._plugins = plugins
        """The worker's plugins (``on_call_agent_*`` hooks); none outside a worker."""
        self._command = command
        self._worker_id = worker_id
        self._attempt = attempt
        self._settings = settings
        self._journal = journal or Journal(command.run_id)
        # Replay (G5): output already in the log is not published again.
        self._replay_emits = len(self._journal.emits)
        self._emit_index = 0
        self._last_out_seq = self._journal.last_seq
        self._steps = Steps(self, self._journal, driver_id or command.message_id)
        self._cancel = asyncio.Event()
        self._steering = SteeringReader(
            Inbox(store, command.session_id, command.run_id),
            self._journal.steering,
            envelope=self.envelope,
            emit=self._emit_unjournaled,
            cancelled=self._cancel,
        )
        self._deltas = ChunkCoalescer(
            settings.chunk_window,
            replay_chars=self._journal.chunk_chars,
            next_index=self._journal.delta_count,
            publish=self._publish_delta,
        )

    async def _call_hook(self, hook: HookName, *args: Any) -> None:
        """Call a plugin hook with this run's command and context (never raises)."""
        if self._plugins is not None:
            await self._plugins.call(hook, self._command, self, *args, run_id=self.run_id)

    # -- identity (read-only) ------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self._command.session_id

    @property
    def run_id(self) -> str:
        return self._command.run_id

    @property
    def trace_id(self) -> str | None:
        return self._command.trace_id

    @property
    def message_id(self) -> str:
        return self._command.message_id

    @property
    def parent_run_id(self) -> str | None:
        return self._command.parent_run_id

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def agent_type(self) -> str:
        return self._command.agent_type

    @property
    def store(self) -> EventStore:
        return self._store

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled (its ``run.cancelled`` is in the log): a
        graceful handler should stop soon; whatever it returns is discarded."""
        return self._cancel.is_set()

    def mark_cancelled(self) -> None:
        self._cancel.set()

    async def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep until the run is cancelled or ``timeout`` passes; True if cancelled."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._cancel.wait(), timeout)
        return self._cancel.is_set()

    @property
    def worker_id(self) -> str:
        return self._worker_id

    def envelope(self) -> dict[str, Any]:
        """Envelope fields every event of this run carries."""
        command = self._command
        return {
            "session_id": command.session_id,
            "run_id": command.run_id,
            "agent_type": command.agent_type,
            "parent_run_id": command.parent_run_id,
            "root_run_id": command.root_run_id or command.run_id,
            "trace_id": command.trace_id,
            "user_code": command.user_code,
            "group_id": command.group_id,
            "worker_id": self._worker_id,
            "causation_id": command.message_id or None,
        }

    async def _emit(
        self, event: Event, *, journaled: bool = True, expect_last: bool = False
    ) -> None:
        """Append ``event`` to the run's ``.out`` subject.

        ``journaled`` output is replayed by position: while re-invoked handler code repeats
        output that is already in the journal, nothing is published. ``expect_last`` makes
        the append conditional on nothing else having been appended to the run since.
        """
        if journaled and self._replaying_emit():
            return
        result = await self._store.append(
            event, expected_last_subject_seq=self._last_out_seq if expect_last else None
        )
        if result.seq is not None:
            self._last_out_seq = max(self._last_out_seq, result.seq)

    async def _emit_unjournaled(self, event: Event) -> None:
        # Steering records are replayed by their own index (Journal.steering), not by
        # position among emits; their ids are deterministic, so a repeat is a duplicate.
        await self._emit(event, journaled=False)

    def _replaying_emit(self) -> bool:
        index, self._emit_index = self._emit_index, self._emit_index + 1
        return index < self._replay_emits

    # -- output ------------------------------------------------------------------------

    async def emit_chunk(self, text: str) -> None:
        """Stream a piece of the answer: one ``message.delta`` at most per ``chunk_window``,
        the first at once; pieces in between are joined into the next delta."""
        self._deltas.add(text)

    async def flush(self) -> None:
        """Publish buffered chunks now (the runtime calls it before the terminal event)."""
        await self._deltas.flush()

    async def _publish_delta(self, text: str, index: int) -> None:
        await self._emit(
            MessageDelta(**self.envelope(), data=MessageDeltaData(text=text, index=index))
        )

    async def emit_state(
        self, state: str, progress: float | None = None, detail: str | None = None
    ) -> None:
        """A state / progress line (``run.state``)."""
        await self._emit(
            RunState(
                **self.envelope(), data=RunStateData(state=state, progress=progress, detail=detail)
            )
        )

    async def emit_artifact(
        self,
        name: str,
        content: bytes,
        *,
        mime_type: str = "application/octet-stream",
        artifact_type: str = "file",
    ) -> None:
        """An artifact: inline below ``inline_artifact_limit``, else in the Object Store
        with its size and sha256."""
        fields: dict[str, Any] = {
            "artifact_id": f"art-{uuid.uuid4().hex[:12]}",
            "artifact_type": artifact_type,
            "name": name,
            "mime_type": mime_type,
        }
        if len(content) <= self._settings.inline_artifact_limit:
            fields["content_base64"] = base64.b64encode(content).decode()
        else:
            stored = await self._store.blobs.put_object(
                f"{self.run_id}/{uuid.uuid4().hex}/{name}", content
            )
            fields["ref"] = ObjectRef(
                bucket=stored.bucket,
                name=stored.name,
                size=stored.size,
                sha256=stored.sha256,
                mime_type=mime_type,
            )
        await self._emit(ArtifactCreated(**self.envelope(), data=ArtifactCreatedData(**fields)))

    async def call_tool(
        self, name: str, tool: Callable[..., Awaitable[Any]], /, **kwargs: Any
    ) -> Any:
        """Run ``tool(**kwargs)`` between ``tool.call.started`` and ``tool.call.completed``
        (which carries the result or the error); re-raises the tool's exception."""
        recorded = self._journal.tool_result(self._emit_index)
        if recorded is not None and self._emit_index + 1 < self._replay_emits:
            self._emit_index += 2  # the call's start and completion are both in the journal
            return replayed_outcome(recorded)
        call_id = f"tc-{self.run_id}-{self._emit_index}"
        await self._emit(call_started(self.envelope(), call_id, name, kwargs))
        started = time.monotonic()
        try:
            result = await tool(**kwargs)
        except Exception as exc:
            await self._emit(call_failed(self.envelope(), call_id, name, exc, started))
            raise
        await self._emit(call_succeeded(self.envelope(), call_id, name, result, started))
        return result

    # -- state -------------------------------------------------------------------------

    async def set_state(self, scope: Scope, key: str, value: Any) -> None:
        """Record ``state.updated`` (the fact) and keep the value in KV for fast reads."""
        data = StateUpdatedData(scope=scope, key=key, value=value)
        await self._emit(StateUpdated(**self.envelope(), data=data))
        await self._store.blobs.kv_put(STATE_BUCKET, state_key(self._command, scope, key), value)

    async def get_state(self, scope: Scope, key: str, default: Any = None) -> Any:
        entry = await self._store.blobs.kv_get(STATE_BUCKET, state_key(self._command, scope, key))
        return default if entry is None else entry.value

    # -- orchestration (G5; see runners.orchestration) ---------------------------------

    @overload
    async def call_agent(
        self,
        target_agent_type: str,
        content: Content,
        wait_for_reply: Literal[True] = True,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AgentReply: ...

    @overload
    async def call_agent(
        self,
        target_agent_type: str,
        content: Content,
        wait_for_reply: Literal[False],
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> CalledAgent: ...

    async def call_agent(
        self,
        target_agent_type: str,
        content: Content,
        wait_for_reply: bool = True,
        timeout: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AgentReply | CalledAgent:
        """Run ``target_agent_type`` as a child of this run. With ``wait_for_reply`` the
        child's :class:`AgentReply` (status, content, data, error); else its ids at once.

        While the child runs, this run holds no slot: it is parked and re-invoked when the
        child ends (see the replay rule in :mod:`runners.orchestration`)."""
        return await self._steps.call_agent(
            target_agent_type,
            content,
            wait_for_reply=wait_for_reply,
            timeout=timeout,
            metadata=metadata,
        )

    async def dispatch_group(
        self,
        tasks: Sequence[GroupTask],
        strategy: str = "all",
        timeout: float | None = None,
        max_concurrent: int | None = None,
        *,
        input_mapper: Callable[[Any, int], Content] | None = None,
        raw_input: Any = None,
    ) -> str:
        """Fan out (``all`` | ``race`` | ``quorum:<n>``); returns the group id."""
        return await self._steps.dispatch_group(
            tasks,
            strategy,
            timeout=timeout,
            max_concurrent=max_concurrent,
            input_mapper=input_mapper,
            raw_input=raw_input,
        )

    async def collect_group_results(self, group_id: str) -> list[MemberResult]:
        """Every member's :class:`MemberResult`, in member order, once the group is done."""
        return await self._steps.collect_group_results(group_id)

    async def ask_user(
        self, prompt: str, schema: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Ask a human and return the answer (``GatewayClient.reply`` sends it)."""
        return await self._steps.ask_user(prompt, schema, timeout)

    # -- steering (issue 4 §8; see runners.steering) ------------------------------------

    async def next_steering(self, timeout: float | None = None) -> SteeringMessage | None:
        """The next steering message sent to this run (``GatewayClient.steer``), recorded
        as ``steering.injected``; None after ``timeout`` seconds or once the run is
        cancelled. Messages reach a run only if its worker class sets ``steering = True``."""
        return await self._steering.next(timeout)

    async def steering(self, idle_timeout: float | None = None) -> AsyncIterator[SteeringMessage]:
        """``async for msg in ctx.steering(idle_timeout)``: messages until none arrives
        for ``idle_timeout`` seconds (None: until the run is cancelled)."""
        while (message := await self.next_steering(idle_timeout)) is not None:
            yield message

    @property
    def steering_reader(self) -> SteeringReader:
        """The runtime's handle on the run's inbox (stopped and closed at its end)."""
        return self._steering

    # -- registry ----------------------------------------------------------------------

    async def get_active_workers(self, agent_type: str | None = None) -> list[ActiveWorker]:
        """Workers with a live lease (optionally only those serving ``agent_type``)."""
        return await get_active_workers(
            self._store.blobs, self._settings.registry_bucket, agent_type
        )


__all__ = ["AgentContext", "ToolCallReplayError"]
