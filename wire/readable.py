"""The readable form of the project's payloads: what the codec server speaks.

Temporal's UI and CLI show a payload as text only when it is ``json/plain``;
the project's payloads are msgpack (``binary/msgpack``), most of them
compressed with Zstandard (``binary/zstd``). ``ReadableCodec`` translates
both ways, without knowing the payload's type:

* ``decode``: a project payload (zstd, msgpack, or zstd around msgpack)
  becomes ``json/plain`` JSON of the same value. Datetimes become RFC 3339
  strings (msgspec reads those back into ``datetime`` fields). An
  ``analysis.result`` event's ``payload`` (the producer's JSON bytes) is
  shown as the JSON it is, so an event reads exactly as its producer sent it
  (the README's event contract). Any other bytes become ``{"$bytes": TEXT}``
  when they are UTF-8, ``{"$base64": B64}`` otherwise. A map of the value
  that could be taken for one of these markers (one key, ``$bytes``,
  ``$base64`` or ``$map``) is wrapped as ``{"$map": MAP}``, so the
  translation can be undone exactly.
* ``encode``: ``json/plain`` JSON in that form (typed into the UI or the CLI
  as an update's or signal's input) becomes the msgpack payload the
  workflows' typed decoders read, compressed as ``DATA_CONVERTER`` would.
  A producer payload given as JSON is written compactly (no whitespace);
  a ``{"$bytes": ...}`` or ``{"$base64": ...}`` there gives those bytes.

Anything else passes through unchanged: payloads of other encodings
(``binary/null``, ``json/protobuf``, ``binary/plain``, ``json/plain`` on
``decode``), and project payloads whose value JSON cannot hold exactly (a
NaN, a msgpack extension other than timestamps, a non-string map key), which
the UI then shows as it would without a codec. ``encode`` raises
``ReadableError`` for JSON it cannot translate (broken JSON, a marker with a
wrong value), so that whoever typed it is told.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
import zstandard
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from wire._converter import MSGPACK_ENCODING, ZSTD_ENCODING, ZstdPayloadCodec

__all__ = [
    "JSON_ENCODING",
    "ReadableCodec",
    "ReadableError",
    "from_readable",
    "to_readable",
]

JSON_ENCODING = b"json/plain"
BYTES = "$bytes"
BASE64 = "$base64"
MAP = "$map"
_MARKERS = frozenset((BYTES, BASE64, MAP))
# The events whose bytes field is the producer's JSON (wire.events).
_EVENT_TAG = "analysis.result"
_EVENT_JSON_FIELD = "payload"

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode
_msgpack_encode = msgspec.msgpack.Encoder().encode
_msgpack_decode = msgspec.msgpack.Decoder().decode


class ReadableError(ValueError):
    """JSON that cannot become a project payload; the message says where."""


class _NotJSON(Exception):
    """A decoded value JSON cannot hold exactly: the payload stays as it is."""


def to_readable(value: Any) -> Any:
    """A msgpack-decoded value in the readable JSON form (see the module).

    Raises:
        _NotJSON: the value holds something JSON cannot carry exactly.
    """
    return _readable(value, "$")


def _readable(value: Any, path: str) -> Any:
    if isinstance(value, dict):
        event = _is_event(value)
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotJSON(f"a {type(key).__name__} map key at {path}")
            if event and key == _EVENT_JSON_FIELD and isinstance(item, bytes):
                out[key] = _event_json(item)
            else:
                out[key] = _readable(item, f"{path}.{key}")
        # A map encode would read as a marker, or as an event whose payload
        # is JSON to be turned into bytes, is wrapped: encode takes it as is.
        literal = event and not isinstance(value[_EVENT_JSON_FIELD], bytes)
        return {MAP: out} if literal or _looks_like_marker(out) else out
    if isinstance(value, list):
        return [_readable(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, bytes):
        return _bytes_marker(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise _NotJSON(f"{value} at {path}")
    if value is None or isinstance(value, str | int | float | datetime):
        return value
    raise _NotJSON(f"a {type(value).__name__} at {path}")


def _looks_like_marker(mapping: dict[str, Any]) -> bool:
    return len(mapping) == 1 and next(iter(mapping)) in _MARKERS


def _is_event(mapping: dict[Any, Any]) -> bool:
    """An ``analysis.result`` event, whose ``payload`` is the producer's JSON."""
    return mapping.get("type") == _EVENT_TAG and _EVENT_JSON_FIELD in mapping


