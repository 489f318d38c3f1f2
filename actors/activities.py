"""Activities: thin adapters between the workflows and the outside world.

``deliver`` carries a proxy's batch to its job workflows (only a client can
send an update, so an activity does); ``publish_job`` and ``publish_summary``
write records to the sink. Where a publication is written (by ``deliver`` or
``publish_job``), the models turn its result version into rows
(``actors.models``). The logic they apply lives in ``actors.rules``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import structlog
from opentelemetry.trace import SpanKind
from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowFailureError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from actors import names, routing
from actors.contracts import (
    STATUS_KEY,
    TENANT_KEY,
    CatchUpInput,
    DeliverInput,
    DeliverResult,
    JobBatch,
    JobInput,
    JobOutcome,
    PublishJobInput,
    PublishSummaryInput,
    ReportInput,
    SettingsRequest,
    TenantInput,
    started_state,
)
from actors.metrics import DELIVERIES_IN_FLIGHT, DELIVERY_SECONDS, JOB_DELIVERIES
from actors.models import Model, model_records
from actors.pipelines import Pipeline
from actors.rules import job as job_rules
from actors.rules.job import BatchAck, JobState, Publication, Reply, RollupDelta
from actors.rules.proxy import JobDelivery, ProxySettings
from actors.rules.publish import job_records, rejection_records, too_late_records
from actors.rules.tenant import RollupBatch
from actors.settings import WorkerConfig
from sinks import Sink, SinkRecord
from sinks.fanout import FanOutSink
from wire import traces
from wire.batching import MicroBatcher
from wire.events import JobOpened

log = structlog.get_logger(__name__)

HEARTBEAT_EVERY_S = 5.0
# A catch-up workflow's input stays well under Temporal's 2 MiB payload limit
# (before the codec's compression): a deferred batch is split into chunks.
CATCH_UP_CHUNK_BYTES = 256 * 1024

_catch_up_records = msgspec.msgpack.Decoder(list[SinkRecord])

# A reopening's input carries the closed run's state and the late batch; past
# this (before compression), the two travel apart, well under Temporal's
# 2 MiB per payload.
REOPEN_INPUT_BYTES = 3 << 19

TOO_LATE = (
    "job already closed: the event arrived after the job's result was final "
    "and its linger period (for late events) had passed"
)


def _job_attributes(
    tenant_id: str, status: str = names.JOB_OPEN
) -> TypedSearchAttributes:
    """A new job's search attributes: its tenant, and its status (open, or
    what its first batch makes it, so that the job need not upsert it)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(TENANT_KEY, tenant_id),
            SearchAttributePair(STATUS_KEY, status),
        ]
    )


