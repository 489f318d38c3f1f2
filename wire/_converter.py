"""The data converter every client, worker and replayer in the project uses.

Two layers:

* ``MsgspecPayloadConverter`` turns values into msgpack with msgspec, one
  cached encoder and one cached typed decoder per type hint. msgspec Structs,
  dataclasses, dicts, lists and scalars are all covered; msgpack is both
  smaller and much cheaper to produce than the SDK's JSON.
* ``ZstdPayloadCodec`` compresses any payload above a small size with
  Zstandard, and passes through payloads it did not write and small ones
  (where the frame header would cost more than it saves).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import msgspec
import zstandard
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    BinaryNullPayloadConverter,
    BinaryPlainPayloadConverter,
    BinaryProtoPayloadConverter,
    CompositePayloadConverter,
    DataConverter,
    EncodingPayloadConverter,
    JSONProtoPayloadConverter,
    PayloadCodec,
)

MSGPACK_ENCODING = b"binary/msgpack"
ZSTD_ENCODING = b"binary/zstd"


def prime_struct_types() -> int:
    """Build the decoding information of every msgspec Struct type loaded so
    far, in the calling thread; returns how many were primed.

    msgspec builds a Struct type's decoding information on its first use and
    publishes it before it is complete: a thread that decodes that type
    meanwhile reads a missing field type and crashes the process (SIGSEGV in
    ``mpack_decode``; msgspec 0.22, reproduced by
    ``tests/unit/test_converter.py``). A worker decodes payloads in several
    threads at once (workflow activations run in a thread pool), so it calls
    this once everything is imported and before its workers start.
    """
    primed = 0
    stack = list(msgspec.Struct.__subclasses__())
    seen: set[type] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        try:
            msgspec.msgpack.Decoder(cls)
        except (TypeError, NameError):  # a type msgspec cannot decode into
            continue
        primed += 1
    return primed


class _TypedDecoders:
    """One msgspec decoder per type hint, built on first use.

    Types are hashable and few (one per workflow, update and activity
    argument), so the cache stays small.
    """

    def __init__(self, make: Any) -> None:
        self._make = make
        self._decoders: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def get(self, type_hint: Any) -> Any:
        decoder = self._decoders.get(type_hint)
        if decoder is None:
            with self._lock:
                decoder = self._decoders.setdefault(
                    type_hint, self._make(Any if type_hint is None else type_hint)
                )
        return decoder


class MsgspecPayloadConverter(EncodingPayloadConverter):
    """msgpack via msgspec for every value msgspec can encode."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoders = _TypedDecoders(msgspec.msgpack.Decoder)

    @property
    def encoding(self) -> str:
        return MSGPACK_ENCODING.decode()

    def to_payload(self, value: Any) -> Payload | None:
        try:
            data = self._encoder.encode(value)
        except TypeError:
            # Not ours (an exception object, say): let the next converter try.
            return None
        return Payload(metadata={"encoding": MSGPACK_ENCODING}, data=data)

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        return self._decoders.get(type_hint).decode(payload.data)


class MsgspecJSONPayloadConverter(EncodingPayloadConverter):
    """Reads ``json/plain`` payloads (from the CLI or UI) into typed values.

    Never chosen for writing: the msgpack converter before it takes every
    value msgspec can encode.
    """

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoders = _TypedDecoders(msgspec.json.Decoder)

    @property
    def encoding(self) -> str:
        return "json/plain"

    def to_payload(self, value: Any) -> Payload | None:
        try:
            data = self._encoder.encode(value)
        except TypeError:
            return None
        return Payload(metadata={"encoding": b"json/plain"}, data=data)

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        return self._decoders.get(type_hint).decode(payload.data)


class MsgspecPayloadConverterSet(CompositePayloadConverter):
    """None, bytes and protobufs as the SDK does them; everything else msgpack."""

    def __init__(self) -> None:
        super().__init__(
            BinaryNullPayloadConverter(),
            BinaryPlainPayloadConverter(),
            JSONProtoPayloadConverter(),
            BinaryProtoPayloadConverter(),
            MsgspecPayloadConverter(),
            MsgspecJSONPayloadConverter(),
        )


class ZstdPayloadCodec(PayloadCodec):
    """Compresses whole payloads (metadata included) with Zstandard.

    Args:
        min_size: payloads smaller than this many bytes pass through untouched.
        level: the Zstandard level; low levels keep the worker's CPU for work.
    """

    def __init__(self, *, min_size: int = 96, level: int = 3) -> None:
        self._min_size = min_size
        self._level = level
        # zstandard contexts are not safe to share between threads.
        self._local = threading.local()

    def _contexts(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
        contexts = getattr(self._local, "contexts", None)
        if contexts is None:
            contexts = (
                zstandard.ZstdCompressor(level=self._level),
                zstandard.ZstdDecompressor(),
            )
            self._local.contexts = contexts
        return contexts

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        compressor, _ = self._contexts()
        out = []
        for payload in payloads:
            if payload.ByteSize() < self._min_size:
                out.append(payload)
                continue
            raw = payload.SerializeToString()
            packed = compressor.compress(raw)
            if len(packed) >= len(raw):
                out.append(payload)
            else:
                out.append(Payload(metadata={"encoding": ZSTD_ENCODING}, data=packed))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        _, decompressor = self._contexts()
        out = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ZSTD_ENCODING:
                out.append(payload)
                continue
            unpacked = Payload()
            unpacked.ParseFromString(decompressor.decompress(payload.data))
            out.append(unpacked)
        return out


DATA_CONVERTER = DataConverter(
    payload_converter_class=MsgspecPayloadConverterSet,
    payload_codec=ZstdPayloadCodec(),
)
"""The project's one data converter: msgpack payloads, Zstandard-compressed.

Workers, client scripts, tests and the replayer must all use it; a history
written with it cannot be read without it.
"""
