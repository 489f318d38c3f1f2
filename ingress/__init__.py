"""Getting events in: the batching sender (``script.emit`` and any client)
and the HTTP ingress (Pub/Sub push and REST).

- ``ingress.sender``: ``EventSender``, ``send_batch``, ``send_batch_within``.
- ``ingress.envelope``: pure rules for push envelopes, bodies and tokens.
- ``ingress.service``: the settings, the service (its per-shard batcher is
  ``wire.batching.MicroBatcher``) and its readiness.
- ``ingress.routes``: the aiohttp handlers and ``create_app``.
"""

from ingress.routes import create_app
from ingress.sender import EventSender, SendSummary, send_batch, send_batch_within
from ingress.service import DEFAULT_MAX_BODY_BYTES, Ingress, IngressSettings

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "EventSender",
    "Ingress",
    "IngressSettings",
    "SendSummary",
    "create_app",
    "send_batch",
    "send_batch_within",
]
