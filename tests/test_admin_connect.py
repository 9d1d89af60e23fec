"""Admin commands and NATS: they give up within seconds saying what to do, and on the machine running
`chatbus up` they find its server on whatever port it listens, through the context file it writes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bus
from bus import Credentials, EmbeddedServer
from services.cli.app import app
from services.cli.settings import DEFAULT_NATS, LOCAL_CONTEXT, with_local_credentials, write_local_context

ENV = {"COLUMNS": "200"}


def _init(url: str | None, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    started = time.monotonic()
    args = ["admin", "init"] + (["--nats", url] if url is not None else [])
    result = CliRunner().invoke(app, args, env={**ENV, **(env or {})})
    return result.exit_code, result.output, time.monotonic() - started


def test_an_unreachable_server_fails_within_seconds_saying_what_to_do() -> None:
    code, output, took = _init(f"nats://127.0.0.1:{bus.free_port()}")
    assert code == 2, output
    assert took < 20, f"took {took:.0f} s"
    assert "Cannot connect to NATS" in output and "chatbus up" in output


def test_refused_credentials_fail_within_seconds_naming_the_fix(nats_url: str) -> None:
    wrong = re.sub(r"//([^:]+):[^@]+@", r"//\1:not-the-password@", nats_url)
    code, output, took = _init(wrong)
    assert code == 2, output
    assert took < 20, f"took {took:.0f} s"
    assert "refused the user or password" in output and "not-the-password" not in output


def test_the_default_url_finds_chatbus_ups_server_on_another_port(
    nats_server: EmbeddedServer, nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`chatbus up --nats-port N` writes the context; a command without --nats reads it."""
    user = re.search(r"//([^:]+):", nats_url)
    assert user is not None
    creds = Credentials(user=user.group(1), password=nats_server.config.credentials.password)
    path = write_local_context(tmp_path, nats_server.config.port, creds)
    assert path.name == LOCAL_CONTEXT and path.stat().st_mode & 0o777 == 0o600
    context = json.loads(path.read_text())  # the nats CLI's context format (ADR-21)
    assert context["url"] == f"nats://127.0.0.1:{nats_server.config.port}"
    assert (context["user"], context["password"]) == (creds.user, creds.password)

    monkeypatch.delenv("CHATBUS_NATS_URL", raising=False)
    monkeypatch.setenv("CHATBUS_DATA_DIR", str(tmp_path))
    code, output, _ = _init(None)
    assert code == 0, output
    assert "created" in output  # it reached the test server's account and declared the streams


def test_without_a_context_the_default_url_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATBUS_DATA_DIR", str(tmp_path))
    assert with_local_credentials(DEFAULT_NATS) == DEFAULT_NATS
