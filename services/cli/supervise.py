"""`chatbus up`'s supervision: restart a child that dies, with backoff, and stop everything in bounded time.

A service crashing (or killed: `kill -9` of a worker, the OOM killer) is restarted after 1 s, then
2, 4 ... up to 30 s if it keeps dying within a minute of starting; each restart is printed. The
embedded nats-server is watched the same way. Stopping (Ctrl-C, SIGTERM) sends SIGTERM to all
and SIGKILL to what still runs after STOP_GRACE seconds, so `chatbus up` exits within 15 s.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bus import EmbeddedServer, ServerStartError
from services.cli import processes
from services.cli.output import console

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0  # a child that ran this long starts again from FIRST_BACKOFF when it dies
STOP_GRACE = 10.0  # seconds children get to stop before SIGKILL (the server gets the rest of 15 s)
POLL = 0.25


@dataclass
class Supervised:
    """One child of `chatbus up`: how to start it, the running process, and its restart schedule."""

    name: str
    args: list[str]
    process: processes.Child | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = FIRST_BACKOFF
    due: float | None = None  # when a dead child is started again

    def start(self, env: Mapping[str, str]) -> None:
        # In this terminal's process group: a terminal's Ctrl-C reaches the children as it does us.
        self.process = processes.start(self.args, env=env, own_session=False)
        self.started, self.due = time.monotonic(), None


@dataclass
class Supervisor:
    """Starts the children, restarts those that die, stops them all."""

    env: Mapping[str, str]
    server: EmbeddedServer
    children: list[Supervised] = field(default_factory=list)
    say: Callable[[str], None] = field(default=lambda line: console.print(line, soft_wrap=True))
    server_backoff: float = FIRST_BACKOFF

    def start(self, commands: Sequence[tuple[str, list[str]]]) -> None:
        """Start one child per (name, argv)."""
        for name, args in commands:
            child = Supervised(name, args)
            child.start(self.env)
            self.children.append(child)

    def run(self) -> None:
        """Watch until interrupted (KeyboardInterrupt, which SIGINT and SIGTERM raise)."""
        while True:
            self.check()
            time.sleep(POLL)

    def check(self) -> None:
        """One round: note exits, restart what is due."""
        now = time.monotonic()
        self._check_server()
        for child in self.children:
            if child.process is not None and child.due is None and child.process.poll() is not None:
                if now - child.started >= HEALTHY_AFTER:
                    child.backoff = FIRST_BACKOFF
                child.due = now + child.backoff
                self.say(
                    f"[yellow]{child.name} exited with {child.process.returncode}; "
                    f"restarting in {child.backoff:g} s[/]"
                )
                child.backoff = min(MAX_BACKOFF, child.backoff * 2)
            elif child.due is not None and now >= child.due:
                child.restarts += 1
                child.start(self.env)
                self.say(f"{child.name} restarted (restart {child.restarts})")

    def _check_server(self) -> None:
        process = self.server.process
        if process is None or process.poll() is None:
            return
        self.say(f"[yellow]nats-server exited with {process.returncode}; restarting[/]")
        try:
            self.server.start()
        except ServerStartError as exc:
            self.say(f"[red]nats-server did not start again: {exc}; retrying in {self.server_backoff:g} s[/]")
            time.sleep(self.server_backoff)
            self.server_backoff = min(MAX_BACKOFF, self.server_backoff * 2)
            return
        self.server_backoff = FIRST_BACKOFF
        self.say("nats-server restarted")

    def stop(self) -> None:
        """SIGTERM the children, SIGKILL what lingers after STOP_GRACE, then stop the server. A second
        Ctrl-C meanwhile changes nothing: this is bounded either way."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        processes.stop([c.process for c in self.children if c.process is not None], timeout=STOP_GRACE)
        self.server.stop(timeout=4.0)
