"""Client side of the real-package scenarios; run in by-framework's venv.

``python scenarios.py <scenario> --port P [--db N] --session S`` sends with by-framework's
own ``ByaiGatewayClient`` / ``GatewayClient``, reads the session data stream with ``XREAD``
until the root run's end-of-stream marker (``appStreamResponse``), and prints one JSON
object: the data-stream entries it saw (``event_type``, ``message_id``, content) plus
whatever the scenario measured. pytest asserts on that object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

from by_framework import (
    ByaiGatewayClient,
    MessageHeader,
    RedisKeys,
    ResumeCommand,
    WorkerRegistry,
    init_redis,
)

END_OF_STREAM = "appStreamResponse"
ASK_USER_CONTENT_TYPES = ("3013", "3014")


class ScenarioError(Exception):
    """A send failed or the stream did not reach the expected point in time."""


def content_of(entry: dict[str, Any]) -> tuple[str, str]:
    """(contentType, delta content) of one data-stream entry's SSE layout."""
    data = entry.get("data") or {}
    choices = data.get("choices") or [{}]
    delta = choices[0].get("delta") or {}
    content = delta.get("content")
    return str(data.get("contentType", "")), content if isinstance(content, str) else ""


class StreamReader:
    """Follows one session data stream from its start with ``XREAD BLOCK``."""

    def __init__(self, redis: Any, session_id: str, block_ms: int) -> None:
        self.redis = redis
        self.key = RedisKeys.session_data_stream(session_id)
        self.block_ms = block_ms
        self.last_id = "0-0"
        self.entries: list[dict[str, Any]] = []
        self.ids: list[str] = []

    async def until(self, done: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(done(entry) for entry in self.entries):
            if time.monotonic() > deadline:
                seen = [entry.get("event_type") for entry in self.entries]
                raise ScenarioError(f"stream {self.key} stalled after {seen}")
            replies = await self.redis.xread({self.key: self.last_id}, block=self.block_ms)
            for _stream, items in replies or ():
                for entry_id, fields in items:
                    self.last_id = entry_id
                    self.ids.append(entry_id)
                    self.entries.append(json.loads(fields["data"]))

    async def until_end_of(self, message_id: str, timeout: float) -> None:
        await self.until(
            lambda e: e.get("event_type") == END_OF_STREAM and e.get("message_id") == message_id,
            timeout,
        )

    def summary(self) -> list[dict[str, str]]:
        out = []
        for entry in self.entries:
            content_type, content = content_of(entry)
            out.append(
                {
                    "event_type": str(entry.get("event_type")),
                    "message_id": str(entry.get("message_id")),
                    "content_type": content_type,
                    "content": content,
                }
            )
        return out


async def sent(response: Any) -> str:
    if not response.success:
        raise ScenarioError(f"send failed: {response.error_code} {response.error}")
    return str(response.message_id)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    redis = init_redis(host="127.0.0.1", port=args.port, db=args.db)
    registry = WorkerRegistry(redis_client=redis)
    client = ByaiGatewayClient(redis_client=redis, registry=registry)
    reader = StreamReader(redis, args.session, args.block_ms)
    result: dict[str, Any] = {"scenario": args.scenario}
    try:
        if args.scenario == "echo":
            started = time.perf_counter()
            message_id = await sent(
                await client.send_message("echo", args.session, "hello jetledger")
            )
            await reader.until_end_of(message_id, args.timeout)
            result["seconds"] = time.perf_counter() - started
        elif args.scenario == "call_agent":
            message_id = await sent(await client.send_message("caller", args.session, "ping"))
            await reader.until_end_of(message_id, args.timeout)
        elif args.scenario == "ask_user":
            message_id = await sent(await client.send_message("asker", args.session, "deploy"))
            await reader.until(lambda e: content_of(e)[0] in ASK_USER_CONTENT_TYPES, args.timeout)
            # 0.2.1's send_message(action_type="RESUME") re-initialises the execution
            # record and the worker then refuses the resume (missing config snapshot), so
            # the reply is sent the way by-framework's own worker sends resumes: a
            # ResumeCommand XADDed to the agent type's control stream.
            resume = ResumeCommand(
                header=MessageHeader(
                    message_id=message_id,
                    session_id=args.session,
                    trace_id=uuid.uuid4().hex,
                    target_agent_type="asker",
                ),
                content="staging",
                status="COMPLETED",
                reply_data="staging",
            )
            await redis.xadd(RedisKeys.ctrl_stream("asker"), resume.to_redis_payload())
            await reader.until_end_of(message_id, args.timeout)
        elif args.scenario == "cancel":
            message_id = await sent(await client.send_message("sleeper", args.session, "zz"))
            await reader.until(lambda e: "tick 2" in content_of(e)[1], args.timeout)
            cancel = await client.cancel_task(message_id, args.session, reason="test cancel")
            result["cancel"] = {"success": cancel.success, "status": str(cancel.status)}
            await reader.until_end_of(message_id, args.timeout)
        elif args.scenario == "reload":
            dispatched = await client.reload_plugins_for_agent_type("echo", reason="test")
            result["dispatched"] = dispatched
            acks: list[dict[str, Any]] = []
            deadline = time.monotonic() + args.timeout
            while len(acks) < dispatched["dispatched_count"] and time.monotonic() < deadline:
                acks = await client.collect_reload_acks(dispatched["reload_id"], block_ms=500)
            result["acks"] = acks
        else:
            raise ScenarioError(f"unknown scenario {args.scenario}")
        result["message_id"] = locals().get("message_id", "")
    finally:
        result["entries"] = reader.summary()
        result["entry_ids"] = reader.ids
        await redis.aclose()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("scenario")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=int, default=0)
    parser.add_argument("--session", required=True)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--block-ms", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
