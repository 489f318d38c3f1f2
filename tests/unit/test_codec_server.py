"""The codec server: the readable translation of the project's payloads
(``wire.readable``) and its HTTP face (``runtime.codec``) under aiohttp's
test server (a real server in this process)."""

from __future__ import annotations

import argparse
import base64
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from actors.rules.proxy import IngestBatch
from runtime.codec import (
    DEFAULT_CORS_ORIGINS,
    CodecServerSettings,
    create_app,
    origins,
)
from runtime.settings import add_options
from script.devserver import command, ui_origins
from tests.support.payloads import MARKER, OPENED, examples, missing_examples, result
from wire import DATA_CONVERTER
from wire._converter import MSGPACK_ENCODING, ZSTD_ENCODING
from wire.readable import ReadableCodec, ReadableError, from_readable, to_readable

CODEC = ReadableCodec()
VALUES = [
    pytest.param(v, id=f"{type(v).__name__}-{i}") for i, v in enumerate(examples())
]
ORIGIN = "http://localhost:8233"


def json_payload(value: Any) -> Payload:
    return Payload(
        metadata={"encoding": b"json/plain"}, data=msgspec.json.encode(value)
    )


def test_every_payload_struct_has_an_example() -> None:
    assert missing_examples() == set()


@pytest.mark.parametrize("value", VALUES)
async def test_decode_gives_json_plain_of_the_value(value: Any) -> None:
    [readable] = await CODEC.decode(await DATA_CONVERTER.encode([value]))
    assert readable.metadata["encoding"] == b"json/plain"
    shown = msgspec.json.decode(readable.data)
    # The value's own JSON, but for the bytes the readable form spells out.
    assert shown == to_readable(msgspec.to_builtins(value, builtin_types=(bytes,)))


@pytest.mark.parametrize("value", VALUES)
async def test_encode_of_the_decoded_json_gives_the_value_back(value: Any) -> None:
    [readable] = await CODEC.decode(await DATA_CONVERTER.encode([value]))
    encoded = await CODEC.encode([readable])
    assert encoded[0].metadata["encoding"] in (MSGPACK_ENCODING, ZSTD_ENCODING)
    [decoded] = await DATA_CONVERTER.decode(encoded, [type(value)])
    assert type(decoded) is type(value)
    assert decoded == value


@pytest.mark.parametrize("value", [3, "text", ["a/b/e1"], {"k": 1.5}, True])
async def test_plain_values_round_trip(value: Any) -> None:
    [readable] = await CODEC.decode(await DATA_CONVERTER.encode([value]))
    assert msgspec.json.decode(readable.data) == value
    assert await DATA_CONVERTER.decode(await CODEC.encode([readable])) == [value]


async def test_an_event_payload_reads_as_the_json_its_producer_sent() -> None:
    event = result("detect", 0)
    [readable] = await CODEC.decode(await DATA_CONVERTER.encode([event]))
    shown = msgspec.json.decode(readable.data)
    assert shown["payload"] == msgspec.json.decode(event.payload)
    assert shown["payload"]["label"] == MARKER
    assert shown["at"] == "2026-01-01T12:30:00Z"


async def test_other_bytes_read_as_text_or_base64() -> None:
    [readable] = await CODEC.decode(
        await DATA_CONVERTER.encode(
            [{"text": b'{"a": 1}', "binary": b"\xff\xfe", "event": OPENED}]
        )
    )
    shown = msgspec.json.decode(readable.data)
    assert shown["text"] == {"$bytes": '{"a": 1}'}
    assert shown["binary"] == {"$base64": base64.b64encode(b"\xff\xfe").decode()}


async def test_an_update_typed_in_the_ui_reaches_the_workflow_as_its_type() -> None:
    """What an operator types: the event contract's JSON, payload an object."""
    typed = {
        "events": [
            {
                "type": "analysis.result",
                "event_id": "e1",
                "tenant_id": "tenant-a",
                "job_id": "job-1",
                "analysis_type": "detect",
                "part": 0,
                "parts": 1,
                "payload": {"boxes": [], "label": MARKER},
                "at": "2026-01-01T00:00:00Z",
            }
        ],
        "rejections": [
            {"rejection_id": "r1", "reason": "typed", "raw": {"$bytes": "junk"}}
        ],
    }
    encoded = await CODEC.encode([json_payload(typed)])
    [batch] = await DATA_CONVERTER.decode(encoded, [IngestBatch])
    assert batch.events[0].payload == b'{"boxes":[],"label":"zebra-crossing"}'
    assert batch.events[0].at.isoformat() == "2026-01-01T00:00:00+00:00"
    assert batch.rejections[0].raw == b"junk"


