"""The NATS users' rights match the code: deploy/nats/accounts.conf grants each NATS user exactly the
rights of schemas/permissions.py (built from the subject builders), and those rights cover what the
worker publishes and subscribes to."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from schemas import subjects as s
from schemas.permissions import USERS, WORKER, Permissions, worker_permissions, worker_user
from schemas.streams import CHAT, WORKERS_KV, worker_consumer
from tests.subject_match import SHA, C, K, R, U, matches

ROOT = Path(__file__).parent.parent
ACCOUNTS = ROOT / "deploy" / "nats" / "accounts.conf"

_CONF_TOKEN = re.compile(
    r"""\s+|,|\#[^\n]*|//[^\n]*|"((?:[^"\\]|\\.)*)"|'([^']*)'|([{}\[\]:=])|([^\s,{}\[\]:="'\#]+)"""
)


def _conf_tokens(text: str) -> list[tuple[str, str]]:
    """("str", value) for quoted or bare words, ("sym", c) for `{ } [ ] : =`; comments and commas dropped."""
    tokens, pos = [], 0
    while pos < len(text):
        found = _CONF_TOKEN.match(text, pos)
        assert found, f"accounts.conf: cannot read {text[pos : pos + 30]!r}"
        pos = found.end()
        double, single, symbol, bare = found.groups()
        if symbol is not None:
            tokens.append(("sym", symbol))
        elif double is not None or single is not None or bare is not None:
            tokens.append(("str", next(v for v in (double, single, bare) if v is not None)))
    return tokens


def parse_nats_conf(text: str) -> dict[str, Any]:
    """The subset of the nats-server config syntax accounts.conf uses: maps, arrays, strings."""
    tokens = _conf_tokens(text)
    pos = 0

    def value() -> Any:
        nonlocal pos
        kind, word = tokens[pos]
        pos += 1
        if (kind, word) == ("sym", "{"):
            return mapping("}")
        if (kind, word) == ("sym", "["):
            items = []
            while tokens[pos] != ("sym", "]"):
                items.append(value())
            pos += 1
            return items
        assert kind == "str", f"accounts.conf: unexpected {word!r}"
        return word

    def mapping(end: str | None) -> dict[str, Any]:
        nonlocal pos
        result: dict[str, Any] = {}
        while pos < len(tokens) and tokens[pos] != ("sym", end):
            kind, key = tokens[pos]
            assert kind == "str", f"accounts.conf: a key expected, not {key!r}"
            pos += 1
            if tokens[pos] in (("sym", ":"), ("sym", "=")):
                pos += 1
            result[key] = value()
        pos += 1
        return result

    return mapping(None)


def _rights(entry: dict[str, Any], direction: str) -> tuple[list[str], list[str]]:
    """(allow, deny) of `publish` or `subscribe`; a bare list (or string) is the allow list."""
    rights = entry.get("permissions", {}).get(direction, [])
    if isinstance(rights, dict):
        return _as_list(rights.get("allow", [])), _as_list(rights.get("deny", []))
    return _as_list(rights), []


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _users() -> dict[str, dict[str, Any]]:
    conf = parse_nats_conf(ACCOUNTS.read_text())
    return {entry["user"]: entry for entry in conf["authorization"]["users"]}


def test_the_conf_parser_reads_the_forms_nats_allows() -> None:
    conf = parse_nats_conf(
        'a { users = [ {user: x, permissions: {publish: "p.>", subscribe: {allow: ["s.*", q], deny: [d]}}} ]'
        " }\n# comment\n"
    )
    (entry,) = conf["a"]["users"]
    assert _rights(entry, "publish") == (["p.>"], [])
    assert _rights(entry, "subscribe") == (["s.*", "q"], ["d"])


def test_accounts_conf_has_exactly_the_users_of_the_permissions_module() -> None:
    assert set(_users()) == set(USERS)


@pytest.mark.parametrize("user", sorted(USERS))
def test_each_users_rights_are_the_modules(user: str) -> None:
    entry, expected = _users()[user], USERS[user]
    if expected is None:
        assert "permissions" not in entry, f"{user} may do anything: its entry has no permissions block"
        return
    publish_allow, publish_deny = _rights(entry, "publish")
    subscribe_allow, subscribe_deny = _rights(entry, "subscribe")
    found = Permissions(
        publish_allow=tuple(sorted(publish_allow)),
        publish_deny=tuple(sorted(publish_deny)),
        subscribe_allow=tuple(sorted(subscribe_allow)),
        subscribe_deny=tuple(sorted(subscribe_deny)),
    )
    wanted = Permissions(
        publish_allow=tuple(sorted(expected.publish_allow)),
        publish_deny=tuple(sorted(expected.publish_deny)),
        subscribe_allow=tuple(sorted(expected.subscribe_allow)),
        subscribe_deny=tuple(sorted(expected.subscribe_deny)),
    )
    assert found == wanted


