"""Subjects are spelled in one place (the schemas/subjects/ package): every builder round-trips through
its parser, and every pattern builder matches exactly the subjects it should (checked with a NATS-style
matcher written in tests/subject_match.py, independent of the package).

That no other module formats or splits a subject is tests/test_subject_spelling.py; that the NATS users'
rights match the code is tests/test_nats_permissions.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest

import schemas
from schemas import subjects as s
from schemas.bot import BotSpec
from schemas.streams import (
    ARENA,
    BATCHES,
    BOTS,
    CHAT,
    IDENTITY,
    IMAGE,
    STREAMS,
    TOKENS,
    WORKERS_KV,
    worker_consumer,
)
from tests.subject_match import SHA, C, K, R, U, matches

ROOT = Path(__file__).parent.parent


def test_the_matcher() -> None:
    assert matches("chat.*.created", "chat.c1.created")
    assert matches("chat.c1.>", "chat.c1.message.posted")
    assert not matches("chat.c1.>", "chat.c1")
    assert not matches("chat.*.created", "chat.c1.x.created")
    assert not matches("tokens.c1.*", "tokens.c1.r.x")


# ---------------------------------------------------------------- 1. builders and parsers


@pytest.mark.parametrize("kind", sorted(s.CHAT_KINDS))
def test_chat_events_round_trip(kind: Any) -> None:
    subject = s.chat_event(C, kind)
    assert subject == f"chat.{C}.{kind}"
    assert s.parse_chat_subject(subject) == s.ChatSubject(C, kind)
    assert s.parse_reply_subject(subject) is None
    assert matches(s.one_chat(C), subject) and not matches(s.one_chat("c2"), subject)
    assert matches(s.ALL_CHATS, subject) and matches(s.chat_event(s.ANY, kind), subject)


@pytest.mark.parametrize("kind", get_args(s.ReplyEventKind))
def test_reply_events_round_trip(kind: Any) -> None:
    subject = s.reply_event(C, R, kind)
    assert subject == f"chat.{C}.reply.{R}.{kind}"
    assert s.parse_chat_subject(subject) == s.ReplySubject(C, R, kind)
    assert s.parse_reply_subject(subject) == s.ReplySubject(C, R, kind)
    assert s.reply_kind(subject) == kind
    assert matches(s.one_reply(C, R), subject) and not matches(s.one_reply(C, "r3"), subject)
    assert matches(s.one_chat(C), subject) and matches(s.reply_event(s.ANY, s.ANY, kind), subject)


def test_reply_requests_round_trip() -> None:
    subject = s.reply_requested(C, R, "smollm2-135m")
    assert subject == f"chat.{C}.reply.{R}.requested.smollm2-135m"
    assert s.parse_reply_subject(subject) == s.ReplySubject(C, R, "requested", model="smollm2-135m")
    assert s.reply_kind(subject) == "requested"
    assert matches(s.reply_requests_of("smollm2-135m"), subject)
    assert not matches(s.reply_requests_of("other"), subject)
    assert matches(s.one_reply(C, R), subject) and matches(s.reply_requested(C, R, s.ANY), subject)
    assert worker_consumer("smollm2-135m").filter_subject == s.reply_requests_of("smollm2-135m")


def test_feedback_round_trips() -> None:
    subject = s.feedback(C, R, U)
    assert subject == f"chat.{C}.feedback.{R}.{U}"
    assert s.parse_chat_subject(subject) == s.FeedbackSubject(C, R, U)
    assert s.parse_reply_subject(subject) is None and s.reply_kind(subject) is None
    assert matches(s.feedback(s.ANY, s.ANY, U), subject) and not matches(
        s.feedback(s.ANY, s.ANY, "bo"), subject
    )


@pytest.mark.parametrize(
    "subject",
    [
        "chat",
        f"chat.{C}",
        f"chat.{C}.future",
        f"chat.{C}.message",
        f"chat.{C}.message.posted.x",
        f"chat.{C}.reply.{R}",
        f"chat.{C}.reply.{R}.requested",
        f"chat.{C}.reply.{R}.started.x",
        f"chat.{C}.reply.{R}.dreamt",
        f"chat.{C}.feedback.{R}",
        f"tokens.{C}.created",
        f"user.{U}.created",
    ],
)
def test_the_chat_parser_refuses_other_shapes(subject: str) -> None:
    assert s.parse_chat_subject(subject) is None


def test_tokens_round_trip() -> None:
    subject = s.reply_tokens(C, R)
    assert subject == f"tokens.{C}.{R}"
    assert s.parse_tokens_subject(subject) == s.TokensSubject(C, R)
    assert s.parse_tokens_subject(f"tokens.{C}") is None
    assert s.parse_tokens_subject(s.chat_event(C, "created")) is None
    assert matches(s.chat_tokens(C), subject) and not matches(s.chat_tokens("c2"), subject)
    assert matches(s.ALL_TOKENS, subject)


@pytest.mark.parametrize("kind", sorted(s.USER_KINDS))
def test_user_events_round_trip(kind: Any) -> None:
    subject = s.user_event(U, kind)
    assert subject == f"user.{U}.{kind}"
    assert s.parse_identity_subject(subject) == s.UserSubject(U, kind)
    assert matches(s.one_user(U), subject) and matches(s.ALL_USERS, subject)


@pytest.mark.parametrize("kind", sorted(s.APIKEY_KINDS))
def test_apikey_events_round_trip(kind: Any) -> None:
    subject = s.apikey_event(K, kind)
    assert subject == f"apikey.{K}.{kind}"
    assert s.parse_identity_subject(subject) == s.ApiKeySubject(K, kind)
    assert matches(s.one_apikey(K), subject) and matches(s.ALL_APIKEYS, subject)


def test_the_identity_parser_refuses_other_shapes() -> None:
    for subject in (
        f"user.{U}.dreamt",
        f"apikey.{K}.created",
        f"user.{U}",
        "group.g.created",
        f"chat.{C}.created",
    ):
        assert s.parse_identity_subject(subject) is None


def test_images_round_trip() -> None:
    stored, purged = s.image_stored(SHA, U), s.image_purged(SHA)
    assert (stored, purged) == (f"image.{SHA}.stored.{U}", f"image.{SHA}.purged")
    assert s.parse_image_subject(stored) == s.ImageSubject(SHA, "stored", uploaded_by=U)
    assert s.parse_image_subject(purged) == s.ImageSubject(SHA, "purged")
    for subject in (stored, purged):
        assert matches(s.one_image(SHA), subject) and matches(s.ALL_IMAGES, subject)
    assert matches(s.image_stored(s.ANY, U), stored) and matches(s.image_stored(SHA, s.ANY), stored)
    assert matches(s.image_stored(SHA, s.REST), stored) and not matches(s.image_stored(SHA, s.ANY), purged)
    for other in (f"image.{SHA}.stored", f"image.{SHA}.purged.x", f"image.{SHA}.lost", f"chat.{SHA}.purged"):
        assert s.parse_image_subject(other) is None


def test_kv_keys_round_trip() -> None:
    key = s.presence_key("smollm2-135m", "w-1")
    assert key == "smollm2-135m.w-1"
    assert s.parse_presence_key(key) == s.PresenceKey("smollm2-135m", "w-1")
    assert s.parse_presence_key("a.b.c") is None and s.parse_presence_key("a") is None
    assert matches(s.presence_of("smollm2-135m"), key) and not matches(s.presence_of("other"), key)
    assert matches(s.ALL_KEYS, key)
    subject = s.kv_key(WORKERS_KV.bucket, key)
    assert subject == f"$KV.workers.{key}"
    assert subject.startswith(s.kv_prefix(WORKERS_KV.bucket))
    assert s.parse_kv_subject(subject) == s.KVSubject(WORKERS_KV.bucket, key)
    assert s.parse_kv_subject("$KV.workers") is None and s.parse_kv_subject("chat.workers.x") is None
    assert s.kv_stream(WORKERS_KV.bucket) == "KV_workers"


def test_services_and_advisories_round_trip() -> None:
    subject = s.service_endpoint("projector", "chats.list")
    assert subject == "projector.chats.list"
    assert s.parse_service_endpoint(subject) == s.ServiceSubject("projector", "chats.list")
    assert s.parse_service_endpoint("projector") is None
    advisory = s.max_deliveries_advisory(CHAT.name, "worker-demo")
    assert advisory == "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.CHAT.worker-demo"
    assert s.parse_max_deliveries_advisory(advisory) == s.AdvisorySubject(CHAT.name, "worker-demo")
    assert s.parse_max_deliveries_advisory("$JS.EVENT.ADVISORY.CONSUMER.DELETED.CHAT.x") is None
    assert matches(s.max_deliveries_advisory(CHAT.name, s.ANY), advisory)
    assert s.js_api("STREAM.INFO", CHAT.name) == "$JS.API.STREAM.INFO.CHAT"
    assert matches(s.inboxes(s.WORKER_INBOX_PREFIX), "_INBOX_worker.abc.1")


def test_context_subjects_hold_what_a_prompt_needs() -> None:
    wanted = [
        s.chat_event(C, "created"),
        s.chat_event(C, "message.posted"),
        s.chat_event(C, "participant.joined"),
        s.reply_event(C, R, "completed"),
    ]
    unwanted = [s.chat_event(C, "renamed"), s.reply_event(C, R, "started"), s.chat_event("c2", "created")]
    patterns = s.context_subjects(C)
    assert all(any(matches(p, subject) for p in patterns) for subject in wanted)
    assert not any(matches(p, subject) for p in patterns for subject in unwanted)


def _example(event_type: Any) -> Any:
    """An event of `event_type` with token-safe ids (each string field: its name) and defaults elsewhere."""
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(event_type):
        if not field.required:
            continue
        info = msgspec.inspect.type_info(field.type)
        if isinstance(info, msgspec.inspect.StrType):
            values[field.name] = SHA if field.name == "sha256" else field.name.replace("_", "-")
        elif isinstance(info, msgspec.inspect.DateTimeType):
            values[field.name] = datetime(2026, 1, 1, tzinfo=UTC)
        elif isinstance(info, msgspec.inspect.BoolType):
            values[field.name] = False
        elif isinstance(info, msgspec.inspect.IntType):
            values[field.name] = 1
        elif isinstance(info, msgspec.inspect.FloatType):
            values[field.name] = 1.5
        elif isinstance(info, msgspec.inspect.ListType):
            values[field.name] = []
        elif isinstance(info, msgspec.inspect.LiteralType):
            values[field.name] = info.values[0]
        elif isinstance(info, msgspec.inspect.UnionType):
            values[field.name] = None
        elif field.type is BotSpec:
            values[field.name] = BotSpec(name="Zen Sage", model="smollm2")
        else:
            values[field.name] = msgspec.convert({}, field.type)
    return event_type(**values)


_PARSERS = (
    s.parse_chat_subject,
    s.parse_tokens_subject,
    s.parse_identity_subject,
    s.parse_image_subject,
    s.parse_bot_subject,
    s.parse_arena_subject,
    s.parse_batch_subject,
)


@pytest.mark.parametrize("event_type", schemas.EVENT_TYPES, ids=lambda t: t.__name__)
def test_every_event_subject_parses_back_to_the_event(event_type: Any) -> None:
    event = _example(event_type)
    subject = s.subject_of(event)
    parsed = [p for parser in _PARSERS if (p := parser(subject)) is not None]
    assert len(parsed) == 1, f"{subject}: {parsed}"
    for name, value in msgspec.structs.asdict(parsed[0]).items():
        if name != "kind" and value != "":  # "": a part only some kinds carry (`model`, `uploaded_by`)
            assert value == getattr(event, name), f"{subject}: {name}"
    stream = {
        s.CHAT_ROOT: CHAT,
        s.TOKENS_ROOT: TOKENS,
        s.USER_ROOT: IDENTITY,
        s.APIKEY_ROOT: IDENTITY,
        s.BOT_ROOT: BOTS,
        s.ARENA_ROOT: ARENA,
        s.BATCH_ROOT: BATCHES,
        s.BATCH_FILE_ROOT: BATCHES,
    }
    spec = stream.get(subject.split(".")[0], IMAGE)
    assert any(matches(pattern, subject) for pattern in spec.subjects)


def test_the_streams_subjects_are_the_roots() -> None:
    filters = {subject for spec in STREAMS for subject in spec.subjects}
    assert filters == {
        s.ALL_CHATS,
        s.ALL_TOKENS,
        s.ALL_USERS,
        s.ALL_ARENA,
        s.ALL_APIKEYS,
        s.ALL_GROUPS,
        s.ALL_IMAGES,
        s.ALL_BOTS,
        s.ALL_BATCHES,
        s.ALL_BATCH_FILES,
    }
    assert {f.split(".")[0] for f in filters} <= set(s.ROOTS)
