"""JetStream advisories the services act on (core NATS messages the server publishes)."""

from __future__ import annotations

import msgspec


class MaxDeliveries(msgspec.Struct, frozen=True):
    """`io.nats.jetstream.advisory.v1.max_deliver`: a message will not be delivered again."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


def decode_max_deliveries(data: bytes) -> MaxDeliveries:
    """Decode the advisory (unknown fields ignored)."""
    return msgspec.json.decode(data, type=MaxDeliveries)
