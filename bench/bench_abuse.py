"""Abuse benchmark: another user's read latency while idle and under each attack, in one run.

    python bench/bench_abuse.py [--rounds 3] [--seconds 4]

An embedded nats-server, the projector and the API run as separate processes (as `chatbus up` runs
them). A victim reads `GET /v1/chats` back to back and we record each answer's latency and status,
while an attacker (another user, with its own key) does one of:

1. 50 concurrent reads that wait for a far-future `min_seq`, over and over;
2. 100 concurrent logins with random user names and passwords, over and over (argon2 work);
3. 200 live feeds (WebSocket) of its own big chat from seq 0, never read.

Each attacking client waits `--pace` seconds (0.1) between its requests, so attack 1 offers ~500
requests/s and attack 2 ~1,000 logins/s; the attacker runs in a process of its own, so only the
server's work (not the benchmark's own client) can slow the victim.

Phases are interleaved (idle, 1, 2, 3, idle, 1, ...) `--rounds` times; the table shows the victim's
p50 / p99 per phase (all rounds pooled), its 5xx count, and what the attacker got. Goal (issue 13):
the victim's p99 under attack <= 3x its idle p99, and never a 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bus  # noqa: E402
from services.cli import processes  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 160)
FAR_FUTURE = 2**63 - 1


@dataclass
class Phase:
    """What the victim saw during one kind of phase, and what the attacker got."""

    name: str
    latencies: list[float] = field(default_factory=list)
    victim_codes: Counter[int] = field(default_factory=Counter)
    attacker_codes: Counter[str] = field(default_factory=Counter)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def victim_reads(base: str, key: str, seconds: float, phase: Phase) -> None:
    """GET /v1/chats back to back for `seconds`, noting each latency (ms) and status."""
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}, timeout=timeout) as http:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                async with http.get(f"{base}/v1/chats") as resp:
                    await resp.read()
                    phase.victim_codes[resp.status] += 1
            except (aiohttp.ClientError, TimeoutError):
                phase.victim_codes[599] += 1
            phase.latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.02)


Attack = Callable[[str, str, asyncio.Event, Phase], Coroutine[Any, Any, None]]


Sent = contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]  # a request aiohttp is sending
PACE = 0.1  # seconds between one attacking client's requests (set by --pace)


async def _flood(
    headers: dict[str, str],
    clients: int,
    request: Callable[
        [aiohttp.ClientSession], contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]
    ],
    stop: asyncio.Event,
    phase: Phase,
) -> None:
    """`clients` clients, each sending `request` every PACE seconds until `stop`; answers counted."""
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one() -> None:
            while not stop.is_set():
                try:
                    async with request(http) as resp:
                        await resp.read()
                        phase.attacker_codes[str(resp.status)] += 1
                except aiohttp.ClientError as exc:
                    phase.attacker_codes[type(exc).__name__] += 1
                await asyncio.sleep(PACE)

        await asyncio.gather(*(one() for _ in range(clients)))


async def far_future_reads(base: str, key: str, stop: asyncio.Event, phase: Phase) -> None:
    far = {"min_seq": str(FAR_FUTURE)}
    headers = {"Authorization": f"Bearer {key}"}
    await _flood(headers, 50, lambda http: http.get(f"{base}/v1/chats", params=far), stop, phase)


async def bogus_logins(base: str, key: str, stop: asyncio.Event, phase: Phase) -> None:
    def login(http: aiohttp.ClientSession) -> Sent:
        body = {"user": f"u{secrets.token_hex(4)}", "password": secrets.token_hex(8)}
        return http.post(f"{base}/v1/login", json=body)

    await _flood({"Origin": base}, 100, login, stop, phase)


def idle_feeds(chat_id: str) -> Attack:
    async def attack(base: str, key: str, stop: asyncio.Event, phase: Phase) -> None:
        headers = {"Authorization": f"Bearer {key}", "Origin": base}
        async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0)) as http:
            feeds = []
            for _ in range(200):
                try:
                    feed = await http.ws_connect(f"{base}/v1/chats/{chat_id}/ws", autoping=False)
                    feeds.append(feed)
                    phase.attacker_codes["feed opened"] += 1
                except aiohttp.WSServerHandshakeError as exc:
                    phase.attacker_codes[f"feed refused {exc.status}"] += 1
                except aiohttp.ClientError as exc:
                    phase.attacker_codes[type(exc).__name__] += 1
            await stop.wait()  # never read: the server must bound what it buffers for them
            closed = sum(1 for feed in feeds if feed.closed)
            phase.attacker_codes["feeds closed by the server"] += closed
            for feed in feeds:
                with contextlib.suppress(Exception):
                    await feed.close()

    return attack


ATTACKS = {"far-future": far_future_reads, "logins": bogus_logins}


async def run_phase(
    base: str, victim: str, attacker: str, seconds: float, phase: Phase, attack: str | None
) -> None:
    """The victim reads for `seconds` while the attack runs in a process of its own (its client work
    must not slow the victim's client: only the server's may)."""
    proc = None
    if attack is not None:
        kind, _, chat = attack.partition(":")
        args = [sys.executable, __file__, "--attack", kind, "--base", base, "--key", attacker, "--chat", chat]
        args += ["--seconds", str(seconds + 1.0), "--pace", str(PACE)]
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
        await asyncio.sleep(1.0)  # let the attack build up
    await victim_reads(base, victim, seconds, phase)
    if proc is not None:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
        phase.attacker_codes.update(json.loads(out.decode().strip().splitlines()[-1]))
    await asyncio.sleep(1.0)  # let the server settle before the next phase


async def attack_main(args: argparse.Namespace) -> None:
    """Attacker mode: run one attack for --seconds, print what it got as one JSON line."""
    global PACE
    PACE = args.pace
    phase = Phase(args.attack)
    stop = asyncio.Event()
    attack = idle_feeds(args.chat) if args.attack == "feeds" else ATTACKS[args.attack]
    task = asyncio.create_task(attack(args.base, args.key, stop, phase))
    await asyncio.sleep(args.seconds)
    stop.set()
    done, _ = await asyncio.wait([task], timeout=5)
    if not done:  # requests in flight may wait long (that is the attack): cut them
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        phase.attacker_codes["cut at the end of the phase"] += 1
    print(json.dumps(dict(phase.attacker_codes)))


async def _big_chat(nbus: bus.Bus, owner: str, messages: int) -> str:
    """A chat of `owner`'s with many long turns, imported as a ChatGPT export would be (no model needed)."""
    from logtools.import_chatgpt import import_chatgpt

    mapping: dict[str, dict[str, object]] = {}
    for i in range(messages):
        role = "user" if i % 2 == 0 else "assistant"
        mapping[f"n{i}"] = {
            "id": f"n{i}",
            "message": {
                "author": {"role": role},
                "content": {"content_type": "text", "parts": [f"turn {i} " + "x" * 2000]},
                "create_time": 1700000000.0 + i,
                "metadata": {},
                "recipient": "all",
            },
            "parent": f"n{i - 1}" if i else None,
            "children": [f"n{i + 1}"] if i + 1 < messages else [],
        }
    conversation = {"title": "big", "create_time": 1700000000.0, "current_node": f"n{messages - 1}"}
    report = await import_chatgpt(nbus, [{**conversation, "mapping": mapping}], owner)
    return report.chats[0]


