"""The only package that imports nats: connection, server, streams, appends, consumers, KV, services."""

from nats.js import JetStreamContext as JetStream  # the type services annotate `js` with

from bus.advisories import MaxDeliveries, decode_max_deliveries
from bus.append import Appended, append_event, append_events, append_raw, purge_before, purge_subject
from bus.bulk_reader import BulkBatch, BulkMsg, BulkReader, BulkReaderError
from bus.connection import Bus, connect
from bus.consumer import Delivery, PullLane, pull_lanes, pull_loop
from bus.declare import Change, apply_all, declare_all, declare_consumer, declare_kv, declare_stream
from bus.decode import Delivered, Rejected, Sequenced, decode_batch, decode_bulk, decode_one
from bus.direct import read_direct, read_subjects
from bus.errors import (
    BusError,
    BusUnavailable,
    ConcurrencyConflict,
    Conflict,
    NotFound,
    ServerStartError,
    ServiceError,
)
from bus.kv import KV, KVEntry
from bus.micro import Served, call, call_raw, serve, serve_consumers
from bus.objects import ObjectEntry, delete_object, get_object, list_objects, object_size, put_object
from bus.reader import Follower, StoredMsg, last_msg, last_seq, msg_at, read_all, seq_at_time, time_at
from bus.server import Credentials, EmbeddedServer, ServerConfig, free_port, nats_server_binary

__all__ = [
    "Appended",
    "Bus",
    "BulkBatch",
    "BulkMsg",
    "BulkReader",
    "BulkReaderError",
    "BusError",
    "BusUnavailable",
    "ConcurrencyConflict",
    "Conflict",
    "Credentials",
    "Delivered",
    "Delivery",
    "PullLane",
    "EmbeddedServer",
    "Follower",
    "JetStream",
    "KV",
    "KVEntry",
    "NotFound",
    "ServerConfig",
    "ServerStartError",
    "Sequenced",
    "Served",
    "ServiceError",
    "StoredMsg",
    "append_event",
    "append_events",
    "append_raw",
    "call",
    "call_raw",
    "delete_object",
    "list_objects",
    "ObjectEntry",
    "connect",
    "Change",
    "apply_all",
    "decode_batch",
    "decode_bulk",
    "decode_one",
    "Rejected",
    "declare_all",
    "declare_consumer",
    "declare_kv",
    "declare_stream",
    "free_port",
    "last_msg",
    "last_seq",
    "get_object",
    "object_size",
    "put_object",
    "msg_at",
    "decode_max_deliveries",
    "MaxDeliveries",
    "nats_server_binary",
    "pull_lanes",
    "pull_loop",
    "purge_before",
    "purge_subject",
    "read_all",
    "read_direct",
    "read_subjects",
    "serve",
    "serve_consumers",
    "seq_at_time",
    "time_at",
]
