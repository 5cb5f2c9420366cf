"""``ensure`` is idempotent, applies changed settings, and explains impossible changes;
servers older than 2.12.1 are refused with both versions named."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from storekit import isolated_settings, open_store

from eventstore.connection import check_server_version
from eventstore.errors import ServerVersionError, StreamConfigError
from eventstore.store import EventStore


async def test_ensure_is_idempotent_and_updates_changed_settings(nats_url: str) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        assert (await store.ensure()).action == "unchanged"
        store.settings = replace(settings, max_age_seconds=3600.0, max_bytes=10_000_000)
        report = await store.ensure()
        assert report.action == "updated"
        assert set(report.changed) == {"max_age", "max_bytes"}
        assert (await store.ensure()).action == "unchanged"
        info = await store.js.stream_info(settings.stream)
        assert info.config.max_age == 3600.0
        assert info.config.allow_atomic is True


async def test_impossible_change_is_a_clear_error(nats_url: str) -> None:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        other = replace(settings, stream=settings.stream + "M")
        await store.nc.request(
            f"$JS.API.STREAM.CREATE.{other.stream}",
            json.dumps(
                {"name": other.stream, "subjects": [f"{settings.root}m.>"], "storage": "memory"}
            ).encode(),
        )
        memory_store = EventStore(store.nc, replace(other, root=f"{settings.root}m"))
        with pytest.raises(StreamConfigError, match="storage"):
            await memory_store.ensure()


@pytest.mark.parametrize("version", ["2.9.10", "2.11.4", "2.12.0", "garbage"])
def test_old_servers_are_refused_with_both_versions(version: str) -> None:
    with pytest.raises(ServerVersionError) as caught:
        check_server_version(version)
    assert "2.12.1" in str(caught.value)
    assert (version if version != "garbage" else "garbage") in str(caught.value)


@pytest.mark.parametrize("version", ["2.12.1", "2.14.0", "2.15.1", "3.0.0-beta"])
def test_current_servers_are_accepted(version: str) -> None:
    check_server_version(version)


def test_cli_schema_prints_the_whole_catalog() -> None:
    from eventstore.catalog import EVENT_TYPES

    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "schema"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    document = json.loads(out)
    text = json.dumps(document)
    for event_type in EVENT_TYPES:
        assert f'"{event_type}"' in text


def test_cli_ensure_reports_an_unreachable_server() -> None:
    from helpers import free_port

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "ensure",
            "--nats-url",
            f"nats://127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "jetledger ensure:" in result.stderr