async def main(args: argparse.Namespace) -> int:
    from identity.accounts import add_user, issue_key

    tmp = Path(tempfile.mkdtemp(prefix="chatbus-abuse-"))
    server = bus.EmbeddedServer(
        bus.ServerConfig(store_dir=tmp / "js", credentials=bus.Credentials.generate())
    )
    server.start()
    url = server.url_for()
    children: list[processes.Child] = []
    try:
        nbus = await bus.connect(url, name="bench")
        await bus.declare_all(nbus.js)
        keys = {}
        for user in ("victim", "attacker"):
            await add_user(nbus.js, user)
            keys[user] = (await issue_key(nbus.js, user))[1]
        big = await _big_chat(nbus, "attacker", args.big_chat)
        await nbus.close()
        port = bus.free_port()
        env = {
            **os.environ,
            "CHATBUS_NATS_URL": url,
            "CHATBUS_API_PORT": str(port),
            "CHATBUS_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        for command, log in (
            (["projector", "--db", str(tmp / "rm.duckdb")], "projector.log"),
            (["api"], "api.log"),
        ):
            children.append(processes.start(processes.chatbus(*command), env=env, log=tmp / log))
        base = f"http://127.0.0.1:{port}"
        await processes.wait_http(f"{base}/readyz", watch=children)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys['victim']}"}) as http:
            for i in range(20):
                async with http.post(f"{base}/v1/chats", json={"title": f"mine {i}"}):
                    pass

        attacks: list[tuple[str, str | None]] = [
            ("idle", None),
            ("1: 50 far-future reads", "far-future"),
            ("2: 100 bogus logins", "logins"),
            ("3: 200 idle feeds", f"feeds:{big}"),
        ]
        phases = {name: Phase(name) for name, _ in attacks}
        for round_ in range(args.rounds):
            for name, attack in attacks:
                console.print(f"round {round_ + 1}: {name}")
                await run_phase(base, keys["victim"], keys["attacker"], args.seconds, phases[name], attack)
    finally:
        processes.stop(children)
        server.stop()

    idle = _percentile(phases["idle"].latencies, 0.99)
    table = Table(
        title=f"another user's GET /v1/chats under attack ({args.rounds} rounds, {os.cpu_count()} cores)"
    )
    for column in ("phase", "reads", "p50 ms", "p99 ms", "p99 / idle p99", "victim 5xx", "attacker got"):
        table.add_column(column, justify="right" if column not in ("phase", "attacker got") else "left")
    failed = False
    for phase in phases.values():
        p99 = _percentile(phase.latencies, 0.99)
        errors = sum(n for code, n in phase.victim_codes.items() if code >= 500)
        ratio = p99 / idle
        failed |= errors > 0 or (phase.name != "idle" and ratio > 3)
        got = ", ".join(f"{what}: {n}" for what, n in phase.attacker_codes.most_common(4))
        table.add_row(
            phase.name,
            str(len(phase.latencies)),
            f"{_percentile(phase.latencies, 0.5):.1f}",
            f"{p99:.1f}",
            f"{ratio:.2f}",
            str(errors),
            got,
        )
    console.print(table)
    console.print(
        "goal: p99 under attack <= 3x idle and no 5xx for the victim: " + ("MISSED" if failed else "met")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every phase")
    parser.add_argument("--seconds", type=float, default=4.0, help="victim reading time per phase")
    parser.add_argument(
        "--big-chat", type=int, default=300, help="messages in the attacker's chat the feeds watch"
    )
    parser.add_argument(
        "--pace", type=float, default=PACE, help="seconds between one attacking client's requests"
    )
    parser.add_argument("--attack", choices=["far-future", "logins", "feeds"], help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--chat", default="", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.attack:  # the attacker's own process (see run_phase)
        asyncio.run(attack_main(parsed))
        sys.exit(0)
    PACE = parsed.pace
    sys.exit(asyncio.run(main(parsed)))
