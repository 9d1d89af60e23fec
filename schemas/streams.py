"""The catalogue of streams, consumers and KV buckets: the one place that names them."""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.subjects import (
    ALL_APIKEYS,
    ALL_ARENA,
    ALL_BATCH_FILES,
    ALL_BATCHES,
    ALL_BOTS,
    ALL_CHATS,
    ALL_GROUPS,
    ALL_IMAGES,
    ALL_TOKENS,
    ALL_USERS,
    BATCH_LANE,
    batches_of_kind,
    reply_ends_of_every_chat,
    reply_requests_of,
)

HOUR = 3600.0
DAY = 24 * HOUR


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A JetStream stream to declare (idempotently)."""

    name: str
    subjects: list[str]
    description: str
    max_age: float = 0.0  # seconds; 0 keeps forever
    duplicate_window: float = 2 * 60.0
    deny_delete: bool = True
    storage: Literal["file", "memory"] = "file"
    # nats-server 2.15 caps a stream at 1,000 consumers unless it says otherwise (and -1 no longer means
    # no limit). Each open WebSocket/SSE feed holds an ordered consumer on CHAT and one on TOKENS.
    max_consumers: int = 10_000


class KVSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A JetStream key-value bucket to declare."""

    bucket: str
    description: str
    ttl: float = 0.0
    history: int = 1


class ConsumerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A durable pull consumer to declare."""

    stream: str
    durable: str
    filter_subject: str
    ack_wait: float = 30.0
    max_deliver: int = 5
    max_ack_pending: int = 1000


CHAT = StreamSpec(
    name="CHAT",
    subjects=[ALL_CHATS],
    description="Conversation facts: chats, messages, replies (kept forever).",
    # Long enough that a worker retrying a completion after a reconnect is still deduplicated.
    duplicate_window=30 * 60.0,
)
IDENTITY = StreamSpec(
    name="IDENTITY",
    subjects=[ALL_USERS, ALL_APIKEYS, ALL_GROUPS],
    description="Accounts, roles and API key hashes (never keys or passwords).",
    duplicate_window=30 * 60.0,
)
TOKENS = StreamSpec(
    name="TOKENS",
    subjects=[ALL_TOKENS],
    description="Live token deltas of replies, so any client can resume a live reply.",
    max_age=DAY,
    deny_delete=False,
)
IMAGE = StreamSpec(
    name="IMAGE",
    subjects=[ALL_IMAGES],
    description="Images stored by content (sha256); their bytes live in the object store `images`.",
    duplicate_window=30 * 60.0,
)
BOTS = StreamSpec(
    name="BOTS",
    subjects=[ALL_BOTS],
    description="Bots (personas): name, model, personality, sampling, who may use them (kept forever).",
    duplicate_window=30 * 60.0,
)
ARENA = StreamSpec(
    name="ARENA",
    subjects=[ALL_ARENA],
    description="Arena settings: the pool battles draw from, voters whose votes are left out (kept forever).",
    duplicate_window=30 * 60.0,
)
BATCHES = StreamSpec(
    name="BATCHES",
    subjects=[ALL_BATCHES, ALL_BATCH_FILES],
    description="Batches (created, expanded, cancelled) and their uploaded input files (kept forever).",
    duplicate_window=30 * 60.0,
)
STREAMS: tuple[StreamSpec, ...] = (CHAT, IDENTITY, TOKENS, IMAGE, BOTS, ARENA, BATCHES)


class ObjectStoreSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A JetStream object-store bucket to declare."""

    bucket: str
    description: str


IMAGES_OBJECTS = ObjectStoreSpec(bucket="images", description="Normalised image bytes, named by sha256")
# A batch's checked lines (one msgspec JSON `PlanLine` a line), named by the batch id; and the files
# uploaded with `POST /v1/files` (purpose "batch"), named by the file id.
BATCH_INPUTS_OBJECTS = ObjectStoreSpec(bucket="batch_inputs", description="Batches' checked lines")
BATCH_FILES_OBJECTS = ObjectStoreSpec(bucket="batch_files", description="Uploaded batch input files")
OBJECT_STORES: tuple[ObjectStoreSpec, ...] = (IMAGES_OBJECTS, BATCH_INPUTS_OBJECTS, BATCH_FILES_OBJECTS)

