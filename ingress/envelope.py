"""Pure rules of the HTTP ingress: Pub/Sub push envelopes, ``/events``
bodies, the shared token, and which shard an item goes to.

No I/O and no clock here; ``docs/ingress.md`` says why each rule is so.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
from dataclasses import dataclass

import msgspec

from actors import routing
from wire import Event, Rejection, reject
from wire.events import ID_MAX_LENGTH

# Fields that message attributes may supply when the event lacks them.
ATTRIBUTE_FIELDS = ("tenant_id", "job_id", "analysis_type")


class _PushMessage(msgspec.Struct, kw_only=True):
    # Pub/Sub sends both spellings of the id; older clients only camelCase.
    data: str | None = None
    attributes: dict[str, str] | None = None
    messageId: str | None = None
    message_id: str | None = None


class _PushEnvelope(msgspec.Struct, kw_only=True):
    message: _PushMessage
    subscription: str | None = None


_envelopes = msgspec.json.Decoder(_PushEnvelope)
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_raw_values = msgspec.json.Decoder(msgspec.Raw)
_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
encode_json = msgspec.json.Encoder().encode
_ANALYSIS_RESULT = b'"analysis.result"'


@dataclass(frozen=True)
class PushMessage:
    """A decoded push delivery: the event to validate and where it came from.

    Attributes:
        raw: the event JSON, with the envelope's defaults merged in.
        message_id: Pub/Sub's id of the message.
        subscription: the subscription that pushed it.
        filled: fields taken from the envelope (the body lacked them).
        conflicts: attributes whose value differed from the body's.
    """

    raw: bytes
    message_id: str | None = None
    subscription: str | None = None
    filled: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()


def _usable_id(value: object) -> str | None:
    # An id good enough to route a rejection and to name it in a dead letter.
    if (
        isinstance(value, str)
        and 0 < len(value) <= ID_MAX_LENGTH
        and "/" not in value
        and value.isprintable()
    ):
        return value
    return None


def merge_envelope(
    data: bytes, *, message_id: str | None, attributes: dict[str, str] | None
) -> tuple[bytes, tuple[str, ...], tuple[str, ...]]:
    """Fill the event's missing fields from the envelope.

    ``event_id`` defaults to ``message_id``; ``tenant_id``, ``job_id`` and
    (for an ``analysis.result``) ``analysis_type`` come from ``attributes``
    when the event lacks them (absent or null). A field the event has is kept
    byte for byte, even when an attribute disagrees.

    Returns:
        The event bytes (``data`` itself when nothing was filled, or when it
        is not a JSON object: validation will say what is wrong), the fields
        filled in, and the attribute names that conflicted with the body.
    """
    attributes = attributes or {}
    wanted = [name for name in ATTRIBUTE_FIELDS if name in attributes]
    if message_id is None and not wanted:
        return data, (), ()
    try:
        fields = _fields.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return data, (), ()
    filled: list[str] = []
    conflicts: list[str] = []

    def missing(name: str) -> bool:
        value = fields.get(name)
        return value is None or bytes(value).strip() == b"null"

    if message_id is not None and missing("event_id"):
        fields["event_id"] = msgspec.Raw(encode_json(message_id))
        filled.append("event_id")
    is_result = bytes(fields.get("type", b"")).strip() == _ANALYSIS_RESULT
    for name in wanted:
        if name == "analysis_type" and not is_result:
            continue
        if missing(name):
            fields[name] = msgspec.Raw(encode_json(attributes[name]))
            filled.append(name)
            continue
        try:
            body_value = msgspec.json.decode(bytes(fields[name]))
        except msgspec.DecodeError:  # pragma: no cover - decoded above
            body_value = None
        if body_value != attributes[name]:
            conflicts.append(name)
    if not filled:
        return data, (), tuple(conflicts)
    return encode_json(fields), tuple(filled), tuple(conflicts)


def decode_push(body: bytes) -> PushMessage | Rejection:
    """Decode a Pub/Sub push envelope into the event bytes to validate.

    Returns a Rejection when the envelope itself is unusable (not JSON, no
    ``message``, ``data`` that is not base64); the event inside is not
    validated here.
    """
    try:
        envelope = _envelopes.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return reject(body, f"not a Pub/Sub push envelope: {exc}")
    message = envelope.message
    message_id = message.messageId or message.message_id
    attributes = message.attributes or {}
    try:
        data = base64.b64decode(message.data or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        rejection = reject(
            (message.data or "").encode(),
            f"message.data is not valid base64: {exc}",
        )
        # The bytes are unreadable, but the envelope still names the event.
        return msgspec.structs.replace(
            rejection,
            event_id=_usable_id(message_id),
            tenant_id=_usable_id(attributes.get("tenant_id")),
            job_id=_usable_id(attributes.get("job_id")),
        )
    raw, filled, conflicts = merge_envelope(
        data, message_id=message_id, attributes=attributes
    )
    return PushMessage(
        raw=raw,
        message_id=message_id,
        subscription=envelope.subscription,
        filled=filled,
        conflicts=conflicts,
    )


_LINES_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
        "application/json-seq",
    }
)


def split_events(body: bytes, content_type: str = "") -> list[bytes] | Rejection:
    """The events of an ``/events`` body, each as its own bytes.

    One JSON value, a JSON array (each element is one event) or JSON Lines (a
    JSON Lines content type, or several lines that are not one JSON value
    together). Blank lines are skipped. A body that starts like an array but
    is not valid JSON is one Rejection: its elements cannot be told apart.
    """
    text = body.strip()
    if not text:
        return []
    if content_type.lower() not in _LINES_TYPES:
        if text.startswith(b"["):
            try:
                return [bytes(item) for item in _raw_list.decode(text)]
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                return reject(body, f"not a valid JSON array of events: {exc}")
        if b"\n" not in text:
            return [text]
        try:
            _raw_values.decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass  # not one value: JSON Lines
        else:
            return [text]
    return [line.strip() for line in text.split(b"\n") if line.strip()]


class Auth(enum.Enum):
    OK = "ok"
    MISSING = "missing"  # 401
    WRONG = "wrong"  # 403


def authorize(
    expected: str | None, *, authorization: str | None, query_token: str | None
) -> Auth:
    """Check the shared token: a ``Bearer`` header or a ``?token=`` value.

    Any presented credential that matches lets the request in, so a Pub/Sub
    push with an OIDC ``Authorization`` header and the shared ``?token=``
    passes. Every candidate is compared, in constant time.
    """
    if expected is None:
        return Auth.OK
    candidates: list[str] = []
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            candidates.append(value.strip())
    if query_token:
        candidates.append(query_token)
    if not candidates:
        return Auth.MISSING
    want = expected.encode()
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate.encode(), want)
    return Auth.OK if matched else Auth.WRONG


def shard_for(item: Event | Rejection, raw: bytes, shards: int) -> int:
    """The shard an event or rejection goes to: its job's, when known."""
    if item.tenant_id and item.job_id:
        return routing.shard_of(item.tenant_id, item.job_id, shards)
    return routing.raw_shard(raw, shards)
