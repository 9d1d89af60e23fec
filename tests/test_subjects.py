"""Subjects are spelled in one place (schemas/subjects.py), and the NATS users' rights match the code.

1. Every builder round-trips through its parser, and every pattern builder matches exactly the
   subjects it should (checked with a NATS-style matcher written here, independent of the module).
2. No module of schemas/ (but subjects.py), bus/ or services/ formats or splits a subject itself.
   The check reads the source (AST) and refuses:
   - an f-string, a `+` concatenation, a `%` or a `.format` whose text starts with a subject root
     token and a dot (`chat.`, `tokens.`, `user.`, `apikey.`, `group.`, `image.`, `$KV.`, `$JS.`,
     `$O.`, `$SRV.`, `_INBOX.`, `_INBOX_worker.`: `subjects.ROOTS`);
   - an f-string or concatenation with a wildcard token next to a formatted part (`f"{alias}.*"`,
     `prefix + ".>"`), and an f-string starting with a `*_SERVICE`, `*_ROOT` or `*_PREFIX`
     constant and a dot (`f"{PROJECTOR_SERVICE}.status"`);
   - a plain string that is a subject pattern: a root token, a dot, and a `*` or `>` token
     (`"chat.*.created"`, `"tokens.>"`);
   - `".".join([...])` whose first element is a root token or starts like a subject;
   - `.split(".")`, `.rsplit(".")`, `.partition(".")`, `.rpartition(".")`, `.startswith`, `.endswith`,
     `.removeprefix`, `.removesuffix`, slicing, and `re.*` calls on a subject-like expression (one
     that mentions a name or attribute containing `subject`, such as `msg.subject`);
   - `.endswith` / `.startswith` with a `.<event kind>` argument (`".completed"`), whatever the receiver.
   Its limits: a subject assembled only from names (`prefix + key`, `".".join(parts)`), or held in a
   variable whose name does not say `subject` and then split, is not seen; a concrete subject written
   as a plain constant without wildcards (`"chat.c1.created"`) is not refused, because it cannot be
   told from an event tag (`"chat.created"`) or an OpenAI object name (`"chat.completion"`);
   docstrings are not read. tests/ and bench/ are not checked (tests spell subjects on purpose, as an
   independent check of the builders).
3. deploy/nats/accounts.conf grants each NATS user exactly the rights of schemas/permissions.py
   (built from the same builders), and those rights cover what the worker publishes and subscribes.
"""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest

import schemas
from schemas import subjects as s
from schemas.permissions import USERS, WORKER, Permissions
from schemas.streams import CHAT, IDENTITY, IMAGE, STREAMS, TOKENS, WORKERS_KV, worker_consumer

ROOT = Path(__file__).parent.parent
ACCOUNTS = ROOT / "deploy" / "nats" / "accounts.conf"

