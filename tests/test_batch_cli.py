"""`chatbus batch ...` run as a child process against a test stack: JSONL and plain-text inputs submitted,
followed with --wait, every custom_id written once to --out; status, list, results and cancel; a refused
input says which lines are wrong."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec

from bus import Bus
from services.cli import processes
from tests.batchhelp import batch_stack, jsonl, users
from tests.stack import ROOT


async def _chatbus(base: str, key: str, *args: str) -> tuple[int, str, str]:
    """Run `chatbus ARGS` with the API's address and the key in the environment."""
    env = {**os.environ, "CHATBUS_URL": base, "CHATBUS_API_KEY": key, "COLUMNS": "200"}
    child = await asyncio.create_subprocess_exec(
        *processes.chatbus(*args),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 180)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


def _read(path: Path) -> list[dict[str, object]]:
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines() if line]


async def test_submit_wait_out_writes_every_custom_id_once(
    nbus: Bus, tmp_path: Path, demo_model_dir: Path
) -> None:
    keys = await users(nbus)
    jsonl_file, text_file = tmp_path / "in.jsonl", tmp_path / "prompts.txt"
    jsonl_file.write_bytes(jsonl(30))
    text_file.write_text("Hello\nWhat is 2+2?\n\nTell me a joke\n")
    async with batch_stack(nbus, tmp_path, demo_model_dir) as base:
        out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
        code, stdout, stderr = await _chatbus(
            base,
            keys["ann"],
            "batch",
            "submit",
            str(jsonl_file),
            "--wait",
            "--out",
            str(out),
            "--errors",
            str(errors),
        )
        assert code == 0, stderr
        assert "completed" in stdout and "30 answered" in stdout
        assert [line["custom_id"] for line in _read(out)] == [f"req-{i}" for i in range(30)]
        assert _read(errors) == []
        text_out = tmp_path / "text-out.jsonl"
        code, stdout, stderr = await _chatbus(
            base, keys["ann"], "batch", "submit", str(text_file), "--model", "demo", "--out", str(text_out)
        )
        assert code == 0, stderr
        assert [line["custom_id"] for line in _read(text_out)] == ["line-1", "line-2", "line-4"]
        batch_id = stdout.split(":", 1)[0].strip()
        code, stdout, _ = await _chatbus(base, keys["ann"], "batch", "status", batch_id)
        assert code == 0 and '"status": "completed"' in stdout
        code, stdout, _ = await _chatbus(base, keys["ann"], "batch", "list")
        assert code == 0 and batch_id in stdout
        again = tmp_path / "again.jsonl"
        code, _, _ = await _chatbus(base, keys["ann"], "batch", "results", batch_id, "--out", str(again))
        assert code == 0 and again.read_bytes() == text_out.read_bytes()
        code, _, stderr = await _chatbus(base, keys["ann"], "batch", "cancel", batch_id)
        assert code == 1 and "409" in stderr and "already ended" in stderr
        code, _, stderr = await _chatbus(base, keys["bob"], "batch", "status", batch_id)
        assert code == 1 and "404" in stderr
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(jsonl(2) + b'{"custom_id": "req-0", "body": {"messages": []}}\n')
        code, _, stderr = await _chatbus(base, keys["ann"], "batch", "submit", str(bad))
        assert code == 1 and "line 3 (req-0)" in stderr, stderr
    code, _, stderr = await _chatbus(base, "", "batch", "list")
    assert code == 2 and "No API key" in stderr


async def test_submit_wait_rides_out_brief_api_failures(
    nbus: Bus, tmp_path: Path, demo_model_dir: Path
) -> None:
    """Between the CLI and the API, a proxy that answers the first poll 503, cuts the second poll's
    connection and answers the first download 502: the CLI retries each, says so, and writes every line."""
    from aiohttp import ClientSession, web

    keys = await users(nbus)
    infile, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    infile.write_bytes(jsonl(5))
    polls, downloads = [], []

    async def forward(request: web.Request) -> web.StreamResponse:
        path = request.path
        if request.method == "GET" and path.startswith("/v1/batches/"):
            seen = downloads if path.endswith("/output") else polls
            seen.append(path)
            if seen is polls and len(polls) == 1:
                return web.json_response({"error": {"message": "bus away"}}, status=503)
            if seen is polls and len(polls) == 2 and request.transport is not None:
                request.transport.abort()  # the connection cut, no answer at all
                return web.Response()
            if seen is downloads and len(downloads) == 1:
                return web.json_response({"error": {"message": "restarting"}}, status=502)
        async with (
            ClientSession() as session,
            session.request(
                request.method, f"{base}{request.path_qs}", headers=request.headers, data=await request.read()
            ) as answer,
        ):
            return web.Response(
                body=await answer.read(), status=answer.status, content_type=answer.content_type
            )

    async with batch_stack(nbus, tmp_path, demo_model_dir) as base:
        proxy = web.Application()
        proxy.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(proxy)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            code, stdout, stderr = await _chatbus(
                f"http://127.0.0.1:{port}", keys["ann"], "batch", "submit", str(infile), "--out", str(out)
            )
        finally:
            await runner.cleanup()
    assert code == 0, stderr
    assert "503 bus away; retrying in 1 s" in stderr and "retrying in 2 s" in stderr, stderr
    assert "502 restarting; retrying in 1 s" in stderr, stderr
    assert [line["custom_id"] for line in _read(out)] == [f"req-{i}" for i in range(5)]