async def test_an_event_payload_is_written_compactly() -> None:
    """The one change a round trip makes: whitespace in a producer's JSON."""
    event = result("detect", 0, payload=b'{ "label" : "car",  "score": 0.5 }')
    [readable] = await CODEC.decode(await DATA_CONVERTER.encode([event]))
    [back] = await DATA_CONVERTER.decode(await CODEC.encode([readable]), [type(event)])
    assert back.payload == b'{"label":"car","score":0.5}'
    assert msgspec.json.decode(back.payload) == msgspec.json.decode(event.payload)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"$bytes": "looks like a marker"}, id="bytes-marker"),
        pytest.param({"$base64": 5}, id="base64-marker"),
        pytest.param({"$map": {"$map": {}}}, id="map-marker"),
        pytest.param([{"$bytes": b"\x00"}], id="marker-holding-bytes"),
        pytest.param(
            {"type": "analysis.result", "payload": "not bytes"}, id="event-look-alike"
        ),
        pytest.param(
            result("detect", 0, payload=b'{"$bytes":"x"}'), id="payload-like-a-marker"
        ),
        pytest.param(
            result("detect", 0, payload=b"not json at all"), id="payload-not-json"
        ),
    ],
)
async def test_values_that_look_like_the_readable_form_round_trip(value: Any) -> None:
    [readable] = await CODEC.decode(await DATA_CONVERTER.encode([value]))
    assert readable.metadata["encoding"] == b"json/plain"
    encoded = await CODEC.encode([readable])
    assert await DATA_CONVERTER.decode(encoded, [type(value)]) == [value]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(Payload(metadata={"encoding": b"json/plain"}, data=b'{"a":1}')),
        pytest.param(Payload(metadata={"encoding": b"binary/null"})),
        pytest.param(Payload(metadata={"encoding": b"binary/plain"}, data=b"\x01")),
        pytest.param(
            Payload(
                metadata={"encoding": b"json/protobuf", "messageType": b"x.Y"},
                data=b"{}",
            )
        ),
        pytest.param(
            Payload(metadata={"encoding": b"binary/encrypted"}, data=b"\x01" * 300)
        ),
        pytest.param(Payload(data=b"no metadata")),
        # Claimed as ours but broken: shown as they are, not an error.
        pytest.param(Payload(metadata={"encoding": b"binary/zstd"}, data=b"junk")),
        pytest.param(Payload(metadata={"encoding": b"binary/msgpack"}, data=b"\xc1")),
    ],
)
async def test_decode_passes_payloads_it_does_not_own_through(payload: Payload) -> None:
    assert await CODEC.decode([payload]) == [payload]


async def test_values_json_cannot_hold_exactly_pass_through() -> None:
    for value in (float("nan"), {1: "int key"}):
        encoded = await DATA_CONVERTER.encode([value])
        decoded = await CODEC.decode(encoded)
        assert decoded[0].metadata["encoding"] in (MSGPACK_ENCODING, ZSTD_ENCODING)


@pytest.mark.parametrize(
    "payload",
    [
        Payload(metadata={"encoding": b"binary/null"}),
        Payload(metadata={"encoding": b"binary/msgpack"}, data=b"\x01"),
        Payload(metadata={"encoding": b"binary/encrypted"}, data=b"\x01" * 300),
    ],
)
async def test_encode_passes_what_is_not_json_plain_through(payload: Payload) -> None:
    assert await CODEC.encode([payload]) == [payload]


async def test_encode_compresses_large_values_as_the_data_converter_does() -> None:
    big = {"events": [msgspec.to_builtins(OPENED)] * 20}
    [encoded] = await CODEC.encode([json_payload(big)])
    assert encoded.metadata["encoding"] == ZSTD_ENCODING


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"{not json", "payload 0 is not JSON"),
        (b'{"raw": {"$bytes": 5}}', "$bytes takes a string - at `$.raw.$bytes`"),
        (b'{"raw": {"$base64": "!!"}}', "$base64 takes base64 text"),
        (b'{"x": {"$map": []}}', "$map takes an object"),
    ],
)
async def test_encode_refuses_json_it_cannot_translate(data: bytes, says: str) -> None:
    with pytest.raises(ReadableError, match=re.escape(says)):
        await CODEC.encode([Payload(metadata={"encoding": b"json/plain"}, data=data)])


def test_from_readable_undoes_to_readable_on_nested_markers() -> None:
    value = {"a": [{"$map": {"b": b"\x00\x01"}}], "$bytes": {"$bytes": "x"}}
    assert from_readable(to_readable(value)) == value


# --- the HTTP app ---------------------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[Any, Any]] = []

    async def start(**settings: Any) -> TestClient[Any, Any]:
        client = TestClient(TestServer(create_app(CodecServerSettings(**settings))))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


def body_of(payloads: list[Payload]) -> dict[str, Any]:
    return json_format.MessageToDict(Payloads(payloads=payloads))


def payloads_of(body: dict[str, Any]) -> list[Payload]:
    return list(json_format.ParseDict(body, Payloads()).payloads)


