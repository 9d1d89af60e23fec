"""`chatbus up`: one command starts everything, prints the URL and a key, stops cleanly, keeps data."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from PIL import Image

import bus

ROOT = Path(__file__).parent.parent


PNG = {"Content-Type": "image/png"}


def _start(
    data_dir: Path, model_dir: Path, port: int, nats_port: int, log: Path, *, sigint_ignored: bool = False
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CHATBUS_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    cmd = [
        sys.executable,
        "-m",
        "services.cli",
        "up",
        "--model",
        str(model_dir),
        "--port",
        str(port),
        "--nats-port",
        str(nats_port),
    ]
    # sigint_ignored: as `nohup chatbus up &` or a non-interactive shell's background job starts it.
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT, preexec_fn=ignore
    )


def _child_pids(parent: int, word: str) -> list[int]:
    """Processes whose parent is `parent` and whose command line has `word`."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat_file.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and word.encode() in cmdline:
            found.append(int(stat_file.parent.name))
    return found


async def _wait_ready(base: str, key: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{base}/v1/models") as resp:
                    if resp.status == 200 and (await resp.json())["data"]:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError("chatbus up never became ready")


def _key_from(log: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"admin API key: (cb_[A-Za-z0-9_-]+)", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.2)
    raise TimeoutError(f"no key printed:\n{log.read_text(errors='replace')}")


def _interrupt(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=60)


async def test_up_serves_stops_on_ctrl_c_and_keeps_chats(tmp_path: Path, demo_model_dir: Path) -> None:
    data = tmp_path / "data"
    port, nats_port = bus.free_port(), bus.free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    proc = _start(data, demo_model_dir, port, nats_port, log)
    try:
        key = _key_from(log)
        assert f"http://127.0.0.1:{port}/" in log.read_text()
        await _wait_ready(base, key)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            async with http.post(f"{base}/v1/chats", json={"title": "kept"}) as resp:
                assert resp.status == 201
                chat_id = (await resp.json())["chat_id"]
            image = io.BytesIO()
            Image.new("RGB", (8, 8), (1, 2, 3)).save(image, "PNG")
            async with http.post(f"{base}/v1/images", data=image.getvalue(), headers=PNG) as resp:
                assert resp.status == 201, await resp.text()  # the image store runs too
                sha = (await resp.json())["sha256"]
    finally:
        code = _interrupt(proc)
    assert code == 0, log.read_text(errors="replace")
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for secret in ("nats.creds", "admin.key", "nats-server.conf"):
        assert stat.S_IMODE((data / secret).stat().st_mode) == 0o600, secret
    assert 'listen: "127.0.0.1:' in (data / "nats-server.conf").read_text()

    proc = _start(data, demo_model_dir, port, nats_port, log, sigint_ignored=True)
    try:
        assert _key_from(log) == key
        await _wait_ready(base, key)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            async with http.get(f"{base}/v1/chats/{chat_id}") as resp:
                assert resp.status == 200
                assert (await resp.json())["title"] == "kept"
            async with http.get(f"{base}/v1/images/{sha}") as resp:
                assert resp.status == 200 and resp.content_type == "image/png"
        # A worker killed as the OOM killer would: up restarts it and keeps everything else running.
        (worker,) = _child_pids(proc.pid, "worker")
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while "restarted (restart 1)" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            await asyncio.sleep(0.2)
        assert "exited with -9; restarting in 1 s" in log.read_text(errors="replace")
        assert len(_child_pids(proc.pid, "worker")) == 1 and _child_pids(proc.pid, "api")
        await _wait_ready(base, key)
    finally:
        # Started with SIGINT ignored (nohup, a background job): Ctrl-C still stops it, within 15 s.
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        took = time.monotonic() - started
    assert code == 0, log.read_text(errors="replace")
    assert took < 16, f"stopping took {took:.1f} s"

    proc = _start(data, demo_model_dir, port, nats_port, log)
    try:
        await _wait_ready(base, _key_from(log))
    finally:
        proc.send_signal(signal.SIGTERM)  # as systemd or docker stop would
        assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")


async def test_up_serves_the_real_default_model_through_the_openai_api(
    tmp_path: Path, smollm2_dir: Path
) -> None:
    """`chatbus up` with no model named: SmolLM2-135M-Instruct (converted once; here already, in the
    test run's model cache) answers through the openai SDK, as the README's first example does."""
    import openai

    port, nats_port = bus.free_port(), bus.free_port()
    log = tmp_path / "up.log"
    env = {
        **os.environ,
        "CHATBUS_DATA_DIR": str(tmp_path / "data"),
        "CHATBUS_MODEL_CACHE": str(smollm2_dir.parent),
        "COLUMNS": "200",
    }
    cmd = [sys.executable, "-m", "services.cli", "up", "--port", str(port), "--nats-port", str(nats_port)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        key = _key_from(log)
        assert "models: smollm2-135m, demo-vision" in log.read_text()
        base = f"http://127.0.0.1:{port}"
        await _wait_ready(base, key)
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
        for _ in range(600):
            ids = [m.id for m in (await client.models.list()).data]
            if "smollm2-135m" in ids and "demo-vision" in ids:
                break
            await asyncio.sleep(0.2)
        answer = await client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=24,
        )
        assert "Paris" in answer.choices[0].message.content, answer
        await client.close()
    finally:
        code = _interrupt(proc)
    assert code == 0, log.read_text(errors="replace")
