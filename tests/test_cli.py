"""The CLI's choices and its process helper, without NATS: typer refuses a bad choice before connecting,
and `processes` starts, watches and stops children as `chatbus up`, the tests and the benchmarks need."""

from __future__ import annotations

import asyncio
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest
from typer.testing import CliRunner

import bus
from logtools import export, export_files
from schemas.identity import UserRole
from services.cli import processes
from services.cli.admin_export import MinRating, Per, TableFormat
from services.cli.admin_users import Role
from services.cli.app import app


def _values(choice: type[Enum]) -> set[str]:
    return {member.value for member in choice}


def test_every_choice_is_what_the_service_takes() -> None:
    assert _values(Per) == set(get_args(export.Per))
    assert _values(TableFormat) == set(get_args(export_files.TableFormat))
    min_rating = get_type_hints(export.ExportFilter)["min_rating"]  # Literal["up"] | None
    assert _values(MinRating) == set(get_args(get_args(min_rating)[0]))
    assert _values(Role) == set(get_args(UserRole))


@pytest.mark.parametrize(
    "args, option",
    [
        (["admin", "export", "sft", "--out", "x.jsonl", "--per", "all"], "--per"),
        (["admin", "export", "sft", "--out", "x.jsonl", "--format", "csv"], "--format"),
        (["admin", "export", "preferences", "--out", "x.jsonl", "--since", "yesterday"], "--since"),
        (["admin", "replay", "--out", "x.duckdb", "--until-time", "noon"], "--until-time"),
        (["admin", "user", "add", "ann", "--role", "owner"], "--role"),
    ],
)
def test_a_bad_choice_is_refused_naming_the_option(args: list[str], option: str) -> None:
    result = CliRunner().invoke(app, [*args, "--nats", "nats://127.0.0.1:1"], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_make_demo_model_builds_where_the_workers_look(tmp_path: Path) -> None:
    cache, data = tmp_path / "cache", tmp_path / "data"
    env = {"CHATBUS_MODEL_CACHE": str(cache), "CHATBUS_DATA_DIR": str(data), "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["admin", "make-demo-model"], env=env)
    assert result.exit_code == 0, result.output
    assert (cache / "demo-text" / "config.json").exists() and (cache / "demo-vision" / "config.json").exists()
    assert not (data / "models").exists()
    again = CliRunner().invoke(app, ["admin", "make-demo-model"], env=env)
    assert again.exit_code == 0 and "exists" in again.output


def test_help_lists_the_choices() -> None:
    result = CliRunner().invoke(app, ["admin", "export", "sft", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for choices in ("active|rated", "jsonl|parquet"):
        assert choices in result.output


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_stop_kills_a_child_that_ignores_sigterm_and_what_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal, time;"
        " signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    child = processes.start(_python(code), log=tmp_path / "child.log")
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, (tmp_path / "child.log").read_text()
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    started = time.monotonic()
    processes.stop([child], timeout=0.5)
    assert child.returncode == -9 and time.monotonic() - started < 10
    assert not _alive(grandchild), "the child's process group outlived it"


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":  # killed, waiting for init to reap it
            return False
        time.sleep(0.05)
    return True


def test_stop_ends_a_well_behaved_child_with_sigterm(tmp_path: Path) -> None:
    child = processes.start(_python("import time; time.sleep(60)"), log=tmp_path / "child.log")
    processes.stop([child], timeout=20)
    assert child.returncode == -15


def test_wait_any_exit_names_the_child_that_exited(tmp_path: Path) -> None:
    sleeper = processes.start(_python("import time; time.sleep(60)"))
    quitter = processes.start(_python("raise SystemExit(3)"))
    try:
        assert processes.wait_any_exit([sleeper, quitter], poll=0.05) is quitter
        assert quitter.returncode == 3
    finally:
        processes.stop([sleeper, quitter])


async def test_wait_http_gives_up_when_a_watched_child_exits() -> None:
    quitter = processes.start(_python("raise SystemExit(1)"))
    port = bus.free_port()
    with pytest.raises(processes.ChildExited):
        await asyncio.wait_for(
            processes.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=30, watch=[quitter]), 20
        )


async def test_wait_http_returns_the_body_that_is_ready(tmp_path: Path) -> None:
    port = bus.free_port()
    (tmp_path / "ready.json").write_text('{"data": [{"id": "demo"}]}')
    server = processes.start(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        log=tmp_path / "server.log",
    )
    try:
        body: Any = await processes.wait_http(
            f"http://127.0.0.1:{port}/ready.json",
            timeout=30,
            ready=lambda b: any(m["id"] == "demo" for m in b["data"]),
            watch=[server],
        )
        assert body == {"data": [{"id": "demo"}]}
    finally:
        processes.stop([server])
