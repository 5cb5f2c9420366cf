"""A bounded schemathesis pass over the API's OpenAPI document: generated requests
(valid and invalid) against a real server with real data never get a 5xx.

The live-tail routes are left out: they follow the log until the client leaves, which a
request/response fuzzer cannot do (they have their own tests in test_api_sse.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import schemathesis
from apikit import api_world, served
from hypothesis import HealthCheck, given, settings
from projectkit import sqlite_url
from scenario import new_id, run_events, three_level_tree

EXAMPLES_PER_OPERATION = 25
FUZZ_SECONDS_PER_CALL = 5.0


def fuzz(document: dict[str, Any], base_url: str) -> list[str]:
    """Every non-streaming operation, bounded examples; the 5xx answers found."""
    schema = schemathesis.openapi.from_dict(document)
    server_errors: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/stream"):
            continue

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(base_url=base_url, timeout=FUZZ_SECONDS_PER_CALL)
            if response.status_code >= 500 and response.json()["error"]["code"] != "no_worker":
                server_errors.append(f"{case.method} {case.formatted_path}: {response.text[:300]}")

        check()
    return server_errors


async def test_openapi_fuzz_finds_no_server_errors(nats_url: str, tmp_path: Path) -> None:
    async with api_world(nats_url, sqlite_url(tmp_path / "rm.db")) as world:
        _root, tree = three_level_tree("fuzz")
        await world.append([*tree, *run_events("fuzz", new_id("run"), text="hello", tool=True)])
        await world.projected()
        app = world.app()
        async with served(app) as base:
            errors = await asyncio.to_thread(fuzz, app.openapi(), base)
    assert errors == []
