"""No module of schemas/ (but the schemas/subjects/ package), bus/ or services/ formats or splits a subject.

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
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from schemas import subjects as s

ROOT = Path(__file__).parent.parent

SUBJECTS_PACKAGE = ROOT / "schemas" / "subjects"

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
    """Every module of our packages but the subjects package's own (not a package in it)."""
    packages = ("schemas", "bus", "logtools", "identity", "services")
    files = [p for package in packages for p in sorted((ROOT / package).rglob("*.py"))]
    return [p for p in files if p.parent != SUBJECTS_PACKAGE]


def test_there_are_files_to_check() -> None:
    names = {str(p.relative_to(ROOT)) for p in _checked_files()}
    assert {
        "identity/erasure.py",
        "logtools/export.py",
        "services/llm_worker/worker.py",
        "bus/kv.py",
        "schemas/streams.py",
    } <= names
    exempt = {p for p in SUBJECTS_PACKAGE.rglob("*.py")} - set(_checked_files())
    assert exempt == set(SUBJECTS_PACKAGE.glob("*.py"))
    assert (SUBJECTS_PACKAGE / "__init__.py") in exempt


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