WORKERS_KV = KVSpec(bucket="workers", description="Worker presence heartbeats", ttl=15.0)
# Browser sessions: key = sha256 of the cookie's session id; a session lasts at most a week.
SESSIONS_KV = KVSpec(bucket="sessions", description="Browser login sessions (hashed ids)", ttl=7 * DAY)
# Login and registration counts per (name, address) and per address (identity/attempts.py): a count
# lapses 15 minutes after its last change.
LOGIN_ATTEMPTS_KV = KVSpec(bucket="login_attempts", description="Failed logins per user", ttl=15 * 60.0)
# Each user's webhook signing secret (key: the user id), made by `POST /v1/me/webhook-secret`. The secret
# itself, not a hash: the webhooks service signs with it. Erasing the user deletes the key.
WEBHOOK_SECRETS_KV = KVSpec(bucket="webhook_secrets", description="Users' webhook signing secrets")
KV_BUCKETS: tuple[KVSpec, ...] = (WORKERS_KV, SESSIONS_KV, LOGIN_ATTEMPTS_KV, WEBHOOK_SECRETS_KV)

PROJECTOR_SERVICE = "projector"
CONDUCTOR_SERVICE = "conductor"  # the conductor's `status` (nats micro ls shows each process)
WEBHOOKS_SERVICE = "webhooks"  # the webhooks dispatcher's `status`
BATCHES_SERVICE = "batches"  # the batch expander's `status`
# The image store answers `images.upload` (raw bytes + these headers) and `images.fetch` (JSON FetchImage).
IMAGE_SERVICE = "images"
MEDIA_TYPE_HEADER = "Chatbus-Media-Type"
UPLOADER_HEADER = "Chatbus-Uploaded-By"
PROJECTED_STREAMS: tuple[str, ...] = (CHAT.name, IDENTITY.name)


def worker_consumer(alias: str, ack_wait: float = 30.0, max_deliver: int = 5) -> ConsumerSpec:
    """The durable consumer that the workers serving `alias` share."""
    return ConsumerSpec(
        stream=CHAT.name,
        durable=f"worker-{alias}",
        filter_subject=reply_requests_of(alias),
        ack_wait=ack_wait,
        max_deliver=max_deliver,
    )


def batch_worker_consumer(alias: str, ack_wait: float = 30.0, max_deliver: int = 5) -> ConsumerSpec:
    """The durable consumer of the batch lane of `alias` (batches' lines), which the same workers share:
    they take from it only into the slots people leave free (services/llm_worker/lanes.py)."""
    return ConsumerSpec(
        stream=CHAT.name,
        durable=f"worker-{alias}-{BATCH_LANE}",
        filter_subject=reply_requests_of(alias, BATCH_LANE),
        ack_wait=ack_wait,
        max_deliver=max_deliver,
    )


# The conductor (services/conductor/) reads every chat event: its cache of each chat with bots folds them
# all, and it gives the next turn. Conductors share it; an unacknowledged event (a conductor killed, or
# one waiting out a delay and no longer reporting progress) goes to another after `ack_wait`. Never
# given up on: a dropped event could be a turn never given.
CONDUCTOR_CONSUMER = ConsumerSpec(
    stream=CHAT.name,
    durable="conductor",
    filter_subject=ALL_CHATS,
    ack_wait=10.0,
    max_deliver=-1,
    max_ack_pending=10_000,
)


# The webhooks service (services/webhooks/) reads the ends of replies (one consumer per kind: completed,
# failed) and POSTs each finished job that has a `callback_url`. A delivery with its retries may take
# a while: the service reports progress while it waits. Never given up on: the recorded deliveries
# (`reply.webhook`) tell a restarted service where it was.
WEBHOOK_CONSUMERS: tuple[ConsumerSpec, ...] = tuple(
    ConsumerSpec(
        stream=CHAT.name,
        durable=f"webhooks-{kind}",
        filter_subject=subject,
        ack_wait=30.0,
        max_deliver=-1,
        max_ack_pending=10_000,
    )
    for kind, subject in reply_ends_of_every_chat().items()
)


# The batches service (services/batches/) expands each created batch into its line jobs and cancels the
# open lines of a cancelled batch. An expansion may take a while: the service reports progress while it
# works and acknowledges after the last line. Never given up on: the jobs it made (deterministic ids)
# tell a restarted service where it was.
BATCH_CONSUMERS: tuple[ConsumerSpec, ...] = tuple(
    ConsumerSpec(
        stream=BATCHES.name,
        durable=f"batches-{kind}",
        filter_subject=batches_of_kind(kind),
        ack_wait=30.0,
        max_deliver=-1,
        max_ack_pending=1000,
    )
    for kind in ("created", "cancelled")
)
