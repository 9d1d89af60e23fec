"""Image benchmark: upload-to-stored latency and throughput of a 1-megapixel JPEG, and the cost of dedup.

    python bench/bench_images.py [--uploads 20] [--concurrency 4]

An embedded nats-server, the API and the image store run as separate processes (as `chatbus up`
runs them). Baselines, measured in the same run on the same pictures: the work nobody can skip
(Pillow decode + re-encode + sha256 in this process) plus a raw object-store put of the result.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from PIL import Image
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bus  # noqa: E402
from services.cli import processes  # noqa: E402

console = Console()
SIDE = 1000  # 1000 x 1000 = 1 megapixel


def photo(seed: int) -> bytes:
    """A photo-like 1-megapixel JPEG (smooth gradients plus sensor noise), different per seed."""
    rng = random.Random(seed)
    base = Image.linear_gradient("L").resize((SIDE, SIDE))
    channels = [base.rotate(rng.choice((0, 90, 180, 270))) for _ in range(3)]
    image = Image.merge("RGB", channels)
    noise = Image.effect_noise((SIDE, SIDE), 24 + seed % 8).convert("RGB")
    image = Image.blend(image, noise, 0.25)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _normalise(data: bytes) -> bytes:
    """The baseline's unavoidable work: decode, re-encode from pixels, hash."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = image.convert("RGB")
    out = io.BytesIO()
    pixels.save(out, "JPEG", quality=90)
    encoded = out.getvalue()
    hashlib.sha256(encoded).hexdigest()
    return encoded


async def raw_baseline(nbus: bus.Bus, pictures: list[bytes]) -> list[float]:
    """Seconds per picture: Pillow normalise + sha256 + object-store put, nothing else."""
    times = []
    for i, data in enumerate(pictures):
        started = time.perf_counter()
        encoded = await asyncio.to_thread(_normalise, data)
        await bus.put_object(nbus.js, "baseline", f"p{i}", encoded)
        times.append(time.perf_counter() - started)
    return times


async def upload(http: aiohttp.ClientSession, base: str, data: bytes) -> tuple[float, dict[str, object]]:
    """Seconds from sending the upload to its 201 (stored: bytes in the object store, event appended)."""
    started = time.perf_counter()
    async with http.post(f"{base}/v1/images", data=data, headers={"Content-Type": "image/jpeg"}) as resp:
        body = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"upload failed: {resp.status} {body}")
    return time.perf_counter() - started, body


async def throughput(
    http: aiohttp.ClientSession, base: str, pictures: list[bytes], concurrency: int
) -> float:
    """Uploads per second with `concurrency` clients uploading different pictures."""
    queue = list(pictures)
    started = time.perf_counter()

    async def client() -> None:
        while queue:
            await upload(http, base, queue.pop())

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return len(pictures) / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    from identity.accounts import add_user, issue_key

    tmp = Path(tempfile.mkdtemp(prefix="chatbus-bench-images-"))
    pictures = [photo(i) for i in range(args.uploads * 2 + args.concurrency * 4)]
    first, repeat_set, burst = (
        pictures[: args.uploads],
        pictures[args.uploads : args.uploads * 2],
        pictures[args.uploads * 2 :],
    )
    server = bus.EmbeddedServer(
        bus.ServerConfig(store_dir=tmp / "js", credentials=bus.Credentials.generate())
    )
    server.start()
    url = server.url_for()
    children: list[processes.Child] = []
    try:
        nbus = await bus.connect(url, name="bench")
        await bus.declare_all(nbus.js)
        await nbus.js.create_object_store("baseline")
        await add_user(nbus.js, "bench")
        _key_id, key = await issue_key(nbus.js, "bench")
        port = bus.free_port()
        env = {
            **os.environ,
            "CHATBUS_NATS_URL": url,
            "CHATBUS_API_PORT": str(port),
            "CHATBUS_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        children.append(processes.start(processes.chatbus("api"), env=env, log=tmp / "api.log"))
        children.append(
            processes.start(processes.chatbus("image-store"), env=env, log=tmp / "image-store.log")
        )
        base = f"http://127.0.0.1:{port}"
        await processes.wait_http(f"{base}/healthz", watch=children)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            for _ in range(50):  # until the image store answers
                try:
                    await upload(http, base, photo(10_000))
                    break
                except RuntimeError:
                    await asyncio.sleep(0.2)
            # Interleave baseline and chatbus picture by picture so drift hits both alike.
            raw_times, new_times, again_times = [], [], []
            for i, data in enumerate(first):
                raw_times += await raw_baseline(nbus, [repeat_set[i]])
                seconds, body = await upload(http, base, data)
                new_times.append(seconds)
                assert body["deduplicated"] is False
                seconds, body = await upload(http, base, data)
                again_times.append(seconds)
                assert body["deduplicated"] is True
            raw_rate = len(burst) / sum(await raw_baseline(nbus, burst))
            rate = await throughput(http, base, burst, args.concurrency)
        await nbus.close()
    finally:
        processes.stop(children)
        server.stop()

    size_kib = statistics.median(len(p) for p in first) / 1024
    raw, new, again = (statistics.median(t) * 1000 for t in (raw_times, new_times, again_times))
    table = Table(title=f"images: 1-megapixel JPEG (~{size_kib:.0f} KiB), {os.cpu_count()} cores")
    for column in ("measure", "raw baseline", "chatbus", "ratio"):
        table.add_column(column, justify="right")
    table.add_row("upload -> stored, median ms (new image)", f"{raw:.1f}", f"{new:.1f}", f"{new / raw:.2f}")
    table.add_row(
        "upload -> stored, median ms (repeat: dedup)", f"{raw:.1f}", f"{again:.1f}", f"{again / raw:.2f}"
    )
    table.add_row(
        f"uploads/s, {args.concurrency} clients", f"{raw_rate:.1f}", f"{rate:.1f}", f"{rate / raw_rate:.2f}"
    )
    table.add_row("dedup saving vs new upload", "", f"{new - again:.1f} ms", f"{again / new:.2f}")
    console.print(table)
    console.print(
        "baseline = Pillow decode + re-encode + sha256 in-process, then a raw object-store put; "
        "chatbus = HTTP upload -> API -> NATS -> image store (normalise, store once, "
        "append image.stored) -> 201."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=20, help="pictures timed one at a time")
    parser.add_argument("--concurrency", type=int, default=4, help="clients in the throughput round")
    asyncio.run(main(parser.parse_args()))
