"""Running deploy/nats/*.conf for real in a test: passwords in the environment, a throwaway CA and
certificate, and the configs' fixed ports, hosts and paths swapped for the test's own."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from bus import nats_server_binary

DEPLOY_NATS = Path(__file__).parent.parent / "deploy" / "nats"
PASSWORDS = {
    "CHATBUS_NATS_SERVICES_PASSWORD": "services-test-pw",
    "CHATBUS_NATS_WORKER_PASSWORD": "worker-test-pw",
}


def make_tls(root: Path) -> Path:
    """A CA and one certificate it signs (for localhost and 127.0.0.1, server and client use), in the
    file names the configs expect (ca.pem, server.pem, server-key.pem); the directory."""
    root.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    openssl(
        "req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca"
    )
    openssl("req", *ec, "-keyout", "server-key.pem", "-out", "server.csr", "-subj", "/CN=localhost")
    (root / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
    )  # fmt: skip
    return root


def localise(name: str, into: Path, tls: Path, replace: dict[str, str]) -> Path:
    """deploy/nats/NAME (and accounts.conf beside it) copied into `into`, with the TLS directory and the
    JetStream directory made the test's and each `replace` key (a port, a host) swapped; the path."""
    into.mkdir(parents=True, exist_ok=True)
    (into / "accounts.conf").write_text((DEPLOY_NATS / "accounts.conf").read_text())
    text = (DEPLOY_NATS / name).read_text()
    text = text.replace("/etc/chatbus/tls/", f"{tls}/").replace(
        "/var/lib/chatbus/jetstream", str(into / "js")
    )
    for old, new in replace.items():
        assert old in text, f"{name} has no {old!r}"
        text = text.replace(old, new)
    path = into / name
    path.write_text(text)
    return path


def check(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`nats-server -t -c CONFIG` (parse and load certificates, do not serve) with only `env` set."""
    return subprocess.run(
        [nats_server_binary(), "-t", "-c", config.name],
        cwd=config.parent,
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def start(config: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """Run the config until the client port accepts connections; the process (terminate it)."""
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", config.name],
        cwd=config.parent,
        env={"PATH": os.environ.get("PATH", ""), **env},
        stdout=subprocess.DEVNULL,
        stderr=open(config.with_suffix(".log"), "wb"),  # noqa: SIM115 - the child owns it
    )
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{config.name} exited: {config.with_suffix('.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=15)
