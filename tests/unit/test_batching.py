"""The micro-batcher (``wire.batching``) and the three that use it: the
ingress (one update per shard and window), the activities (shared sink
writes and tenant reports) and the batching ``EventSender``.

Real asyncio with short windows; the assertions are about which items went
in which call, never about how long anything took.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode

from actors.activities import Activities
from actors.contracts import PublishSummaryInput
from actors.pipelines import collected
from actors.rules.proxy import IngestAck, IngestBatch
from actors.settings import WorkerConfig
from ingress.sender import EventSender
from ingress.service import Ingress, IngressSettings, Unavailable
from sinks import SinkRecord
from wire import TenantSummary, parse_event, reject
from wire.batching import Closed, MicroBatcher, QueueFull

# Long enough that a test which relies on a cap or a flush never sees it end.
NEVER = 60.0


class FakeSend:
    """Records each call's key and items; while ``hold`` is set, calls wait
    for ``release``. Answers with the number of items, or raises ``fail``
    (every call) or ``fail_once`` (the next call only)."""

    def __init__(self, *, hold: bool = False) -> None:
        self.calls: list[tuple[Any, list[Any]]] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail: BaseException | None = None
        self.fail_once: BaseException | None = None

    async def __call__(self, key: Any, items: list[Any]) -> int:
        self.calls.append((key, list(items)))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
            if self.fail_once is not None:
                exc, self.fail_once = self.fail_once, None
                raise exc
            if self.fail is not None:
                raise self.fail
            return len(items)
        finally:
            self.in_flight -= 1

    def sizes(self) -> list[int]:
        return [len(items) for _, items in self.calls]


def batcher(send: FakeSend, **options: Any) -> MicroBatcher[Any, Any, int]:
    settings: dict[str, Any] = {"window_s": 0.01, "max_items": 100, "in_flight": 1}
    settings.update(options)
    return MicroBatcher(send, **settings)


async def until(condition: Any) -> None:
    """Let the loop run until ``condition()`` holds; a bounded number of
    turns, so that a bug fails the test instead of hanging it."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the condition never held")


# The batcher: window, caps, in-flight limit, queue cap, abandonment, close.


async def test_items_within_the_window_go_in_one_call_per_key() -> None:
    send = FakeSend()
    b = batcher(send)
    futures = [b.submit(n % 2, [n]) for n in range(10)]
    assert await asyncio.gather(*futures) == [5] * 10
    assert sorted(send.calls) == [(0, [0, 2, 4, 6, 8]), (1, [1, 3, 5, 7, 9])]


async def test_a_full_batch_goes_at_once_without_waiting_for_the_window() -> None:
    send = FakeSend()
    b = batcher(send, window_s=NEVER, max_items=3)
    futures = [b.submit(0, [n]) for n in range(4)]
    await asyncio.wait_for(asyncio.gather(*futures[:3]), 5)
    assert send.sizes() == [3]
    assert not futures[3].done()  # the fourth waits for its own window
    await b.close()


async def test_a_batch_is_cut_at_the_byte_cap() -> None:
    send = FakeSend()
    b = batcher(send, max_bytes=200, in_flight=4)
    await asyncio.gather(*(b.submit(0, [n], 100) for n in range(5)))
    assert send.sizes() == [2, 2, 1]


async def test_a_chunk_is_never_split_and_an_oversized_one_goes_alone() -> None:
    send = FakeSend()
    b = batcher(send, max_items=3, in_flight=4)
    await asyncio.gather(
        b.submit(0, ["a", "b"]), b.submit(0, ["c", "d"]), b.submit(0, list("efghi"))
    )
    assert [items for _, items in send.calls] == [
        ["a", "b"],
        ["c", "d"],
        list("efghi"),
    ]


async def test_items_gather_while_the_slots_are_busy() -> None:
    send = FakeSend(hold=True)
    b = batcher(send, in_flight=1)
    first = b.submit(0, [0])
    await until(lambda: send.calls)
    later = [b.submit(0, [n]) for n in range(1, 8)]
    await asyncio.sleep(0.03)  # their window passes; still no free slot
    assert send.sizes() == [1]
    send.release.set()
    await asyncio.gather(first, *later)
    assert send.calls == [(0, [0]), (0, [1, 2, 3, 4, 5, 6, 7])]
    assert send.most_in_flight == 1


