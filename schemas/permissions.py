"""What each NATS user of a deployment may publish and subscribe to (deploy/nats/accounts.conf).

Built from the subject builders (schemas/subjects/) and the stream catalogue, so the account
file cannot drift from what the code does: tests/test_nats_permissions.py reads the file's `permissions`
blocks and compares them with `USERS`; tests/test_deploy.py runs a real worker with those rights.
"""

from __future__ import annotations

import msgspec

from schemas.streams import CHAT, IMAGES_OBJECTS, TOKENS, WORKERS_KV
from schemas.subjects import (
    ALL_TOKENS,
    ANY,
    REST,
    WORKER_INBOX_PREFIX,
    inboxes,
    js_acks,
    js_api,
    js_flow_control,
    kv_key,
    kv_stream,
    max_deliveries_advisory,
    object_stream,
    reply_event,
)


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """A NATS user's allow and deny lists (a user without a `permissions` block may do anything)."""

    publish_allow: tuple[str, ...] = ()
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()


_IMAGES = object_stream(IMAGES_OBJECTS.bucket)

# An LLM worker appends a reply's start and end, streams its tokens, beats its heartbeat, pulls its
# alias's requests and reads chats (to build prompts) and images; it posts nothing else.
WORKER_PUBLISH: tuple[str, ...] = (
    reply_event(ANY, ANY, "started"),
    reply_event(ANY, ANY, "completed"),
    reply_event(ANY, ANY, "failed"),
    ALL_TOKENS,
    js_api("INFO"),
    js_api("STREAM.INFO", ANY),
    js_api("STREAM.NAMES"),
    # `*` matches whole tokens only (never `worker-*`): the consumers of CHAT, which a worker reads
    # anyway to build prompts (durable `worker-<alias>`, ordered ones for context).
    js_api("CONSUMER.INFO", CHAT.name, ANY),
    js_api("CONSUMER.DURABLE.CREATE", CHAT.name, ANY),
    js_api("CONSUMER.MSG.NEXT", CHAT.name, ANY),
    js_api("CONSUMER.CREATE", CHAT.name),
    js_api("CONSUMER.CREATE", CHAT.name, REST),
    js_api("CONSUMER.DELETE", CHAT.name, REST),
    js_api("DIRECT.GET", CHAT.name),
    js_api("DIRECT.GET", CHAT.name, REST),
    js_api("STREAM.MSG.GET", CHAT.name),
    js_acks(CHAT.name),
    js_flow_control(CHAT.name),
    kv_key(WORKERS_KV.bucket, REST),
    js_api("STREAM.INFO", kv_stream(WORKERS_KV.bucket)),
    js_api("STREAM.INFO", TOKENS.name),
    js_api("STREAM.INFO", CHAT.name),
    # images by hash from the object store `images`
    js_api("STREAM.INFO", _IMAGES),
    js_api("STREAM.MSG.GET", _IMAGES),
    js_api("DIRECT.GET", _IMAGES),
    js_api("DIRECT.GET", _IMAGES, REST),
    js_api("CONSUMER.CREATE", _IMAGES),
    js_api("CONSUMER.CREATE", _IMAGES, REST),
    js_api("CONSUMER.DELETE", _IMAGES, REST),
    js_flow_control(_IMAGES),
)
# Answers on its own inbox prefix only, the cancels it must act on, and JetStream giving up on a request.
WORKER_SUBSCRIBE: tuple[str, ...] = (
    inboxes(WORKER_INBOX_PREFIX),
    reply_event(ANY, ANY, "cancelled"),
    max_deliveries_advisory(CHAT.name, ANY),
)
WORKER = Permissions(publish_allow=WORKER_PUBLISH, subscribe_allow=WORKER_SUBSCRIBE)

# Every user of accounts.conf: `services` (api, projector, image store, admin) may do anything.
USERS: dict[str, Permissions | None] = {"services": None, "worker": WORKER}
