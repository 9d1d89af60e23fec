"""Errors of the bus package: one base, a subclass per case a caller can act on."""

from __future__ import annotations


class BusError(Exception):
    """Base of every error raised by bus/."""


class ConcurrencyConflict(BusError):
    """An append's expected sequence did not hold: someone else appended first."""


class Conflict(BusError):
    """A KV write's expectation did not hold: a create found the key, or an update's revision is stale."""


class BusUnavailable(BusError):
    """NATS or JetStream did not answer (restarting, electing a leader, cut off): try again soon."""


class NotFound(BusError):
    """The stream, consumer, key or message does not exist (a KV key: missing, deleted, purged or expired)."""


class ServiceError(BusError):
    """A micro service answered with an error, or nobody answered."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ServerStartError(BusError):
    """The embedded nats-server could not be started."""
