"""Models: the dbt-model equivalent, a job's result as rows of a table.

A model is a pure, deterministic function from a ``JobSnapshot`` to rows of
the table it declares (``wire.models.ModelTable``): a msgspec Struct whose
fields are the columns (the contract) and whose constraints are the data
tests, and a key that with ``result_id`` makes a row unique.

    class Detection(msgspec.Struct, kw_only=True):
        part: int
        index: int
        label: Literal["person", "car"]
        score: Annotated[float, msgspec.Meta(ge=0, le=1)]

    @model("detections", row=Detection, key=("part", "index"))
    def detections(snapshot: JobSnapshot) -> Iterator[Detection]: ...

Rows may be Structs or dicts; the system adds ``result_id``, ``tenant_id``,
``job_id`` and ``version`` (the result's). Models run in the publish
activity, never in workflow code (``model_records``): a row that fails its
contract or a test is not written but becomes a dead letter (source
``model``) naming the model, the column and the check, and so does a model
that raises; the job's result and every other row are written all the same.
Point a worker at your own with ``--model package.module:name``; the
built-in ``job_parts`` is on unless ``--no-job-parts``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from actors.pipelines import import_ref
from actors.rules.job import JobSnapshot, result_id
from sinks import SinkRecord
from wire.models import ModelTable, RowError
from wire.records import DeadLetter
from wire.synthetic import LABELS
from wire.validate import RAW_KEEP_BYTES, cap_reason

Rows = Callable[[JobSnapshot], Iterable[Any]]

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Model:
    """A table (name, row Struct, key) and the function that fills it."""

    table: ModelTable
    rows: Rows

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def row(self) -> type[msgspec.Struct]:
        return self.table.row

    @property
    def key(self) -> tuple[str, ...]:
        return self.table.key


def model(
    name: str, *, row: type[msgspec.Struct], key: Sequence[str]
) -> Callable[[Rows], Model]:
    """Make a function from a snapshot to rows the model of table ``name``."""
    table = ModelTable(name, row, tuple(key))

    def decorate(rows: Rows) -> Model:
        return Model(table, rows)

    return decorate


# -- job_parts: built in, on by default ---------------------------------------


class JobPart(msgspec.Struct, frozen=True, kw_only=True):
    """One part a result version received."""

    analysis_type: str
    part: int
    parts: int
    event_id: str
    payload: msgspec.Raw  # the producer's JSON object, byte for byte


@model("job_parts", row=JobPart, key=("analysis_type", "part"))
def job_parts(snapshot: JobSnapshot) -> Iterator[JobPart]:
    """One row per part the result version holds, by type and part."""
    for analysis_type, slot in sorted(snapshot.slots.items()):
        for event in slot.events:
            if event is not None:
                yield JobPart(
                    analysis_type=analysis_type,
                    part=event.part,
                    parts=slot.parts,
                    event_id=event.event_id,
                    payload=msgspec.Raw(event.payload),
                )


# -- detections: the example model the demo runs -----------------------------

Label = Literal[LABELS]  # type: ignore[valid-type]
Score = Annotated[float, msgspec.Meta(ge=0, le=1)]
Coordinate = Annotated[int, msgspec.Meta(ge=0)]


class Detection(msgspec.Struct, frozen=True, kw_only=True):
    """One object a ``detect`` part found (``wire.synthetic``'s payloads)."""

    part: int
    index: int  # the detection's place in its part's list
    detector: Annotated[str, msgspec.Meta(pattern=r"^[a-z]+-v[0-9]+$", max_length=32)]
    label: Label  # accepted values
    score: Score  # a range test
    box: Annotated[list[Coordinate], msgspec.Meta(min_length=4, max_length=4)]


class _DetectPayload(msgspec.Struct):
    model: Any = None
    detections: list[dict[str, Any]] = []


_detect_payload = msgspec.json.Decoder(_DetectPayload)


@model("detections", row=Detection, key=("part", "index"))
def detections(snapshot: JobSnapshot) -> Iterator[dict[str, Any]]:
    """One row per detected object in the job's ``detect`` parts."""
    slot = snapshot.slots.get("detect")
    if slot is None:
        return
    for event in slot.events:
        if event is None:
            continue
        payload = _detect_payload.decode(event.payload)
        for index, found in enumerate(payload.detections):
            yield {
                "part": event.part,
                "index": index,
                "detector": payload.model,
                "label": found.get("label"),
                "score": found.get("score"),
                "box": found.get("box"),
            }


BUILT_IN = "actors.models:job_parts"
EXAMPLE = "actors.models:detections"


def load_models(refs: Sequence[str], *, job_parts: bool = True) -> tuple[Model, ...]:
    """The models ``module:name`` references name, ``job_parts`` first.

    Raises:
        ValueError: a reference does not name a ``Model``, or two models
            write one table.
    """
    found: list[Model] = []
    for ref in ([BUILT_IN] if job_parts else []) + list(refs):
        value, _ = import_ref(ref, what="model", shape="module:name")
        if not isinstance(value, Model):
            raise ValueError(
                f"{ref!r} is not a model (make one with @actors.models.model)"
            )
        if any(m is value for m in found):
            continue
        if any(m.name == value.name for m in found):
            raise ValueError(f"two models write the table {value.name!r}")
        found.append(value)
    return tuple(found)


# -- running them: in the publish activity -----------------------------------


def model_records(
    snapshot: JobSnapshot, models: Sequence[Model], at: datetime
) -> list[SinkRecord]:
    """Every model's rows of one result version, and a dead letter for each
    row that fails (and for each model that raises).

    Deterministic, as the models are: a retried activity writes the same
    record ids, so the sink writes each row and dead letter once.
    """
    rid = result_id(snapshot.tenant_id, snapshot.job_id, snapshot.version)
    system = {
        "result_id": rid,
        "tenant_id": snapshot.tenant_id,
        "job_id": snapshot.job_id,
        "version": snapshot.version,
    }
    records: list[SinkRecord] = []
    for m in models:
        try:
            rows = list(m.rows(snapshot))
        except Exception as error:  # a model's bug must not stop the job
            records.append(
                _dead_letter(
                    f"{rid}/model/{m.name}",
                    f"model {m.name} raised {type(error).__name__}: {error}",
                    _encode(system).decode(),
                    snapshot,
                    at,
                )
            )
            continue
        seen: dict[str, int] = {}
        for index, row in enumerate(rows):
            try:
                record_id, body = m.table.check(row, system)
                if record_id in seen:
                    raise RowError(
                        None,
                        "unique",
                        f"key ({', '.join(m.table.primary_key)}) = {record_id} "
                        f"repeats row {seen[record_id]}",
                    )
            except RowError as error:
                records.append(
                    _dead_letter(
                        f"{rid}/model/{m.name}/{index}",
                        f"model {m.name}: row {index}: {error}",
                        _row_text(row, system),
                        snapshot,
                        at,
                    )
                )
                continue
            seen[record_id] = index
            records.append(SinkRecord(m.name, record_id, body))
    return records


def _row_text(row: Any, system: dict[str, Any]) -> str:
    try:
        values = (
            msgspec.structs.asdict(row)
            if isinstance(row, msgspec.Struct)
            else dict(row)
        )
        return _encode({**values, **system}).decode()
    except (TypeError, ValueError, OverflowError):
        return repr(row)


def _dead_letter(
    dead_letter_id: str, reason: str, raw: str, snapshot: JobSnapshot, at: datetime
) -> SinkRecord:
    reason = cap_reason(reason)
    data = raw.encode()
    truncated = len(data) > RAW_KEEP_BYTES
    if truncated:
        raw = data[:RAW_KEEP_BYTES].decode(errors="ignore")
    return SinkRecord.of(
        DeadLetter(
            dead_letter_id=dead_letter_id,
            reason=reason,
            source="model",
            raw=raw,
            raw_truncated=truncated,
            tenant_id=snapshot.tenant_id,
            job_id=snapshot.job_id,
            at=at.isoformat(),
        )
    )
