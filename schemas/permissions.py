"""What each NATS user of a deployment may publish and subscribe to (deploy/nats/accounts.conf).

Built from the subject builders (schemas/subjects/) and the stream catalogue, so the account
file cannot drift from what the code does: tests/test_nats_permissions.py reads the file's `permissions`
blocks and compares them with `USERS`; tests/test_deploy.py runs a real worker with those rights.
"""

from __future__ import annotations

import msgspec

from schemas.streams import CHAT, IMAGES_OBJECTS, TOKENS, WORKERS_KV, batch_worker_consumer, worker_consumer
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
    presence_of,
    reply_event,
)


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """A NATS user's allow and deny lists (a user without a `permissions` block may do anything)."""

    publish_allow: tuple[str, ...] = ()
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()


_IMAGES = object_stream(IMAGES_OBJECTS.bucket)

# What every worker may publish, whatever its alias: a reply's start and end (reply subjects carry no
# alias, so NATS cannot tie them to the worker's own requests: readers check each event against its
# subject instead, bus/decode.py), its tokens, reading chats (to build prompts) and images. No right
# deletes a consumer: a worker's ordered consumers are ephemeral and go away on their own.
_WORKER_COMMON: tuple[str, ...] = (
    reply_event(ANY, ANY, "started"),
    reply_event(ANY, ANY, "completed"),
    reply_event(ANY, ANY, "failed"),
    ALL_TOKENS,
    js_api("INFO"),
    js_api("STREAM.INFO", ANY),
    js_api("STREAM.NAMES"),
    # `*` matches whole tokens only: the info of any consumer of CHAT (its ordered ones for context
    # have server-made names), and ephemeral consumers to read chats with.
    js_api("CONSUMER.INFO", CHAT.name, ANY),
    js_api("CONSUMER.CREATE", CHAT.name),
    js_api("DIRECT.GET", CHAT.name),
    js_api("DIRECT.GET", CHAT.name, REST),
    js_api("STREAM.MSG.GET", CHAT.name),
    js_flow_control(CHAT.name),
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
    js_flow_control(_IMAGES),
)


def worker_permissions(alias: str = ANY) -> Permissions:
    """An LLM worker's rights: of one model alias (NATS user `worker-<alias>`), or of any (`worker`).

    Per alias, it beats its presence only under its alias, pulls, acks and hears JetStream give up on
    only its alias's durables (`worker-<alias>`, and `worker-<alias>-batch` of its batch lane). NATS
    config files cannot fill in a value per connection (templates such as `{{name()}}` exist only for
    JWT users), so the any-alias `worker` user may do that for every alias; give each alias its own
    user where that matters (README, Security).
    """
    # Its two lanes' durables, `worker-<alias>` and `worker-<alias>-batch` (ANY matches both names).
    durables = (
        (worker_consumer(alias).durable, batch_worker_consumer(alias).durable) if alias != ANY else (ANY,)
    )
    publish = (
        *_WORKER_COMMON,
        *(js_api("CONSUMER.DURABLE.CREATE", CHAT.name, durable) for durable in durables),
        *(js_api("CONSUMER.MSG.NEXT", CHAT.name, durable) for durable in durables),
        *(js_acks(CHAT.name, durable) for durable in durables),
        kv_key(WORKERS_KV.bucket, presence_of(alias) if alias != ANY else REST),
    )
    # Answers on its own inbox prefix only, the cancels it must act on, and JetStream giving up on a request.
    subscribe = (
        inboxes(WORKER_INBOX_PREFIX),
        reply_event(ANY, ANY, "cancelled"),
        *(max_deliveries_advisory(CHAT.name, durable) for durable in durables),
    )
    return Permissions(publish_allow=publish, subscribe_allow=subscribe)


def worker_user(alias: str) -> str:
    """The NATS user name of the workers of one alias."""
    return f"worker-{alias}"


WORKER = worker_permissions()

# Every user of accounts.conf: `services` (api, projector, image store, admin) may do anything. Users
# of one alias (`worker_user(alias)`, `worker_permissions(alias)`) are added by the operator from
# `chatbus admin worker-user ALIAS`.
USERS: dict[str, Permissions | None] = {"services": None, "worker": WORKER}


def conf_user(user: str, password: str, rights: Permissions | None) -> str:
    """A user entry of a nats-server config's `authorization { users: [...] }`, with these rights."""

    def strings(values: tuple[str, ...]) -> str:
        return ", ".join(msgspec.json.encode(v).decode() for v in values)

    lines = [
        "{",
        f"  user: {msgspec.json.encode(user).decode()}",
        f"  password: {msgspec.json.encode(password).decode()}",
    ]
    if rights is not None:
        lines.append("  permissions: {")
        for direction, allow, deny in (
            ("publish", rights.publish_allow, rights.publish_deny),
            ("subscribe", rights.subscribe_allow, rights.subscribe_deny),
        ):
            parts = [f"allow: [{strings(allow)}]"] + ([f"deny: [{strings(deny)}]"] if deny else [])
            lines.append(f"    {direction}: {{ {', '.join(parts)} }}")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
