"""The lean pull loop (``runners.pull``) against a real nats-server: it never holds more
commands than free slots, asks again as slots free up and as requests expire, and
forgets a request the server lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg
from nats.js import api
from storekit import isolated_settings, open_store

from eventstore.embedded import EmbeddedNatsServer
from eventstore.store import EventStore
from runners.pull import REQUEST_GRACE, PullFeed
from runners.runtime import Slots

DURABLE = "feed-test"


class Harness:
    def __init__(self, store: EventStore, slots: int, *, batch: int, expires: float) -> None:
        self.store = store
        self.slots = Slots(slots)
        self.stopping = asyncio.Event()
        self.received: list[Msg] = []
        self.arrived = asyncio.Event()
        self.feed = PullFeed(
            store.nc,
            stream=store.settings.stream,
            durable=DURABLE,
            slots=self.slots,
            batch=batch,
            expires=expires,
            deliver=self._deliver,
            stopping=self.stopping,
        )

    async def _deliver(self, msg: Msg) -> None:
        self.received.append(msg)
        self.arrived.set()

    async def finish(self, count: int = 1) -> None:
        """Runs end: ack the oldest ``count`` and give their slots back."""
        for msg in self.received[:count]:
            await msg.ack()
        del self.received[:count]
        await self.slots.release(count)

    async def wait_received(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def waiting_requests(self) -> int:
        info = await self.store.js.consumer_info(self.store.settings.stream, DURABLE)
        return int(info.num_waiting or 0)


@contextlib.asynccontextmanager
async def harness(
    nats_url: str, slots: int, *, batch: int = 8, expires: float = 0.5
) -> AsyncIterator[Harness]:
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        await store.js.add_consumer(
            settings.stream,
            api.ConsumerConfig(
                durable_name=DURABLE,
                filter_subject=f"{settings.root}.work.>",
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=30,
            ),
        )
        h = Harness(store, slots, batch=batch, expires=expires)
        task = asyncio.create_task(h.feed.run())
        try:
            yield h
        finally:
            h.stopping.set()
            await h.slots.close()
            await asyncio.wait_for(task, 5)


async def publish(store: EventStore, count: int) -> None:
    for index in range(count):
        await store.js.publish(f"{store.settings.root}.work.{index}", b"{}")


async def test_never_holds_more_than_the_free_slots(nats_url: str) -> None:
    async with harness(nats_url, slots=2, batch=8) as h:
        await publish(h.store, 5)
        await h.wait_received(2)
        await asyncio.sleep(0.3)  # nothing more may arrive while both slots are busy
        assert len(h.received) == 2
        assert h.slots.free == 0 and h.feed.pending == 0
        await h.finish(1)  # one slot frees up: exactly one more command comes
        await h.wait_received(2)
        await asyncio.sleep(0.3)
        assert len(h.received) == 2
        await h.finish(2)
        await h.wait_received(2)
        await h.finish(2)
        assert h.received == []


async def test_a_command_arrives_at_once_on_an_idle_worker(nats_url: str) -> None:
    async with harness(nats_url, slots=4, expires=0.3) as h:
        await asyncio.sleep(1.0)  # several request periods pass with nothing to do
        # Expired requests were renewed, not lost, each idle period asking for fewer.
        assert h.feed.pending == 1 and h.slots.free == 3
        assert await h.waiting_requests() >= 1
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await publish(h.store, 1)
        await h.wait_received(1, timeout=1.0)
        assert loop.time() - sent < 0.25  # pushed into the waiting request, not polled
        # A burst after the quiet spell: the feed asks for more again and takes it all.
        await publish(h.store, 3)
        await h.wait_received(4, timeout=2.0)
        assert h.slots.free == 0 and h.feed.pending == 0


async def test_a_request_the_server_lost_is_asked_again(
    killable_nats_server: EmbeddedNatsServer,
) -> None:
    # A restarted server has forgotten the waiting requests and says nothing about
    # them; the feed notices the silence within a request period plus grace.
    async with harness(killable_nats_server.url, slots=2, expires=0.3) as h:
        await asyncio.sleep(0.2)
        assert h.feed.pending == 2
        killable_nats_server.kill()  # a crash: no status ends the requests
        await killable_nats_server.restart()
        await asyncio.sleep(0.5)  # the client reconnects
        await publish(h.store, 2)
        loop = asyncio.get_running_loop()
        published = loop.time()
        await h.wait_received(2, timeout=4.0)
        # Within a request period plus the grace (and a reconnect's slack).
        assert loop.time() - published < 0.3 + REQUEST_GRACE + 1.0
        await h.finish(2)


async def test_a_request_ended_by_the_server_is_asked_again(nats_url: str) -> None:
    # Deleting the consumer ends its waiting requests with a 409 status; once the
    # consumer is back, the feed's next request finds the commands.
    async with harness(nats_url, slots=2, expires=0.3) as h:
        await asyncio.sleep(0.2)
        stream = h.store.settings.stream
        info = await h.store.js.consumer_info(stream, DURABLE)
        await h.store.js.delete_consumer(stream, DURABLE)
        await h.store.js.add_consumer(stream, info.config)
        await publish(h.store, 2)
        await h.wait_received(2, timeout=4.0)
        await h.finish(2)


@pytest.mark.parametrize("batch", [1, 3])
async def test_a_busy_worker_takes_every_command_in_turn(nats_url: str, batch: int) -> None:
    async with harness(nats_url, slots=3, batch=batch) as h:
        await publish(h.store, 30)
        done = 0
        async with asyncio.timeout(10):
            while done < 30:
                await h.wait_received(1)
                assert len(h.received) <= 3
                count = len(h.received)
                await h.finish(count)
                done += count
        await asyncio.sleep(0.3)
        assert h.received == []
        assert h.slots.free + h.feed.pending == 3


async def test_a_quiet_feed_leaves_the_shared_slots_to_a_busy_one(nats_url: str) -> None:
    # Two agent types share one worker's 4 slots. The quiet one shrinks to one waiting
    # request, so the busy one runs 3 at once and is never starved for a request period.
    settings = isolated_settings()
    async with open_store(nats_url, settings) as store:
        stream = settings.stream
        for name in ("busy", "quiet"):
            await store.js.add_consumer(
                stream,
                api.ConsumerConfig(
                    durable_name=name,
                    filter_subject=f"{settings.root}.{name}.>",
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=30,
                ),
            )
        slots = Slots(4)
        stopping = asyncio.Event()
        received: dict[str, list[Msg]] = {"busy": [], "quiet": []}
        arrived = asyncio.Event()

        async def until(name: str, count: int) -> None:
            async with asyncio.timeout(0.5):  # well inside one request period
                while len(received[name]) < count:
                    arrived.clear()
                    await arrived.wait()

        def feed(name: str) -> PullFeed:
            async def deliver(msg: Msg) -> None:
                received[name].append(msg)
                arrived.set()

            return PullFeed(
                store.nc,
                stream=stream,
                durable=name,
                slots=slots,
                batch=4,
                expires=0.3,
                deliver=deliver,
                stopping=stopping,
            )

        busy, quiet = feed("busy"), feed("quiet")
        tasks = [asyncio.create_task(busy.run()), asyncio.create_task(quiet.run())]
        try:
            await asyncio.sleep(1.5)  # both idle for several request periods
            for index in range(6):
                await store.js.publish(f"{settings.root}.busy.{index}", b"{}")
            await until("busy", 3)
            # The quiet feed holds one request's slot (none between its expiry and renewal).
            assert quiet.pending <= 1
            await store.js.publish(f"{settings.root}.quiet.0", b"{}")
            await until("quiet", 1)
        finally:
            stopping.set()
            await slots.close()
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
