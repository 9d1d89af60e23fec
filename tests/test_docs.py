"""Documentation that tests keep true: settings, CLI help, commands and routes are in the README."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from services.api.settings import ENV_VARS as API_VARS
from services.cli.app import app
from services.cli.settings import ENV_VARS as CLI_VARS
from services.image_store.settings import ENV_VARS as IMAGE_VARS
from services.llm_worker.settings import ENV_VARS as WORKER_VARS
from services.webhooks.settings import ENV_VARS as WEBHOOK_VARS

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _config_table() -> set[str]:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(CHATBUS_[A-Z_]+)` \|", section, flags=re.M))


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    declared = {name for name, _ in (*CLI_VARS, *API_VARS, *WORKER_VARS, *IMAGE_VARS, *WEBHOOK_VARS)}
    assert declared == _config_table()


def test_every_env_var_read_in_code_is_declared() -> None:
    declared = {name for name, _ in (*CLI_VARS, *API_VARS, *WORKER_VARS, *IMAGE_VARS, *WEBHOOK_VARS)}
    used: set[str] = set()
    packages = ("services", "logtools", "identity", "bus", "schemas")
    for path in [p for package in packages for p in ROOT.glob(f"{package}/**/*.py")]:
        used.update(re.findall(r"\"(CHATBUS_[A-Z_]+)\"", path.read_text()))
    assert used <= declared, f"undocumented: {used - declared}"


def _commands(group: typer.main.TyperGroup, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for name, command in group.commands.items():
        out.append((f"{prefix}{name}", command))
        if hasattr(command, "commands"):
            out.extend(_commands(command, f"{prefix}{name} "))  # type: ignore[arg-type]
    return out


def test_every_cli_command_has_help() -> None:
    root = typer.main.get_command(app)
    commands = _commands(root)  # type: ignore[arg-type]
    assert len(commands) >= 10
    for name, command in commands:
        assert (command.help or "").strip(), f"`chatbus {name}` has no help"  # type: ignore[attr-defined]
        for param in command.params:  # type: ignore[attr-defined]
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"`chatbus {name}` option {param.name} has no help"


def _contains_sequence(tokens: list[str], wanted: list[str]) -> bool:
    return any(tokens[i : i + len(wanted)] == wanted for i in range(len(tokens) - len(wanted) + 1))


def test_every_cli_command_is_in_the_readme() -> None:
    """Each command by its whole name: `chatbus admin export` does not document `chatbus admin export sft`."""
    root = typer.main.get_command(app)
    section = README.split("## Command line", 1)[1].split("\n## ", 1)[0]
    tokens = re.findall(r"[\w-]+", section)
    for name, command in _commands(root):  # type: ignore[arg-type]
        if hasattr(command, "commands"):
            continue
        assert _contains_sequence(tokens, ["chatbus", *name.split()]), (
            f"`chatbus {name}` is not in the README's command table"
        )


def test_every_route_is_in_the_readme_api_table() -> None:
    from services.api.routes import ROUTES

    section = README.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (GET|POST|PATCH|DELETE|PUT) \| `([^`]+)` \|", section, flags=re.M)
    documented = {(method, path.split("?")[0]) for method, path in rows}
    assert {(r.method, r.path) for r in ROUTES} == documented