def _bytes_marker(data: bytes) -> dict[str, str]:
    try:
        return {BYTES: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {BASE64: base64.b64encode(data).decode("ascii")}


def _event_json(data: bytes) -> Any:
    """An event's payload bytes as the JSON value they hold."""
    try:
        value = _json_decode(data)
    except msgspec.DecodeError:
        # Not JSON (the edge lets no such event in, but state is state).
        return _bytes_marker(data)
    if isinstance(value, dict) and _looks_like_marker(value):
        return {MAP: value}
    return value


def from_readable(value: Any) -> Any:
    """The readable JSON form back to the value msgpack should carry.

    Raises:
        ReadableError: a marker with a value it cannot take.
    """
    return _value(value, "$")


def _value(value: Any, path: str) -> Any:
    if isinstance(value, dict):
        if _looks_like_marker(value):
            ((marker, inner),) = value.items()
            if marker != MAP:
                return _marker_bytes(marker, inner, path)
            if not isinstance(inner, dict):
                raise ReadableError(f"{MAP} takes an object - at `{path}.{MAP}`")
            return _mapping(inner, f"{path}.{MAP}", literal=True)
        return _mapping(value, path)
    if isinstance(value, list):
        return [_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def _mapping(
    value: dict[str, Any], path: str, *, literal: bool = False
) -> dict[str, Any]:
    event = not literal and _is_event(value)
    out = {}
    for key, item in value.items():
        if event and key == _EVENT_JSON_FIELD:
            out[key] = _event_bytes(item, f"{path}.{key}")
        else:
            out[key] = _value(item, f"{path}.{key}")
    return out


def _marker_bytes(marker: str, inner: Any, path: str) -> bytes:
    if not isinstance(inner, str):
        raise ReadableError(f"{marker} takes a string - at `{path}.{marker}`")
    if marker == BYTES:
        return inner.encode("utf-8")
    try:
        return base64.b64decode(inner, validate=True)
    except binascii.Error:
        raise ReadableError(f"{BASE64} takes base64 text - at `{path}`") from None


def _event_bytes(value: Any, path: str) -> bytes:
    """An event's payload given as JSON: the compact JSON text of it."""
    if isinstance(value, dict) and _looks_like_marker(value):
        ((marker, inner),) = value.items()
        if marker != MAP:
            return _marker_bytes(marker, inner, path)
        value = inner
    return _json_encode(value)


def _encoding(payload: Payload) -> bytes:
    return payload.metadata.get("encoding", b"")


def _with_encoding(payload: Payload, encoding: bytes, data: bytes) -> Payload:
    # Other metadata the payload carries stays with it.
    metadata = dict(payload.metadata)
    metadata["encoding"] = encoding
    return Payload(metadata=metadata, data=data)


def _msgpack_to_json(payload: Payload) -> Payload:
    if _encoding(payload) != MSGPACK_ENCODING:
        return payload
    try:
        data = _json_encode(to_readable(_msgpack_decode(payload.data)))
    except (msgspec.DecodeError, _NotJSON):
        return payload
    return _with_encoding(payload, JSON_ENCODING, data)


def _json_to_msgpack(payload: Payload, index: int) -> Payload:
    try:
        value = _json_decode(payload.data)
    except msgspec.DecodeError as exc:
        raise ReadableError(f"payload {index} is not JSON: {exc}") from None
    try:
        readable = from_readable(value)
    except ReadableError as exc:
        raise ReadableError(f"payload {index}: {exc}") from None
    return _with_encoding(payload, MSGPACK_ENCODING, _msgpack_encode(readable))


class ReadableCodec(PayloadCodec):
    """``decode``: project payloads to readable ``json/plain``; ``encode``:
    readable ``json/plain`` to project payloads (see the module).

    Args:
        compression: the codec the project's payloads pass through after
            msgpack; ``DATA_CONVERTER``'s by default.
    """

    def __init__(self, compression: ZstdPayloadCodec | None = None) -> None:
        self._compression = compression or ZstdPayloadCodec()

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            if _encoding(payload) == ZSTD_ENCODING:
                try:
                    (payload,) = await self._compression.decode([payload])
                except (zstandard.ZstdError, DecodeError):
                    out.append(payload)  # a broken frame is shown as it is
                    continue
            out.append(_msgpack_to_json(payload))
        return out

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for index, payload in enumerate(payloads):
            if _encoding(payload) != JSON_ENCODING:
                out.append(payload)
                continue
            packed = _json_to_msgpack(payload, index)
            out.extend(await self._compression.encode([packed]))
        return out
