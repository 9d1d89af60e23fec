"""Child processes, for `chatbus up`, the tests and the benchmarks alike: start one, wait until it
serves, stop them all (SIGTERM, then SIGKILL what lingers).

It imports no service (tests and benchmarks import it without pulling one in).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

Child = subprocess.Popen[bytes]


class ChildExited(RuntimeError):
    """A child that should be running exited."""


def chatbus(*args: str) -> list[str]:
    """The command line of `chatbus ARGS`, run by this Python (so by the code on its path)."""
    return [sys.executable, "-m", "services.cli", *args]


def start(
    args: Sequence[str],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    own_session: bool = True,
    **popen: Any,
) -> Child:
    """Start `args` as a child process; its stdout and stderr are appended to `log` unless `popen` says.

    In its own session (the default) a terminal's Ctrl-C or a `kill -9` of a test hits only the one
    process it is meant for, and `stop` ends whatever the child started too (its process group).
    Without a log, the child writes where this process does.
    """
    out = open(log, "ab") if log is not None else None  # noqa: SIM115 - closed below; the child has its own
    try:
        popen.setdefault("stdout", out)
        popen.setdefault("stderr", out)
        return subprocess.Popen(
            list(args),
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=own_session,
            **popen,
        )
    finally:
        if out is not None:
            out.close()


def stop(children: Iterable[Child], timeout: float = 20.0) -> None:
    """SIGTERM every child still running, wait up to `timeout` seconds for all, then SIGKILL what lingers.

    A child that leads its own process group (started in its own session) is signalled with its group.
    """
    children = list(children)
    for child in children:
        _signal(child, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(child, signal.SIGKILL)
            child.wait()


def _signal(child: Child, sig: signal.Signals) -> None:
    if child.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(child.pid) == child.pid:
            os.killpg(child.pid, sig)
        else:
            child.send_signal(sig)


def wait_any_exit(children: Sequence[Child], poll: float = 0.5) -> Child:
    """Block until one of the children exits; that child."""
    while True:
        for child in children:
            if child.poll() is not None:
                return child
        time.sleep(poll)


async def wait_http(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    ready: Callable[[Any], bool] | None = None,
    watch: Iterable[Child] = (),
) -> Any:
    """GET `url` until it answers 200 with a body `ready` accepts; that body as JSON (None if it is not).

    Raises ChildExited as soon as a process of `watch` exits (it will never serve), TimeoutError
    after `timeout` seconds.
    """
    watched = list(watch)
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(headers=headers) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as resp:
                    if resp.status == 200:
                        body = _json_or_none(await resp.read())
                        if ready is None or ready(body):
                            return body
            for child in watched:
                if child.poll() is not None:
                    raise ChildExited(f"{child.args!r} exited with {child.returncode} before {url} was ready")
            await asyncio.sleep(0.25)
    raise TimeoutError(f"{url} was not ready within {timeout:.0f} s")


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None