C, R, U, K = "c1", "r-2", "ann_3", "kX9"
SHA = "ab" * 32


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is any one token, a final `>` one or more tokens."""
    mine, theirs = pattern.split("."), subject.split(".")
    for i, token in enumerate(mine):
        if token == ">" and i == len(mine) - 1:
            return len(theirs) > i
        if i >= len(theirs) or (token != "*" and token != theirs[i]):
            return False
    return len(mine) == len(theirs)


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
    wanted = [s.chat_event(C, "created"), s.chat_event(C, "message.posted"), s.reply_event(C, R, "completed")]
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
        elif isinstance(info, msgspec.inspect.LiteralType):
            values[field.name] = info.values[0]
        elif isinstance(info, msgspec.inspect.UnionType):
            values[field.name] = None
        else:
            values[field.name] = msgspec.convert({}, field.type)
    return event_type(**values)


_PARSERS = (s.parse_chat_subject, s.parse_tokens_subject, s.parse_identity_subject, s.parse_image_subject)


@pytest.mark.parametrize("event_type", schemas.EVENT_TYPES, ids=lambda t: t.__name__)
def test_every_event_subject_parses_back_to_the_event(event_type: Any) -> None:
    event = _example(event_type)
    subject = s.subject_of(event)
    parsed = [p for parser in _PARSERS if (p := parser(subject)) is not None]
    assert len(parsed) == 1, f"{subject}: {parsed}"
    for name, value in msgspec.structs.asdict(parsed[0]).items():
        if name != "kind" and value != "":  # "": a part only some kinds carry (`model`, `uploaded_by`)
            assert value == getattr(event, name), f"{subject}: {name}"
    stream = {s.CHAT_ROOT: CHAT, s.TOKENS_ROOT: TOKENS, s.USER_ROOT: IDENTITY, s.APIKEY_ROOT: IDENTITY}
    spec = stream.get(subject.split(".")[0], IMAGE)
    assert any(matches(pattern, subject) for pattern in spec.subjects)


def test_the_streams_subjects_are_the_roots() -> None:
    filters = {subject for spec in STREAMS for subject in spec.subjects}
    assert filters == {s.ALL_CHATS, s.ALL_TOKENS, s.ALL_USERS, s.ALL_APIKEYS, s.ALL_GROUPS, s.ALL_IMAGES}
    assert {f.split(".")[0] for f in filters} <= set(s.ROOTS)


# ---------------------------------------------------------------- 2. nobody else spells a subject

_ROOT_PREFIXES = tuple(f"{root}." for root in s.ROOTS)
_WILDCARD_TOKEN = re.compile(r"(^|\.)[*>](\.|$)")
# A wildcard token next to a formatted part: `{}.*`, `{}.>`, `*.{}` (a subject never starts with a dot,
# so `.{}.*.tmp`, a glob of hidden files, is not one).
_FORMATTED_WILDCARD = re.compile(r"\{\}\.[*>](\.|$)|(^|\.)\*\.\{\}")
_NAMED_ROOT = re.compile(r"_(SERVICE|ROOT|PREFIX)$")
_TEXT_METHODS = {"split", "rsplit", "partition", "rpartition"}
_AFFIX_METHODS = {"startswith", "endswith", "removeprefix", "removesuffix"}
_KIND_SUFFIXES = {f".{kind}" for kind in s.KINDS}


def _text(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _starts_like_a_subject(text: str | None) -> bool:
    return text is not None and text.startswith(_ROOT_PREFIXES)


def _is_pattern(text: str | None) -> bool:
    """A plain string that is a subject pattern: a root, a dot, and a wildcard token."""
    return (
        text is not None
        and _starts_like_a_subject(text)
        and not any(c.isspace() for c in text)
        and bool(_WILDCARD_TOKEN.search(text))
    )


def _subject_like(node: ast.AST) -> bool:
    """The expression mentions a name or attribute that ends in `subject` (`msg.subject`, `subject`,
    `expected_subject`; not `subjects`, a list)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id.lower().endswith("subject"):
            return True
        if isinstance(sub, ast.Attribute) and sub.attr.lower().endswith("subject"):
            return True
    return False


def _fstring_template(node: ast.JoinedStr) -> str:
    return "".join(_text(v) or "{}" for v in node.values)


def _leftmost(node: ast.AST) -> ast.AST:
    while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        node = node.left
    return node


