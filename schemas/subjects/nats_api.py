"""NATS's own subjects: micro service endpoints, inboxes, JetStream's advisories and API."""

from __future__ import annotations

import msgspec

from schemas.subjects.roots import ANY, REST, join

# A micro service `<service>` answers endpoint `x.y` on `<service>.x.y` (bus/micro.py).


def service_endpoint(service: str, endpoint: str) -> str:
    """The subject a micro service answers an endpoint on, e.g. `projector.chats.list`."""
    return join(service, endpoint)


class ServiceSubject(msgspec.Struct, frozen=True):
    """A micro service endpoint's subject, parsed (service names hold no dot, endpoints may)."""

    service: str
    endpoint: str


def parse_service_endpoint(subject: str) -> ServiceSubject | None:
    """The service and endpoint of an endpoint's subject, or None."""
    service, _, endpoint = subject.partition(".")
    if not service or not endpoint:
        return None
    return ServiceSubject(service, endpoint)


DEFAULT_INBOX_PREFIX = "_INBOX"
# Workers take answers on their own inbox prefix, so the `worker` NATS user reads no one else's.
WORKER_INBOX_PREFIX = "_INBOX_worker"


def inboxes(prefix: str) -> str:
    """Every inbox under a prefix: `<prefix>.>`."""
    return join(prefix, REST)


JS_ROOT = "$JS"
_MAX_DELIVERIES = join(JS_ROOT, "EVENT", "ADVISORY", "CONSUMER", "MAX_DELIVERIES")


def max_deliveries_advisory(stream: str, consumer: str) -> str:
    """Where the server announces that `consumer` gave up on a message of `stream`."""
    return join(_MAX_DELIVERIES, stream, consumer)


class AdvisorySubject(msgspec.Struct, frozen=True):
    """A max-deliveries advisory's subject, parsed."""

    stream: str
    consumer: str


def parse_max_deliveries_advisory(subject: str) -> AdvisorySubject | None:
    """The stream and consumer of a max-deliveries advisory's subject, or None."""
    head, _, tail = subject.rpartition(".")
    prefix, _, stream = head.rpartition(".")
    if prefix != _MAX_DELIVERIES or not stream or not tail:
        return None
    return AdvisorySubject(stream, tail)


def js_api(operation: str, *args: str) -> str:
    """A JetStream API subject, e.g. `js_api("STREAM.INFO", "CHAT")` is `$JS.API.STREAM.INFO.CHAT`."""
    return join(JS_ROOT, "API", operation, *args)


def js_acks(stream: str, consumer: str = ANY) -> str:
    """The subjects acks of `stream`'s consumers (or of one) are sent on: `$JS.ACK.<stream>.<consumer>.>`."""
    return join(JS_ROOT, "ACK", stream, consumer, REST)


def js_flow_control(stream: str) -> str:
    """The subjects flow-control replies of `stream`'s push consumers go to: `$JS.FC.<stream>.>`."""
    return join(JS_ROOT, "FC", stream, REST)