async def test_in_flight_calls_per_key_are_capped() -> None:
    send = FakeSend(hold=True)
    b = batcher(send, in_flight=2, max_items=1)
    futures = [b.submit(0, [n]) for n in range(6)]
    others = [b.submit(1, [n]) for n in range(2)]  # another key, its own slots
    await until(lambda: send.in_flight == 4)
    await asyncio.sleep(0.01)
    assert send.in_flight == 4
    send.release.set()
    await asyncio.gather(*futures, *others)
    assert len(send.calls) == 8
    assert send.most_in_flight == 4


async def test_a_failed_call_fails_every_submission_it_carried() -> None:
    send = FakeSend()
    send.fail = RuntimeError("sink down")
    b = batcher(send)
    futures = [b.submit(0, [n]) for n in range(3)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert len(send.calls) == 1
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_abandoned_submissions_are_not_sent() -> None:
    send = FakeSend(hold=True)
    b = batcher(send, in_flight=1)
    first = b.submit(0, ["e0"])
    await until(lambda: send.calls)
    abandoned = b.submit(0, ["e1"])
    kept = b.submit(0, ["e2"])
    abandoned.cancel()  # its caller gave up (a request that got 503)
    send.release.set()
    await asyncio.gather(first, kept)
    assert [items for _, items in send.calls] == [["e0"], ["e2"]]


async def test_a_batch_of_only_abandoned_submissions_makes_no_call() -> None:
    send = FakeSend()
    b = batcher(send)
    for future in [b.submit(0, [n]) for n in range(3)]:
        future.cancel()
    await b.flush()
    assert send.calls == []
    assert b.queued(0) == 0


async def test_a_full_queue_refuses_at_once() -> None:
    send = FakeSend(hold=True)
    b = batcher(send, max_queued=2, in_flight=1)
    b.submit(0, [0])
    await until(lambda: send.calls)  # in flight, so no longer queued
    b.submit(0, [1])
    b.submit(0, [2])
    with pytest.raises(QueueFull):
        b.submit(0, [3])
    with pytest.raises(QueueFull):
        b.add(0, 3)
    b.submit(1, [4])  # other keys are unaffected
    send.release.set()
    await b.close()
    assert sorted(n for _, items in send.calls for n in items) == [0, 1, 2, 4]


async def test_flush_sends_everything_at_once_and_waits() -> None:
    send = FakeSend()
    b = batcher(send, window_s=NEVER)
    futures = [b.submit(n % 3, [n]) for n in range(6)]
    await asyncio.wait_for(b.flush(), 5)
    assert all(f.done() for f in futures)
    assert sorted(send.sizes()) == [2, 2, 2]
    b.submit(0, [9])  # a flush does not close
    await b.close()


async def test_close_sends_everything_queued_at_once_and_refuses_more() -> None:
    send = FakeSend()
    b = batcher(send, window_s=NEVER)
    futures = [b.submit(n % 2, [n]) for n in range(4)]
    await asyncio.wait_for(b.close(), 5)
    assert all(f.done() and f.exception() is None for f in futures)
    assert sum(send.sizes()) == 4
    assert b.closing
    with pytest.raises(Closed):
        b.submit(0, [9])
    with pytest.raises(Closed):
        b.add(0, 9)


async def test_close_respects_the_in_flight_limit() -> None:
    send = FakeSend(hold=True)
    b = batcher(send, window_s=NEVER, max_items=2, in_flight=1)
    for n in range(6):
        b.add(0, n)
    closing = asyncio.create_task(b.close())
    await until(lambda: send.calls)
    await asyncio.sleep(0.01)
    assert send.sizes() == [2]
    send.release.set()
    await closing
    assert send.sizes() == [2, 2, 2]
    assert send.most_in_flight == 1


# Shared calls, as the activities use them (what ``Coalescer`` pinned), and
# the activities themselves over a stand-in sink.


async def test_concurrent_callers_share_one_call_and_each_sees_its_result() -> None:
    send = FakeSend()
    b = batcher(send, window_s=0.005, max_items=2000)

    async def activity(n: int) -> int:
        return await b.submit(None, [f"{n}-a", f"{n}-b"])

    results = await asyncio.gather(*(activity(n) for n in range(5)))
    assert results == [10] * 5
    [(key, items)] = send.calls
    assert key is None
    assert sorted(items) == sorted(f"{n}-{x}" for n in range(5) for x in "ab")


async def test_one_call_in_flight_per_key() -> None:
    send = FakeSend(hold=True)
    b = batcher(send, window_s=0.005)
    first = b.submit("tenant-a", ["r1"])
    other_key = b.submit("tenant-b", ["r9"])
    await until(lambda: len(send.calls) == 2)
    second = [b.submit("tenant-a", [f"r{n}"]) for n in (2, 3)]
    await asyncio.sleep(0.02)
    assert len(send.calls) == 2  # tenant-a's next call waits for its first
    send.release.set()
    await asyncio.gather(first, other_key, *second)
    assert [items for key, items in send.calls if key == "tenant-a"] == [
        ["r1"],
        ["r2", "r3"],
    ]
    assert send.most_in_flight == 2  # one per key


async def test_a_failure_reaches_each_caller_whose_items_it_carried() -> None:
    send = FakeSend(hold=True)
    b = batcher(send)
    carried = [b.submit(None, [n]) for n in range(3)]
    await until(lambda: send.calls)
    send.fail_once = OSError("disk full")
    after = b.submit(None, [9])  # in the next call, not the failed one
    send.release.set()
    results = await asyncio.gather(*carried, return_exceptions=True)
    assert [type(r) for r in results] == [OSError] * 3
    assert await after == 1
    assert await b.submit(None, [10]) == 1  # the key keeps working


class FakeSink:
    """Records each write; fails the writes while ``fail`` is set."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []
        self.fail: BaseException | None = None

    async def write(self, records: Sequence[SinkRecord]) -> int:
        self.writes.append([r.record_id for r in records])
        if self.fail is not None:
            raise self.fail
        return len(records)


def summary(tenant: str) -> PublishSummaryInput:
    return PublishSummaryInput(
        summary=TenantSummary(
            summary_id=f"{tenant}/w0",
            tenant_id=tenant,
            window_start="w0",
            window_end="w1",
            jobs_completed=1,
            jobs_timed_out=0,
            jobs_amended=0,
            events=1,
            analyses={},
            dead_letters=0,
        )
    )


def activities(sink: FakeSink) -> Activities:
    return Activities(
        client=None,  # type: ignore[arg-type]
        sink=sink,  # type: ignore[arg-type]
        pipeline=collected,
        config=WorkerConfig(),
    )


async def test_concurrent_activities_share_one_sink_write() -> None:
    sink = FakeSink()
    acts = activities(sink)
    await asyncio.gather(*(acts.publish_summary(summary(t)) for t in "abc"))
    [write] = sink.writes
    assert len(write) == 3


async def test_a_failed_sink_write_fails_each_activity_it_carried() -> None:
    sink = FakeSink()
    sink.fail = OSError("disk full")
    acts = activities(sink)
    results = await asyncio.gather(
        *(acts.publish_summary(summary(t)) for t in "abc"), return_exceptions=True
    )
    assert [type(r) for r in results] == [OSError] * 3
    assert len(sink.writes) == 1
    sink.fail = None
    await acts.publish_summary(summary("a"))  # a retry goes through
    assert len(sink.writes) == 2


# ``add`` and back-pressure, as the sender uses them.


async def test_added_items_go_in_order_with_submitted_chunks() -> None:
    send = FakeSend()
    b = batcher(send, window_s=NEVER)
    b.add(0, 1)
    b.add(0, 2)
    tracked = b.submit(0, [3, 4])
    b.add(0, 5)
    await b.flush()
    assert send.calls == [(0, [1, 2, 3, 4, 5])]
    assert tracked.result() == 5


async def test_a_trickle_goes_out_by_time_alone() -> None:
    send = FakeSend()
    b = batcher(send, window_s=0.01, max_items=500)
    b.add(0, "first")
    await until(lambda: send.calls)  # no flush, no full batch: the window
    b.add(0, "second")
    await until(lambda: len(send.calls) == 2)
    assert send.calls == [(0, ["first"]), (0, ["second"])]


async def test_added_items_never_pass_a_cap() -> None:
    send = FakeSend()
    b = batcher(send, window_s=NEVER, max_items=3, max_bytes=250, in_flight=4)
    for n in range(5):
        b.add(0, n, 100)
    b.add(0, "big", 400)  # alone over the byte cap: it goes alone
    b.add(0, 7, 10)
    await b.flush()
    assert [items for _, items in send.calls] == [[0, 1], [2, 3], [4], ["big"], [7]]


async def test_a_producer_waits_for_room_instead_of_failing() -> None:
    send = FakeSend(hold=True)
    b = batcher(send, window_s=NEVER, max_items=2, in_flight=1, max_queued=2)
    for n in range(4):  # one batch in flight, one full batch queued
        b.add(0, n)
    await until(lambda: send.calls)
    assert not b.has_room(0)
    waiting = asyncio.create_task(b.wait_for_room(0))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    send.release.set()  # the first call ends; the queued batch goes
    await asyncio.wait_for(waiting, 5)
    assert b.has_room(0)
    b.add(0, 4)
    future = await b.put(0, [5])
    await b.flush()
    assert send.calls == [(0, [0, 1]), (0, [2, 3]), (0, [4, 5])]
    assert future.result() == 2


async def test_closing_wakes_a_producer_waiting_for_room() -> None:
    send = FakeSend(hold=True)
    b = batcher(send, window_s=NEVER, max_items=1, max_queued=1)
    b.add(0, 0)
    b.add(0, 1)
    waiting = asyncio.create_task(b.put(0, [2]))
    await until(lambda: send.calls)
    closing = asyncio.create_task(b.close())
    with pytest.raises(Closed):
        await asyncio.wait_for(waiting, 5)
    send.release.set()
    await closing
    assert send.calls == [(0, [0]), (0, [1])]


# The ingress: one update per shard, ``Unavailable`` for the routes.


def event(n: int) -> bytes:
    return (
        b'{"type":"analysis.result","event_id":"e%d","tenant_id":"t","job_id":"j",'
        b'"analysis_type":"detect","part":0,"parts":1,"payload":{},'
        b'"at":"2026-01-01T00:00:00Z"}' % n
    )


class FakeClient:
    """Stands in for the Temporal client's update-with-start: records each
    ``ingest`` batch and acks it, holding calls while ``hold`` is set, or
    raising ``fail``."""

    def __init__(self, *, hold: bool = False) -> None:
        self.batches: list[IngestBatch] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.fail: BaseException | None = None

    async def execute_update_with_start_workflow(
        self, update: str, batch: IngestBatch, **_: Any
    ) -> IngestAck:
        self.batches.append(batch)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return IngestAck(accepted=len(batch.events), rejected=len(batch.rejections))

    def sizes(self) -> list[int]:
        return [len(b.events) + len(b.rejections) for b in self.batches]


def ingress(client: FakeClient, **options: Any) -> Ingress:
    settings = IngressSettings(shards=1, batch_window_s=0.005, **options)
    return Ingress(client, settings)  # type: ignore[arg-type]


async def test_the_ingress_sends_events_and_rejections_in_one_update() -> None:
    client = FakeClient()
    service = ingress(client)
    bad = reject(b"nope", "not valid JSON")
    good = parse_event(event(1))
    await asyncio.gather(
        service.acknowledge([(good, event(1))], {}),  # type: ignore[arg-type]
        service.acknowledge([(bad, b"nope")], {}),  # type: ignore[arg-type]
    )
    [batch] = client.batches
    assert batch.events == [good]
    assert batch.rejections == [bad]
    await service.close()


async def test_the_ingress_answers_unavailable_when_a_shard_is_full() -> None:
    client = FakeClient(hold=True)
    service = ingress(client, max_queued=1, in_flight=1)
    first = asyncio.create_task(
        service.acknowledge([(parse_event(event(0)), event(0))], {})  # type: ignore[arg-type]
    )
    await until(lambda: client.batches)
    second = asyncio.create_task(
        service.acknowledge([(parse_event(event(1)), event(1))], {})  # type: ignore[arg-type]
    )
    await until(lambda: service.batcher.queued(0) == 1)
    request: dict[str, Any] = {}
    with pytest.raises(Unavailable, match="shard 0 has 1 items queued"):
        await service.acknowledge([(parse_event(event(2)), event(2))], request)  # type: ignore[arg-type]
    assert request["shards"] == []
    client.release.set()
    await asyncio.gather(first, second)
    await service.close()
    with pytest.raises(Unavailable, match="shutting down"):
        await service.acknowledge([(parse_event(event(3)), event(3))], {})  # type: ignore[arg-type]
    assert client.sizes() == [1, 1]


async def test_the_ingress_answers_unavailable_when_the_update_fails() -> None:
    client = FakeClient()
    client.fail = RPCError("denied", RPCStatusCode.PERMISSION_DENIED, b"")
    service = ingress(client)
    with pytest.raises(Unavailable, match="RPCError"):
        await service.acknowledge([(parse_event(event(0)), event(0))], {})  # type: ignore[arg-type]
    await service.close()


# The sender: time, size and byte limits, back-pressure, errors.


async def lines(n: int) -> Any:
    for i in range(n):
        yield event(i)


async def test_the_sender_sends_a_trickle_by_time() -> None:
    client = FakeClient()
    sender = EventSender(client, shards=1, max_delay_s=0.01)  # type: ignore[arg-type]
    await sender.send(event(0))
    await until(lambda: client.batches)  # no flush, far from a full batch
    await sender.send(event(1))
    await until(lambda: len(client.batches) == 2)
    assert client.sizes() == [1, 1]
    await sender.flush()
    assert sender.summary.as_dict() == {
        "sent": 2,
        "accepted": 2,
        "duplicates": 0,
        "rejected": 0,
    }


async def test_the_sender_sends_a_full_batch_at_once() -> None:
    client = FakeClient()
    sender = EventSender(client, shards=1, batch_size=3, max_delay_s=NEVER)  # type: ignore[arg-type]
    for n in range(4):
        await sender.send(event(n))
    await until(lambda: client.batches)
    assert client.sizes() == [3]
    await sender.flush()
    assert client.sizes() == [3, 1]


async def test_the_sender_cuts_batches_at_the_byte_cap() -> None:
    client = FakeClient()
    size = len(event(0))
    sender = EventSender(client, shards=1, max_batch_bytes=2 * size)  # type: ignore[arg-type]
    await sender.send_all(lines(5))
    assert client.sizes() == [2, 2, 1]


async def test_the_sender_waits_while_every_slot_is_busy_and_a_batch_is_full() -> None:
    client = FakeClient(hold=True)
    acked: list[int] = []
    sender = EventSender(
        client,  # type: ignore[arg-type]
        shards=1,
        batch_size=2,
        in_flight=1,
        max_delay_s=NEVER,
        on_ack=lambda n, _ack: acked.append(n),
    )
    for n in range(4):  # one batch in flight, one full batch waiting
        await sender.send(event(n))
    producer = asyncio.create_task(sender.send(event(4)))
    await asyncio.sleep(0.02)
    assert not producer.done()
    assert client.sizes() == [2]
    client.release.set()
    await asyncio.wait_for(producer, 5)
    await sender.flush()
    assert client.sizes() == [2, 2, 1]
    assert acked == [2, 2, 1]
    assert sender.summary.accepted == 5


async def test_the_sender_keeps_rejections_in_their_shards_batch() -> None:
    client = FakeClient()
    sender = EventSender(client, shards=1)  # type: ignore[arg-type]
    await sender.send(event(0))
    await sender.send(b"not json")
    await sender.flush()
    [batch] = client.batches
    assert [e.event_id for e in batch.events] == ["e0"]
    assert len(batch.rejections) == 1
    assert sender.summary.rejected == 1


async def test_a_failed_send_surfaces_at_the_next_flush_and_send() -> None:
    client = FakeClient()
    client.fail = RPCError("denied", RPCStatusCode.PERMISSION_DENIED, b"")
    sender = EventSender(client, shards=1)  # type: ignore[arg-type]
    await sender.send(event(0))
    with pytest.raises(RPCError):
        await sender.flush()
    with pytest.raises(RPCError):
        await sender.send(event(1))