def _operands(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return [*_operands(node.left), *_operands(node.right)]
    return [node]


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and _text(first.value) is not None:
                found.add(id(first.value))
    return found


def subject_spellings(source: str) -> list[tuple[int, str]]:
    """(line, why) for each place the source formats or splits a subject by hand."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    in_fstrings = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.JoinedStr):
            first = node.values[0] if node.values else None
            template = _fstring_template(node)
            if first is not None and _starts_like_a_subject(_text(first)):
                found.append((line, f"an f-string builds a subject: {template!r}"))
            elif _FORMATTED_WILDCARD.search(template) and not template.startswith("."):
                found.append((line, f"an f-string builds a subject pattern: {template!r}"))
            elif (
                isinstance(first, ast.FormattedValue)
                and isinstance(first.value, ast.Name)
                and _NAMED_ROOT.search(first.value.id)
                and len(node.values) > 1
                and (_text(node.values[1]) or "").startswith(".")
            ):
                found.append((line, f"an f-string builds a subject on {first.value.id}: {template!r}"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            texts = [_text(o) for o in _operands(node)]
            if _starts_like_a_subject(_text(_leftmost(node))) or any(
                t is not None and t.startswith(".") and _WILDCARD_TOKEN.search(t) for t in texts
            ):
                found.append((line, "a concatenation builds a subject"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            if _starts_like_a_subject(_text(node.left)):
                found.append((line, "%-formatting builds a subject"))
        elif isinstance(node, ast.Constant) and id(node) not in docstrings and id(node) not in in_fstrings:
            if _is_pattern(_text(node)):
                found.append((line, f"a subject pattern spelled by hand: {node.value!r}"))
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Slice)
            and _subject_like(node.value)
        ):
            found.append((line, "a subject is sliced"))
        elif isinstance(node, ast.Call):
            found.extend((line, why) for why in _call_problems(node))
    return sorted(set(found))


def _call_problems(node: ast.Call) -> list[str]:
    func = node.func
    if not isinstance(func, ast.Attribute):
        return []
    receiver, method, args = func.value, func.attr, node.args
    first = _text(args[0]) if args else None
    problems = []
    if method == "format" and _starts_like_a_subject(_text(receiver)):
        problems.append("`.format` builds a subject")
    if method == "join" and _text(receiver) == "." and args and isinstance(args[0], ast.List | ast.Tuple):
        head = _text(args[0].elts[0]) if args[0].elts else None
        if head is not None and (head in s.ROOTS or _starts_like_a_subject(head)):
            problems.append("`.join` builds a subject")
    if method in _TEXT_METHODS and first == "." and _subject_like(receiver):
        problems.append(f"a subject is taken apart with `.{method}`")
    if method in _AFFIX_METHODS:
        suffixes = [_text(e) for e in args[0].elts] if args and isinstance(args[0], ast.Tuple) else [first]
        if _subject_like(receiver):
            problems.append(f"a subject is tested with `.{method}`")
        elif any(t in _KIND_SUFFIXES for t in suffixes):
            problems.append(f"an event kind is tested with `.{method}`")
    if isinstance(receiver, ast.Name) and receiver.id == "re" and any(_subject_like(a) for a in args):
        problems.append(f"a subject is parsed with `re.{method}`")
    return problems


def _checked_files() -> list[Path]:
    packages = ("schemas", "bus", "logtools", "identity", "services")
    files = [p for package in packages for p in sorted((ROOT / package).rglob("*.py"))]
    return [p for p in files if p != ROOT / "schemas" / "subjects.py"]


def test_there_are_files_to_check() -> None:
    names = {str(p.relative_to(ROOT)) for p in _checked_files()}
    assert {
        "identity/erasure.py",
        "services/llm_worker/worker.py",
        "bus/kv.py",
        "schemas/streams.py",
    } <= names


@pytest.mark.parametrize("path", _checked_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_spells_a_subject(path: Path) -> None:
    problems = subject_spellings(path.read_text())
    assert not problems, "\n".join(f"{path.relative_to(ROOT)}:{line}: {why}" for line, why in problems)


BAD = {
    'f"chat.{chat_id}.>"': "f-string",
    'f"tokens.{c}.{r}"': "f-string",
    'f"$KV.{bucket}."': "f-string",
    'f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{s}.{c}"': "f-string",
    'f"{alias}.*"': "pattern",
    'f"{PROJECTOR_SERVICE}.{endpoint}"': "PROJECTOR_SERVICE",
    '"chat." + chat_id + ".created"': "concatenation",
    'prefix + ".>"': "concatenation",
    '"user.%s.created" % user_id': "%-formatting",
    '"apikey.{}.issued".format(key_id)': "`.format`",
    '".".join(["chat", chat_id, "created"])': "`.join`",
    'cancels = "chat.*.reply.*.cancelled"': "by hand",
    '["tokens.>"]': "by hand",
    'msg.subject.split(".")[3]': "`.split`",
    'last.subject.rsplit(".", 1)': "`.rsplit`",
    'subject.partition(".")': "`.partition`",
    'last.subject.endswith((".completed", ".failed"))': "`.endswith`",
    'text.endswith(".cancelled")': "event kind",
    "msg.subject[len(prefix):]": "sliced",
    're.match(r"chat\\.(\\w+)", msg.subject)': "`re.match`",
}
GOOD = [
    'kind = "chat.completion"',
    'tag="chat.message.posted"',
    'f"{reply_id}.started.{attempt}"',
    'f"{request.reply_id}.{attempt}.{index}"',
    'content_type.startswith("image/")',
    'name.endswith(".py")',
    'f"chat {chat_id}: {where}"',
    'f"KV_{bucket}"',
    'name.split(".")[0]',
    'operation = "images.upload"',
    'cache.glob(f".{target.name}.*.tmp")',
    "self.subjects[:n]",
    'f"{path}.{field}: unknown key"',
    'def f():\n    """Subject `chat.<chat_id>.reply.*.completed`."""',
]


@pytest.mark.parametrize("source", sorted(BAD), ids=str)
def test_the_check_finds_a_hand_spelled_subject(source: str) -> None:
    problems = subject_spellings(source)
    assert problems and any(BAD[source] in why for _, why in problems), problems


@pytest.mark.parametrize("source", GOOD, ids=str)
def test_the_check_leaves_other_strings_alone(source: str) -> None:
    assert subject_spellings(source) == []


# ---------------------------------------------------------------- 3. deploy/nats/accounts.conf

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