def _allowed(patterns: tuple[str, ...], subject: str) -> bool:
    return any(matches(pattern, subject) for pattern in patterns)


def test_the_worker_may_do_what_the_worker_does() -> None:
    """What services/llm_worker/worker.py publishes and subscribes to, built with the same builders."""
    alias, consumer = "smollm2-135m", worker_consumer("smollm2-135m")
    for kind in ("started", "completed", "failed"):
        assert _allowed(WORKER.publish_allow, s.reply_event(C, R, kind))
    assert _allowed(WORKER.publish_allow, s.reply_tokens(C, R))
    assert _allowed(WORKER.publish_allow, s.kv_key(WORKERS_KV.bucket, s.presence_key(alias, "w1")))
    assert _allowed(WORKER.publish_allow, s.js_api("CONSUMER.MSG.NEXT", CHAT.name, consumer.durable))
    assert _allowed(WORKER.subscribe_allow, s.reply_event(s.ANY, s.ANY, "cancelled"))
    assert _allowed(WORKER.subscribe_allow, s.max_deliveries_advisory(consumer.stream, consumer.durable))
    assert _allowed(WORKER.subscribe_allow, f"{s.WORKER_INBOX_PREFIX}.x1.2")


def test_the_worker_may_not_write_what_people_write() -> None:
    forbidden = [
        s.chat_event(C, "created"),
        s.chat_event(C, "message.posted"),
        s.reply_requested(C, R, "smollm2-135m"),
        s.reply_event(C, R, "cancelled"),
        s.feedback(C, R, U),
        s.user_event(U, "created"),
        s.apikey_event(K, "issued"),
        s.image_stored(SHA, U),
        s.js_api("STREAM.PURGE", CHAT.name),
        s.js_api("STREAM.DELETE", CHAT.name),
    ]
    for subject in forbidden:
        assert not _allowed(WORKER.publish_allow, subject), subject
    assert not _allowed(WORKER.subscribe_allow, f"{s.DEFAULT_INBOX_PREFIX}.x1.2")


def test_no_worker_may_delete_a_consumer_and_an_alias_user_keeps_to_its_alias() -> None:
    alias, other = "demo-vision", "smollm2-135m"
    mine = worker_permissions(alias)
    for rights in (WORKER, mine):
        for consumer in (worker_consumer(alias).durable, worker_consumer(other).durable, "ordered1"):
            for stream in (CHAT.name, "OBJ_images", "KV_workers"):
                assert not _allowed(rights.publish_allow, s.js_api("CONSUMER.DELETE", stream, consumer))
    theirs = worker_consumer(other).durable
    forbidden = [
        s.kv_key(WORKERS_KV.bucket, s.presence_key(other, "w1")),
        s.js_api("CONSUMER.MSG.NEXT", CHAT.name, theirs),
        s.js_api("CONSUMER.DURABLE.CREATE", CHAT.name, theirs),
        f"{s.js_acks(CHAT.name, theirs)[:-1]}1.7.7.1700000000.0",
    ]
    for subject in forbidden:
        assert not _allowed(mine.publish_allow, subject), subject
        assert _allowed(WORKER.publish_allow, subject), subject  # what NATS cannot narrow for `worker`
    assert not _allowed(mine.subscribe_allow, s.max_deliveries_advisory(CHAT.name, theirs))
    own = worker_consumer(alias).durable
    assert _allowed(mine.publish_allow, s.kv_key(WORKERS_KV.bucket, s.presence_key(alias, "w1")))
    assert _allowed(mine.publish_allow, f"{s.js_acks(CHAT.name, own)[:-1]}1.7.7.1700000000.0")
    assert _allowed(mine.publish_allow, s.js_api("CONSUMER.MSG.NEXT", CHAT.name, own))


def test_the_generated_user_of_an_alias_has_exactly_its_rights() -> None:
    from schemas.permissions import conf_user

    block = conf_user(worker_user("smollm2-135m"), 'p"w', worker_permissions("smollm2-135m"))
    (entry,) = parse_nats_conf(f"users: [ {block} ]")["users"]
    assert entry["user"] == "worker-smollm2-135m" and entry["password"] == 'p\\"w'
    expected = worker_permissions("smollm2-135m")
    assert _rights(entry, "publish") == (list(expected.publish_allow), [])
    assert _rights(entry, "subscribe") == (list(expected.subscribe_allow), [])