async def test_decode_route_speaks_the_ui_protocol(serve: Any) -> None:
    client = await serve()
    sent = await DATA_CONVERTER.encode([result("detect", 0), None])
    response = await client.post(
        "/decode",
        json=body_of(sent),
        headers={"Origin": ORIGIN, "X-Namespace": "default"},
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    [event, none] = payloads_of(await response.json())
    assert msgspec.json.decode(event.data)["payload"]["label"] == MARKER
    assert none == sent[1]


async def test_encode_route_gives_payloads_the_data_converter_reads(
    serve: Any,
) -> None:
    client = await serve()
    response = await client.post(
        "/encode", json=body_of([json_payload(msgspec.to_builtins(OPENED))])
    )
    assert response.status == 200
    decoded = await DATA_CONVERTER.decode(
        payloads_of(await response.json()), [type(OPENED)]
    )
    assert decoded == [OPENED]


async def test_routes_answer_under_a_namespace_prefix(serve: Any) -> None:
    client = await serve()
    response = await client.post("/default/decode", json={"payloads": []})
    assert response.status == 200
    assert await response.json() == {}  # protobuf JSON leaves an empty list out


async def test_preflight_allows_the_ui_origin_and_its_headers(serve: Any) -> None:
    client = await serve(token="s3cret")  # a preflight carries no token
    response = await client.options(
        "/decode",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-namespace,content-type,authorization",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    for header in ("x-namespace", "authorization", "content-type"):
        assert header in allowed


async def test_another_origin_gets_no_cors_headers(serve: Any) -> None:
    client = await serve()
    for method in ("OPTIONS", "POST"):
        response = await client.request(
            method,
            "/decode",
            json={"payloads": []},
            headers={"Origin": "http://evil.example"},
        )
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_a_configured_origin_is_allowed(serve: Any) -> None:
    client = await serve(cors_origins=("https://cloud.temporal.io",))
    response = await client.post(
        "/decode",
        json={"payloads": []},
        headers={"Origin": "https://cloud.temporal.io"},
    )
    assert response.headers["Access-Control-Allow-Origin"] == (
        "https://cloud.temporal.io"
    )


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 401), ("Bearer wrong", 403), ("Basic s3cret", 401), ("Bearer s3cret", 200)],
)
async def test_the_shared_token_is_checked(
    serve: Any, authorization: str | None, status: int
) -> None:
    client = await serve(token="s3cret")
    headers = {"Origin": ORIGIN}
    if authorization is not None:
        headers["Authorization"] = authorization
    for route in ("/decode", "/encode"):
        response = await client.post(route, json={"payloads": []}, headers=headers)
        assert response.status == status
        # The browser must be able to read a refusal too.
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_the_token_file_wins_over_the_environment(
    serve: Any, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    client = await serve(token="from-env", token_file=token_file)
    ok = await client.post(
        "/decode", json={}, headers={"Authorization": "Bearer from-file"}
    )
    wrong = await client.post(
        "/decode", json={}, headers={"Authorization": "Bearer from-env"}
    )
    assert (ok.status, wrong.status) == (200, 403)


async def test_bad_bodies_get_400_with_the_reason(serve: Any) -> None:
    client = await serve()
    broken = await client.post("/decode", data=b"not json")
    assert broken.status == 400
    typed = await client.post(
        "/encode",
        json=body_of([Payload(metadata={"encoding": b"json/plain"}, data=b"{oops")]),
    )
    assert typed.status == 400
    assert "payload 0 is not JSON" in (await typed.json())["error"]


async def test_a_body_over_the_limit_gets_413(serve: Any) -> None:
    client = await serve(max_body_bytes=1000)
    response = await client.post("/decode", data=b"x" * 5000)
    assert response.status == 413


def test_token_comes_from_env_or_file_never_a_flag() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, CodecServerSettings)
    flags = {flag for action in parser._actions for flag in action.option_strings}
    assert "--token-file" in flags
    assert not any(flag == "--token" for flag in flags)


@pytest.mark.parametrize("text", ["localhost:8233", "http://h:1/path", "ftp://h"])
def test_origins_must_be_scheme_host_port(text: str) -> None:
    with pytest.raises(ValueError, match="expected origins"):
        origins(text)


def test_origins_take_a_comma_separated_list() -> None:
    assert origins("http://a:1, https://b/") == ("http://a:1", "https://b")


def test_the_dev_server_ui_is_pointed_at_the_codec_server() -> None:
    with_ui = command(port=7233, ui_port=8233, db=None, ui_codec_endpoint="http://c")
    assert with_ui[with_ui.index("--ui-codec-endpoint") + 1] == "http://c"
    headless = command(port=7233, ui_port=None, db=None, ui_codec_endpoint="http://c")
    assert "--ui-codec-endpoint" not in headless
    assert origins(ui_origins(8233)) == DEFAULT_CORS_ORIGINS


def test_the_dev_server_command_passes_metrics_and_dynamic_config_on() -> None:
    argv = command(
        port=7233,
        ui_port=None,
        db=None,
        metrics_port=9090,
        dynamic_config=("history.hostLevelCacheMaxSize=32768", "a.b=1"),
    )
    assert argv[argv.index("--metrics-port") + 1] == "9090"
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "--dynamic-config-value"]
    assert pairs == ["history.hostLevelCacheMaxSize=32768", "a.b=1"]
    plain = command(port=7233, ui_port=None, db=None)
    assert "--metrics-port" not in plain
    assert "--dynamic-config-value" not in plain
