"""The ingress's per-shard micro-batcher, with a stand-in for the proxy."""

from __future__ import annotations

import asyncio

import pytest

from actors.rules.proxy import IngestAck, IngestBatch
from ingress.batcher import ShardBatcher, Unavailable
from wire import Rejection, parse_event, reject


def event(n: int) -> bytes:
    return (
        b'{"type":"analysis.result","event_id":"e%d","tenant_id":"t","job_id":"j",'
        b'"analysis_type":"detect","part":0,"parts":1,"payload":{},'
        b'"at":"2026-01-01T00:00:00Z"}' % n
    )


class FakeProxy:
    """Records batches; each call waits for ``release`` when ``hold`` is set."""

    def __init__(self, *, hold: bool = False) -> None:
        self.batches: list[tuple[int, IngestBatch]] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail: Exception | None = None

    async def send(self, shard: int, batch: IngestBatch) -> IngestAck:
        self.batches.append((shard, batch))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
            if self.fail is not None:
                raise self.fail
            return IngestAck(accepted=len(batch.events), rejected=len(batch.rejections))
        finally:
            self.in_flight -= 1


def batcher(proxy: FakeProxy, **options: float) -> ShardBatcher:
    settings: dict[str, float] = {
        "shards": 2,
        "window_s": 0.01,
        "max_items": 100,
        "max_bytes": 1 << 20,
        "in_flight": 1,
        "max_queued": 1000,
    }
    settings.update(options)
    return ShardBatcher(proxy.send, **settings)  # type: ignore[arg-type]


def submit(b: ShardBatcher, shard: int, n: int) -> asyncio.Future[IngestAck]:
    item = parse_event(event(n))
    assert not isinstance(item, Rejection)
    return b.submit(shard, item, len(event(n)))


async def test_items_within_the_window_go_in_one_call_per_shard() -> None:
    proxy = FakeProxy()
    b = batcher(proxy)
    futures = [submit(b, n % 2, n) for n in range(10)]
    await asyncio.gather(*futures)
    assert sorted((s, len(batch.events)) for s, batch in proxy.batches) == [
        (0, 5),
        (1, 5),
    ]
    assert futures[0].result() == IngestAck(accepted=5)


async def test_rejections_travel_in_the_same_batch() -> None:
    proxy = FakeProxy()
    b = batcher(proxy)
    bad = reject(b"nope", "not valid JSON")
    await asyncio.gather(submit(b, 0, 1), b.submit(0, bad, 4))
    [(_, batch)] = proxy.batches
    assert len(batch.events) == 1
    assert batch.rejections == [bad]


async def test_a_full_batch_goes_at_once() -> None:
    proxy = FakeProxy()
    b = batcher(proxy, window_s=60, max_items=3)
    futures = [submit(b, 0, n) for n in range(3)]
    await asyncio.wait_for(asyncio.gather(*futures), 5)
    assert [len(batch.events) for _, batch in proxy.batches] == [3]


async def test_a_batch_is_cut_at_the_byte_cap() -> None:
    proxy = FakeProxy()
    size = len(event(0))
    b = batcher(proxy, max_bytes=size * 2, in_flight=4)
    await asyncio.gather(*(submit(b, 0, n) for n in range(5)))
    assert [len(batch.events) for _, batch in proxy.batches] == [2, 2, 1]


async def test_items_gather_while_the_slots_are_busy() -> None:
    proxy = FakeProxy(hold=True)
    b = batcher(proxy, in_flight=1)
    first = submit(b, 0, 0)
    await asyncio.sleep(0.05)  # the first batch is in flight, held
    later = [submit(b, 0, n) for n in range(1, 8)]
    await asyncio.sleep(0.05)  # their window passed; no free slot
    assert len(proxy.batches) == 1
    proxy.release.set()
    await asyncio.gather(first, *later)
    assert [len(batch.events) for _, batch in proxy.batches] == [1, 7]
    assert proxy.most_in_flight == 1


async def test_in_flight_calls_per_shard_are_capped() -> None:
    proxy = FakeProxy(hold=True)
    b = batcher(proxy, in_flight=2, max_items=1)
    futures = [submit(b, 0, n) for n in range(6)]
    await asyncio.sleep(0.05)
    assert proxy.in_flight == 2
    proxy.release.set()
    await asyncio.gather(*futures)
    assert len(proxy.batches) == 6
    assert proxy.most_in_flight == 2


async def test_a_failed_call_fails_every_item_it_carried() -> None:
    proxy = FakeProxy()
    proxy.fail = RuntimeError("proxy down")
    b = batcher(proxy)
    futures = [submit(b, 0, n) for n in range(3)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_abandoned_items_are_not_sent() -> None:
    proxy = FakeProxy(hold=True)
    b = batcher(proxy, in_flight=1)
    first = submit(b, 0, 0)
    await asyncio.sleep(0.05)
    abandoned = submit(b, 0, 1)
    kept = submit(b, 0, 2)
    abandoned.cancel()  # its request timed out and got 503
    proxy.release.set()
    await asyncio.gather(first, kept)
    sent = [e.event_id for _, batch in proxy.batches for e in batch.events]
    assert sent == ["e0", "e2"]


async def test_a_full_queue_refuses_at_once() -> None:
    proxy = FakeProxy(hold=True)
    b = batcher(proxy, max_queued=2, in_flight=1)
    submit(b, 0, 0)
    await asyncio.sleep(0.05)  # in flight, so no longer queued
    submit(b, 0, 1)
    submit(b, 0, 2)
    with pytest.raises(Unavailable):
        submit(b, 0, 3)
    submit(b, 1, 4)  # other shards are unaffected
    proxy.release.set()
    await b.close()


async def test_close_sends_everything_queued_at_once_and_refuses_more() -> None:
    proxy = FakeProxy()
    b = batcher(proxy, window_s=60)
    futures = [submit(b, n % 2, n) for n in range(4)]
    await asyncio.wait_for(b.close(), 5)
    assert all(f.done() and f.exception() is None for f in futures)
    assert sum(len(batch.events) for _, batch in proxy.batches) == 4
    with pytest.raises(Unavailable):
        submit(b, 0, 9)
