"""``GatewayClient`` and the ``send`` / ``tail`` commands end to end: a real nats-server,
echo workers as real subprocesses, the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from projectkit import cli, store_env
from storekit import isolated_settings
from workerkit import spawn_worker, stop

from eventstore.envelope import Event
from eventstore.settings import StoreSettings
from gateway import GatewayClient, NoWorkerError
from gateway.client import StreamedEvent

ECHO = "runners.examples.echo:EchoWorker"


@asynccontextmanager
async def echo_worker(
    settings: StoreSettings, nats_url: str, worker_id: str
) -> AsyncIterator[None]:
    """An echo worker subprocess, up and polling once the block starts."""
    process = spawn_worker(settings, nats_url, ECHO, worker_id)
    try:
        async with GatewayClient(nats_url, settings) as client:
            for _ in range(200):
                if await client.has_live_worker("echo"):
                    break
                await asyncio.sleep(0.05)
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
            else:
                raise AssertionError("the echo worker never started polling")
        yield
    finally:
        assert stop(process) == 0


async def test_send_and_wait_gets_the_echo(nats_url: str) -> None:
    settings = isolated_settings()
    async with echo_worker(settings, nats_url, "w1"), GatewayClient(nats_url, settings) as client:
        sent = await client.send_message("echo", "s1", "hello there", user_code="u1")
        assert sent.run_id.startswith("run-") and sent.session_id == "s1" and sent.seq > 0
        terminal = await client.wait(sent.run_id, "s1", timeout=30)
        assert terminal.type == "run.completed"
        assert getattr(terminal.data, "content", None) == "hello there"


async def test_stream_of_a_run_yields_deltas_then_the_terminal_in_order(nats_url: str) -> None:
    settings = isolated_settings()
    async with echo_worker(settings, nats_url, "w1"), GatewayClient(nats_url, settings) as client:
        sent = await client.send_message(
            "echo", "s1", "abcdefghij", metadata={"chunks": 5, "delay": 0.1}
        )
        streamed: list[StreamedEvent] = []
        async with asyncio.timeout(30):
            async for item in client.stream(run_id=sent.run_id):
                streamed.append(item)
        types = [item.event.type for item in streamed]
        assert types[0] == "run.started" and types[-1] == "run.completed", types
        deltas = [item.event for item in streamed if item.event.type == "message.delta"]
        assert "".join(getattr(d.data, "text", "") for d in deltas) == "abcdefghij"
        assert len(deltas) >= 2  # delayed chunks arrive as separate deltas
        seqs = [item.seq for item in streamed]
        assert seqs == sorted(set(seqs))
        assert len({item.event.id for item in streamed}) == len(streamed)


async def test_session_stream_from_a_sequence_resumes_without_gap_or_duplicate(
    nats_url: str,
) -> None:
    settings = isolated_settings()
    async with echo_worker(settings, nats_url, "w1"), GatewayClient(nats_url, settings) as client:
        runs = [await client.send_message("echo", "s2", f"m{i}") for i in range(3)]
        for sent in runs:
            await client.wait(sent.run_id, "s2", timeout=30)
        everything = await _first(client, session_id="s2", count=9)  # 3 events per run
        middle = everything[4].seq
        resumed = await _first(client, session_id="s2", count=5, from_seq=middle)
        assert resumed == everything[4:]


async def _first(client: GatewayClient, *, count: int, **where: object) -> list[StreamedEvent]:
    items: list[StreamedEvent] = []
    async with asyncio.timeout(30):
        async for item in client.stream(**where):  # type: ignore[arg-type]
            items.append(item)
            if len(items) == count:
                return items
    raise AssertionError("unreachable: a session stream follows forever")


async def test_no_worker_fails_clearly_and_queueing_waits_for_a_later_worker(
    nats_url: str,
) -> None:
    settings = isolated_settings()
    async with GatewayClient(nats_url, settings, worker_probe_timeout=0.3) as client:
        with pytest.raises(NoWorkerError, match="no live worker serves agent type 'echo'"):
            await client.send_message("echo", "s1", "anyone?")
        assert await client.store.last_seq() == 0  # nothing was appended
        sent = await client.send_message("echo", "s1", "queued", queue_if_no_worker=True)
        assert await client.store.last_seq() == sent.seq
        async with echo_worker(settings, nats_url, "late"):
            terminal = await client.wait(sent.run_id, "s1", timeout=30)
        assert terminal.type == "run.completed" and terminal.worker_id == "late"


async def test_interceptors_change_commands_in_order_and_a_raising_one_aborts(
    nats_url: str,
) -> None:
    settings = isolated_settings()

    def add_chunks(command: Event) -> Event:
        data = command.data.model_copy(update={"metadata": {"chunks": 4}})
        return command.model_copy(update={"data": data})

    def tag_user(command: Event) -> Event:
        return command.model_copy(update={"user_code": "intercepted"})

    async with GatewayClient(nats_url, settings) as client:
        client.add_interceptor(add_chunks)
        client.add_interceptor(tag_user)
        sent = await client.send_message("echo", "s1", "abcd", queue_if_no_worker=True)
        record = await client.store.last_on_subject(f"{settings.root}.ctrl.agent_type.echo")
        assert record is not None and record[0] == sent.seq
        stored = record[1]
        assert isinstance(stored, Event) and stored.id == sent.message_id
        assert stored.user_code == "intercepted"
        assert getattr(stored.data, "metadata", None) == {"chunks": 4}

        def refuse(command: Event) -> Event:
            raise PermissionError(f"{command.type} refused by policy")

        client.add_interceptor(refuse)
        with pytest.raises(PermissionError, match="refused by policy"):
            await client.send_message("echo", "s1", "nope", queue_if_no_worker=True)
        assert await client.store.last_seq() == sent.seq


async def test_resending_the_same_command_stores_it_once(nats_url: str) -> None:
    settings = isolated_settings()
    async with GatewayClient(nats_url, settings) as client:
        seq = await client.cancel_task("run-x", "s1", reason="changed my mind", agent_type="echo")
        # The command, then the run's own end: a cancel ends even a run still queued.
        assert await client.store.last_seq() == seq + 1
        stored = [item async for _seq, item in client.store.read(seq, until_seq=seq + 1)]
        assert [item.type for item in stored] == ["command.cancel", "run.cancelled"]  # type: ignore[union-attr]
        command = stored[0]
        assert isinstance(command, Event) and command.type == "command.cancel"
        assert getattr(command.data, "target_run_id", None) == "run-x"
        assert await client.send_command(command) == seq  # same id: a duplicate
        assert await client.store.last_seq() == seq + 1


async def test_cli_send_wait_prints_the_echo(nats_url: str) -> None:
    settings = isolated_settings()
    async with echo_worker(settings, nats_url, "w1"):
        result = await cli(
            settings,
            *("send", "--agent-type", "echo", "--session", "s1", "--nats-url", nats_url),
            *("--wait", "30", "--meta", "chunks=2", "hello cli"),
        )
        assert result.returncode == 0, result.stderr
        run_id, content = result.stdout.splitlines()
        assert run_id.startswith("run-") and content == "hello cli"
        streamed = await cli(
            settings,
            *("send", "--agent-type", "echo", "--session", "s1", "--nats-url", nats_url),
            *("--stream", "--wait", "30", "streamed text"),
        )
        assert streamed.returncode == 0, streamed.stderr
        assert streamed.stdout.splitlines()[1] == "streamed text"


async def test_cli_send_without_a_worker_exits_1_with_a_clear_message(nats_url: str) -> None:
    settings = isolated_settings()
    result = await cli(
        settings,
        *("send", "--agent-type", "nobody", "--session", "s1", "--nats-url", nats_url),
        *("--wait", "5", "hello?"),
    )
    assert result.returncode == 1
    assert "no live worker serves agent type 'nobody'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def spawn_tail(settings: StoreSettings, nats_url: str, session_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "tail", session_id, "--nats-url", nats_url],
        env=store_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_cli_tail_prints_the_session_until_interrupted(nats_url: str) -> None:
    settings = isolated_settings()
    async with echo_worker(settings, nats_url, "w1"), GatewayClient(nats_url, settings) as client:
        tail = spawn_tail(settings, nats_url, "s-tail")
        printed: list[str] = []
        try:
            sent = await client.send_message("echo", "s-tail", "tail me")
            await client.wait(sent.run_id, "s-tail", timeout=30)
            # Interrupt only once the tail printed the end (a loaded machine starts it late).
            assert tail.stdout is not None
            for _ in range(200):
                line = await asyncio.wait_for(asyncio.to_thread(tail.stdout.readline), 30)
                printed.append(line)
                if not line or "run.completed" in line:
                    break
        finally:
            tail.send_signal(signal.SIGINT)
            stdout, stderr = await asyncio.to_thread(tail.communicate, timeout=15)
        assert tail.returncode == 0, stderr
        assert "Traceback" not in stderr
        lines = "".join([*printed, stdout]).splitlines()
        assert any("run.started" in line and sent.run_id in line for line in lines), stdout
        assert any("run.completed" in line and "tail me" in line for line in lines), stdout
        seqs = [int(line.split()[0]) for line in lines]
        assert seqs == sorted(set(seqs))


def spawn_cli_worker(
    settings: StoreSettings, nats_url: str, worker_id: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "gateway.cli", "worker", "--worker-class", ECHO),
            *("--worker-id", worker_id, "--nats-url", nats_url),
        ],
        env=store_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_cli_worker_serves_runs_and_refuses_a_bad_class(nats_url: str) -> None:
    settings = isolated_settings()
    process = spawn_cli_worker(settings, nats_url, "cli-w")
    try:
        async with GatewayClient(nats_url, settings) as client:
            sent = await client.send_message("echo", "s1", "via cli", queue_if_no_worker=True)
            terminal = await client.wait(sent.run_id, "s1", timeout=30)
            assert terminal.type == "run.completed" and terminal.worker_id == "cli-w"
    finally:
        assert stop(process) == 0
    bad = await cli(settings, "worker", "--worker-class", "no_such_module:Nope")
    assert bad.returncode == 2
    assert "cannot load 'no_such_module:Nope'" in bad.stderr
    assert "Traceback" not in bad.stderr + bad.stdout