class Activities:
    """The worker's activities, sharing one client, sink, pipeline and models."""

    def __init__(
        self,
        *,
        client: Client,
        sink: Sink,
        pipeline: Pipeline,
        config: WorkerConfig,
        models: Sequence[Model] = (),
    ) -> None:
        self._client = client
        self._sink = sink
        self._pipeline = pipeline
        self._models = tuple(models)
        self._config = config
        # Concurrent activities share sink writes (one lock, one fsync) and
        # tenant reports (one update per tenant at a time, not one per job).
        # Each activity awaits the call that carried its own items, so it
        # completes only once they are durable and fails if that call failed.
        self._writes: MicroBatcher[None, SinkRecord, int] = MicroBatcher(
            lambda _, records: sink.write(records), window_s=0.005, max_items=2000
        )
        self._reports: MicroBatcher[str, RollupDelta, None] = MicroBatcher(
            self._send_report, window_s=0.05, max_items=500
        )
        # A fan-out defers what a sink that is down still has to take to
        # catch-up workflows, whose write_sink activities write it here.
        self._members = sink.members if isinstance(sink, FanOutSink) else {}
        if isinstance(sink, FanOutSink):
            sink.defer_to(self.defer)

    async def _write(self, records: list[SinkRecord]) -> None:
        if records:
            with traces.span(
                "eventflow.sink.write",
                kind=SpanKind.CLIENT,
                attributes={
                    "eventflow.records": len(records),
                    "eventflow.kinds": ",".join(sorted({r.kind for r in records})),
                },
            ):
                await self._writes.submit(None, records)

    @activity.defn(name=names.PROXY_SETTINGS)
    async def proxy_settings(self, request: SettingsRequest) -> ProxySettings:
        return self._config.proxy_settings(request.shard)

    @activity.defn(name=names.DELIVER)
    async def deliver(self, input: DeliverInput) -> DeliverResult:
        """Send each job its events with update-with-start, many at once, and
        write the publications the jobs hand back."""
        with (
            DELIVERIES_IN_FLIGHT.track_inprogress(),
            DELIVERY_SECONDS.time(),
            traces.span(
                "eventflow.deliver",
                attributes={
                    "eventflow.jobs": len(input.deliveries),
                    "eventflow.events": sum(len(d.events) for d in input.deliveries),
                    "eventflow.rejections": len(input.rejections),
                },
                links=[t for d in input.deliveries for t in d.traces],
            ),
        ):
            return await self._deliver(input)

    async def _deliver(self, input: DeliverInput) -> DeliverResult:
        # A retry skips the jobs an earlier attempt finished (their indexes
        # travel in the heartbeat). A job reached but not finished answers a
        # retry with the same reply, publication included.
        details = activity.info().heartbeat_details
        done: set[int] = set(details[0]) if details else set()
        # Rollups of publications already written travel with the heartbeat
        # too, so that a retry still returns them.
        rollups: dict[str, list[RollupDelta]] = (
            msgspec.convert(details[1], dict[str, list[RollupDelta]])
            if len(details) > 1
            else {}
        )
        await self._write(
            [SinkRecord.of(r) for r in rejection_records(input.rejections, input.at)]
        )
        semaphore = asyncio.Semaphore(self._config.delivery_concurrency)
        acks: list[BatchAck] = []
        late: list[JobDelivery] = []

        async def one(index: int, delivery: JobDelivery) -> None:
            # Each job's part of the delivery continues the trace its events
            # came in (its first batch's), so one request's way is one trace.
            with traces.continuing(
                "eventflow.deliver.job",
                delivery.traces,
                attributes={
                    "eventflow.tenant_id": delivery.tenant_id,
                    "eventflow.job_id": delivery.job_id,
                    "eventflow.events": len(delivery.events),
                },
            ):
                await deliver_one(index, delivery)

        async def deliver_one(index: int, delivery: JobDelivery) -> None:
            async with semaphore:
                reply = await self._send(delivery, f"{input.delivery_id}/{index}")
            if reply is None:
                late.append(delivery)
                events = delivery.events
                await self._write(
                    [
                        SinkRecord.of(r)
                        for r in too_late_records(events, TOO_LATE, input.at)
                    ]
                )
            else:
                acks.append(reply.ack)
                publication = reply.publication
                if publication is not None:
                    await self._write_publication(publication, input.at)
                    rollups.setdefault(delivery.tenant_id, []).append(
                        publication.rollup
                    )
            done.add(index)

        async def keep_alive() -> None:
            # A slow job must not make this attempt look like a dead worker.
            while True:
                activity.heartbeat(sorted(done), rollups)
                await asyncio.sleep(HEARTBEAT_EVERY_S)

        pulse = asyncio.create_task(keep_alive())
        try:
            outcomes = await asyncio.gather(
                *(one(i, d) for i, d in enumerate(input.deliveries) if i not in done),
                return_exceptions=True,
            )
        finally:
            pulse.cancel()
        if late:
            log.info(
                "events for closed jobs dead-lettered",
                events=sum(len(d.events) for d in late),
            )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            # What succeeded is in the last heartbeat; retry the rest.
            activity.heartbeat(sorted(done), rollups)
            raise failures[0]
        return DeliverResult(
            ack=BatchAck(
                accepted=sum(a.accepted for a in acks),
                duplicates=sum(a.duplicates for a in acks),
                rejected=sum(a.rejected for a in acks),
            ),
            too_late=sum(len(d.events) for d in late),
            rollups=rollups,
        )

    async def _send(self, delivery: JobDelivery, delivery_id: str) -> Reply | None:
        """One job's events; None when they come too late for it.

        A job runs as generations (``routing.job_run_id``): the first, then
        one per reopening. This walks them from the first: a running one
        takes the batch as an update; a closed one's result holds its state,
        from which the next generation starts with the batch (``_settled``
        says whether it must, ``_start`` starts it). Late events are taken
        for the linger after the latest generation's last publication, so a
        generation past its linger still leads on to the next, if there is
        one.
        Two deliveries racing to reopen compute the same next id and only one
        start wins; the other finds that run and updates it (or, if it has
        closed already, walks on), so every event lands in one generation.

        A delivery holding a ``job.opened`` most likely starts its job: it is
        started eagerly with the batch in its input (``_start``).
        """
        events = delivery.events
        if self._config.eager_start and any(isinstance(e, JobOpened) for e in events):
            input = self._job_input(delivery, delivery_id, None)
            reply = await self._start(input, 0)
            if reply is not None:
                return reply
        closed: JobState | None = None  # the last closed generation's state
        refused = 0
        while True:
            generation = 0 if closed is None else closed.generation + 1
            if closed is not None:
                settled, reply = self._settled(closed, delivery, delivery_id)
                if settled and reply is not None:
                    return reply
                if settled and not await self._exists(delivery, generation):
                    # Past the linger of the latest generation: too late.
                    JOB_DELIVERIES.labels(how="too_late").inc()
                    return None
                input = self._job_input(delivery, delivery_id, closed)
                # A closed state near the job's byte cap and a large batch
                # could pass Temporal's payload limit together: such a batch
                # goes as an update, the state alone in the start.
                small = len(msgspec.msgpack.encode(input)) <= REOPEN_INPUT_BYTES
                if self._config.eager_start and small:
                    reply = await self._start(input, generation)
                    if reply is not None:
                        return reply
            reply = await self._update(delivery, delivery_id, generation, closed)
            if reply is not None:
                return reply
            workflow_id = routing.job_run_id(
                delivery.tenant_id, delivery.job_id, generation
            )
            try:
                outcome = await self._client.get_workflow_handle(
                    workflow_id, result_type=JobOutcome
                ).result()
            except WorkflowFailureError:
                # Terminated or failed after refusing the update: the next
                # update-with-start restarts it (reuse policy).
                refused += 1
                if refused > 3:
                    raise
                continue
            if outcome.state is None:
                return None  # it stayed open for its linger and closed for good
            closed = outcome.state

    def _settled(
        self, closed: JobState, delivery: JobDelivery, delivery_id: str
    ) -> tuple[bool, Reply | None]:
        """What a delivery to a closed job comes to without a new run, if it
        can (``(True, reply)``): the same reply for a retry of the delivery
        the job last took, None when it is past this generation's linger
        (too late, unless a later generation exists), the reply for a batch
        of duplicates only. ``(False, None)``: the batch changes the job,
        which must reopen."""
        last = closed.last_delivery
        if last is not None and last.delivery_id == delivery_id:
            JOB_DELIVERIES.labels(how="closed").inc()
            return True, last
        now = datetime.now(UTC)
        until = job_rules.late_until(closed, self._config.job)
        if until is None or now >= until:
            return True, None
        probe = job_rules.reopened(
            closed,
            delivery.events,
            delivery_id=delivery_id,
            at=now,
            settings=self._config.job,
        )
        reply = probe.last_delivery
        assert reply is not None
        if reply.publication is None:
            # Nothing but duplicates: the closed run holds every one of them.
            JOB_DELIVERIES.labels(how="closed").inc()
            return True, reply
        return False, None

    async def _exists(self, delivery: JobDelivery, generation: int) -> bool:
        """Whether the job's ``generation`` has been started (it may have
        closed since)."""
        workflow_id = routing.job_run_id(
            delivery.tenant_id, delivery.job_id, generation
        )
        try:
            await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    def _job_input(
        self, delivery: JobDelivery, delivery_id: str, closed: JobState | None
    ) -> JobInput:
        """A job's input carrying this delivery's batch: a new job's (no
        ``closed``), or the next generation of a closed one."""
        return JobInput(
            tenant_id=delivery.tenant_id,
            job_id=delivery.job_id,
            settings=self._config.job,
            state=closed,
            batch=JobBatch(
                events=delivery.events,
                delivery_id=delivery_id,
                first_queued_at=delivery.queued_at,
            ),
            batch_at=datetime.now(UTC),
        )

    async def _update(
        self,
        delivery: JobDelivery,
        delivery_id: str,
        generation: int,
        closed: JobState | None,
    ) -> Reply | None:
        """The batch as an update to the job's ``generation``, starting it if
        there is none (from ``closed``, the generation before, if any); None
        when that generation has closed."""
        state = None
        if closed is not None:
            state = msgspec.structs.replace(closed, generation=generation)
        start = WithStartWorkflowOperation(
            names.JOB,
            JobInput(
                tenant_id=delivery.tenant_id,
                job_id=delivery.job_id,
                settings=self._config.job,
                state=state,
            ),
            id=routing.job_run_id(delivery.tenant_id, delivery.job_id, generation),
            task_queue=routing.ENTITY_TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A generation that closed normally stays closed: its result
            # starts the next one.
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            result_type=JobOutcome,
            search_attributes=_job_attributes(
                delivery.tenant_id,
                (closed.last_status if closed else None) or names.JOB_OPEN,
            ),
        )
        JOB_DELIVERIES.labels(how="update").inc()
        try:
            return await self._client.execute_update_with_start_workflow(
                names.JOB_DELIVER,
                JobBatch(
                    events=delivery.events,
                    delivery_id=delivery_id,
                    first_queued_at=delivery.queued_at,
                ),
                start_workflow_operation=start,
                result_type=Reply,
            )
        except WorkflowAlreadyStartedError:
            # The failed start also fails the operation's handle future;
            # retrieve it so asyncio does not report it as never retrieved.
            with contextlib.suppress(WorkflowAlreadyStartedError):
                await start.workflow_handle()
            return None

    async def _start(self, input: JobInput, generation: int) -> Reply | None:
        """Start the job's ``generation`` with the batch in ``input``; the
        reply, or None when that generation exists (running, or closed: the
        caller's update finds out which).

        The job's first task computes its state from that input with
        ``contracts.started_state``, and so does this, from the same input:
        the reply is the job's own ``last_delivery``, known without asking
        the job, so the start is the delivery's only round trip. The start
        is eager: a worker of this process that polls the entity task queue
        runs the job's first task straight from the start's response. A
        retry of this delivery finds the job started and gets the same reply
        from its update (or, once it has closed, from its result).
        """
        state = started_state(input)
        assert state is not None
        assert state.last_delivery is not None
        try:
            handle = await self._client.start_workflow(
                names.JOB,
                input,
                id=routing.job_run_id(input.tenant_id, input.job_id, generation),
                task_queue=routing.ENTITY_TASK_QUEUE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                search_attributes=_job_attributes(
                    input.tenant_id, state.last_status or names.JOB_OPEN
                ),
                request_eager_start=True,
            )
        except WorkflowAlreadyStartedError:
            JOB_DELIVERIES.labels(how="start_refused").inc()
            return None
        if generation:
            JOB_DELIVERIES.labels(how="reopen").inc()
        eager = bool(getattr(handle, "__temporal_eagerly_started", False))
        JOB_DELIVERIES.labels(how="eager_start" if eager else "start").inc()
        return state.last_delivery

    async def _write_publication(self, publication: Publication, at: datetime) -> None:
        """The result version, its refusals and its models' rows, in one write.

        The models run here, in the activity, never in workflow code; a row
        that fails its checks, or a model that raises, becomes a dead letter
        beside the rest (``actors.models.model_records``), never a failed
        activity.
        """
        made = job_records(publication, self._pipeline, at)
        records = [SinkRecord.of(r) for r in made]
        if publication.snapshot is not None and self._models:
            records += model_records(publication.snapshot, self._models, at)
        await self._write(records)

    @activity.defn(name=names.REPORT)
    async def report(self, input: ReportInput) -> None:
        """Report rollups a proxy gathered: one update per tenant."""
        await asyncio.gather(
            *(
                self._reports.submit(tenant_id, deltas)
                for tenant_id, deltas in input.rollups.items()
            )
        )

    @activity.defn(name=names.PUBLISH_JOB)
    async def publish_job(self, input: PublishJobInput) -> None:
        """Write a publication the job made itself (its deadline passed, or
        events arrived while it was publishing), and report it."""
        await self._write_publication(input.publication, input.at)
        await self._reports.submit(input.tenant_id, [input.publication.rollup])

    async def _send_report(self, tenant_id: str, deltas: list[RollupDelta]) -> None:
        start = WithStartWorkflowOperation(
            names.TENANT,
            TenantInput(tenant_id=tenant_id, settings=self._config.tenant),
            id=routing.tenant_id_of(tenant_id),
            task_queue=routing.ENTITY_TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        await self._client.execute_update_with_start_workflow(
            names.TENANT_REPORT,
            RollupBatch(deltas=deltas),
            start_workflow_operation=start,
            result_type=int,
        )

    @activity.defn(name=names.PUBLISH_SUMMARY)
    async def publish_summary(self, input: PublishSummaryInput) -> None:
        await self._write([SinkRecord.of(input.summary)])

    async def defer(self, sink: str, records: Sequence[SinkRecord]) -> None:
        """Hand ``records`` to catch-up workflows that write them to ``sink``
        once it is back (``actors.catchup``); returns once they are started.
        Deferring the same records again finds the same workflows."""
        chunks: list[list[SinkRecord]] = [[]]
        size = 0
        for record in records:
            if chunks[-1] and size + len(record.body) > CATCH_UP_CHUNK_BYTES:
                chunks.append([])
                size = 0
            chunks[-1].append(record)
            size += len(record.body)
        await asyncio.gather(
            *(
                self._client.start_workflow(
                    names.SINK_CATCH_UP,
                    CatchUpInput(
                        sink=sink,
                        records=msgspec.msgpack.encode(chunk),
                        count=len(chunk),
                    ),
                    id=routing.catch_up_id(
                        sink, [(r.kind, r.record_id) for r in chunk]
                    ),
                    task_queue=routing.ENTITY_TASK_QUEUE,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    # What ``script.inspect sinks`` lists, without the input.
                    memo={names.CATCH_UP_SINK: sink, names.CATCH_UP_COUNT: len(chunk)},
                )
                for chunk in chunks
            )
        )

    @activity.defn(name=names.WRITE_SINK)
    async def write_sink(self, input: CatchUpInput) -> int:
        """Write a catch-up workflow's records to the one sink that still has
        to take them; fails (and is retried) while it is down."""
        sink = self._members.get(input.sink)
        if sink is None:
            raise ApplicationError(
                f"this worker writes no sink named {input.sink!r} (its sinks: "
                f"{', '.join(self._members) or 'one, not a fan-out'}); another "
                "worker with that sink will take the retry",
                type="UnknownSink",
            )
        return await sink.write(_catch_up_records.decode(input.records))
