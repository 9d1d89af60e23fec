"""deploy/nats/*.conf are safe as written, and work: each is started for real (not only parsed).

No config starts with a default password (they come from the environment); every port that faces
other machines is TLS, cluster routes need a certificate of the cluster's CA, and a GPU machine's
leaf node reaches the hub as the restricted `worker` user.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from typer.testing import CliRunner

import bus
from services.cli.app import app
from tests.deploy_nats import DEPLOY_NATS, PASSWORDS, check, localise, make_tls, start, stop

CONFIGS = sorted(p.name for p in DEPLOY_NATS.glob("*.conf") if p.name != "accounts.conf")
SERVICES_PW = PASSWORDS["CHATBUS_NATS_SERVICES_PASSWORD"]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tls(tmp_path_factory.mktemp("tls"))


def _ports(name: str) -> dict[str, str]:
    """Every fixed port of a config made a free one (cluster routes point at 127.0.0.1)."""
    ports = {"0.0.0.0:4222": "", "127.0.0.1:4222": "", "0.0.0.0:6222": "", "0.0.0.0:7422": ""}
    text = (DEPLOY_NATS / name).read_text()
    return {old: f"127.0.0.1:{bus.free_port()}" for old in ports if old in text}


def test_every_config_is_checked() -> None:
    assert set(CONFIGS) == {
        "single.conf", "cluster-1.conf", "cluster-2.conf", "cluster-3.conf", "compose.conf",
        "remote-worker-leaf.conf",
    }  # fmt: skip
    for name in CONFIGS:
        assert "CHANGE-ME" not in (DEPLOY_NATS / name).read_text()
    assert "CHANGE-ME" not in (DEPLOY_NATS / "accounts.conf").read_text()


@pytest.mark.parametrize("name", CONFIGS)
def test_a_config_refuses_to_start_without_its_secrets_and_is_valid_with_them(
    name: str, tls: Path, tmp_path: Path
) -> None:
    config = localise(name, tmp_path, tls, _ports(name))
    needed = {"CHATBUS_LEAF_HUB_URL": "tls://worker:pw@127.0.0.1:7422"} if "leaf" in name else PASSWORDS
    refused = check(config, {})
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert any(variable in refused.stderr + refused.stdout for variable in needed), refused.stderr
    valid = check(config, needed)
    assert valid.returncode == 0 and "is valid" in valid.stderr + valid.stdout, valid.stderr


@pytest.mark.parametrize("name", ["single.conf", "compose.conf"])
async def test_a_one_node_config_serves_its_users(name: str, tls: Path, tmp_path: Path) -> None:
    ports = _ports(name)
    config = localise(name, tmp_path, tls, ports)
    (address,) = ports.values()
    server = start(config, PASSWORDS, int(address.rsplit(":", 1)[1]))
    try:
        services = await bus.connect(f"nats://services:{SERVICES_PW}@{address}", name="t", first_connect=10)
        try:
            assert await bus.declare_all(services.js) == []
        finally:
            await services.close()
        with pytest.raises(bus.BusUnavailable, match="refused"):
            await bus.connect(f"nats://services:CHANGE-ME-services@{address}", name="t", first_connect=10)
    finally:
        stop(server)


def _client_tls(tls: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls / "ca.pem"))


async def test_the_cluster_configs_form_a_tls_cluster_that_a_leaf_worker_reaches(
    tls: Path, tmp_path: Path
) -> None:
    names = ["cluster-1.conf", "cluster-2.conf", "cluster-3.conf"]
    node_ports = [_ports(name) for name in names]
    routes = {
        f"nats-route://nats-{i + 1}:6222": f"nats-route://{p['0.0.0.0:6222']}"
        for i, p in enumerate(node_ports)
    }
    servers = []
    try:
        for i, name in enumerate(names):
            config = localise(name, tmp_path / f"n{i + 1}", tls, {**node_ports[i], **routes})
            servers.append(start(config, PASSWORDS, int(node_ports[i]["0.0.0.0:4222"].rsplit(":", 1)[1])))
        client = node_ports[0]["0.0.0.0:4222"]
        url = f"nats://services:{SERVICES_PW}@{client}"

        # Clients: TLS only. Without it the server refuses; with the CA, JetStream places three replicas.
        with pytest.raises(bus.BusUnavailable):
            await bus.connect(url, name="plain", first_connect=3)
        services = await bus.connect(url, name="t", first_connect=10, tls=_client_tls(tls))
        try:
            for _ in range(120):  # until the three nodes have met over their mutual-TLS routes
                try:
                    await services.js.add_stream(name="R3", subjects=["r3"], num_replicas=3)
                    break
                except Exception:  # noqa: BLE001 - no meta leader or too few peers yet
                    await asyncio.sleep(0.5)
            assert (await services.js.stream_info("R3")).config.num_replicas == 3
            # chatbus's own commands reach it over TLS with the CA they are given.
            init = await asyncio.to_thread(
                CliRunner().invoke,
                app,
                ["admin", "init", "--replicas", "3", "--nats", url],
                env={"CHATBUS_NATS_CA": str(tls / "ca.pem"), "COLUMNS": "200"},
            )
            assert init.exit_code == 0, init.output
            assert (await services.js.stream_info("CHAT")).config.num_replicas == 3

            # Routes: a node without a certificate of the cluster's CA cannot join.
            # Routes: a node whose certificate another CA signed cannot join (it trusts ours, so only our
            # nodes' check of its certificate keeps it out). Joined, it would serve the stream above.
            rogue_tls = make_tls(tmp_path / "rogue-tls")
            rogue_ca = (rogue_tls / "ca.pem").read_bytes()
            shutil.copy(tls / "ca.pem", rogue_tls / "ca.pem")
            rogue_ports = _ports("cluster-3.conf")
            rogue_changes = {**rogue_ports, **routes, "server_name: chatbus-3": "server_name: rogue"}
            rogue = localise("cluster-3.conf", tmp_path / "rogue", rogue_tls, rogue_changes)
            rogue_client = rogue_ports["0.0.0.0:4222"]
            servers.append(start(rogue, PASSWORDS, int(rogue_client.rsplit(":", 1)[1])))
            rogue_context = ssl.create_default_context(cadata=rogue_ca.decode())
            intruder = await bus.connect(
                f"nats://services:{SERVICES_PW}@{rogue_client}",
                name="rogue",
                first_connect=10,
                tls=rogue_context,
            )
            try:
                for _ in range(10):
                    with pytest.raises(Exception):  # noqa: B017 - JetStream unavailable or no such stream
                        await intruder.js.stream_info("R3", timeout=0.5)
                    await asyncio.sleep(0.5)
            finally:
                await intruder.close()

            # A GPU machine's leaf node logs in as `worker`: what that user may publish crosses, the rest not.
            leaf_port = bus.free_port()
            leaf_config = localise(
                "remote-worker-leaf.conf",
                tmp_path / "leaf",
                tls,
                {"127.0.0.1:4222": f"127.0.0.1:{leaf_port}"},
            )
            hub = node_ports[0]["0.0.0.0:7422"]
            leaf_env = {
                "CHATBUS_LEAF_HUB_URL": f"tls://worker:{PASSWORDS['CHATBUS_NATS_WORKER_PASSWORD']}@{hub}"
            }
            servers.append(start(leaf_config, leaf_env, leaf_port))
            seen: list[str] = []

            async def note(msg: Msg) -> None:
                seen.append(msg.subject)

            sub = await services.nc.subscribe(">", cb=note)
            await services.nc.flush()
            gpu = await bus.connect(f"nats://127.0.0.1:{leaf_port}", name="gpu", first_connect=10)
            try:
                for _ in range(100):  # until the leaf's connection to the hub is up
                    await gpu.nc.publish("tokens.c1.r1", b"{}")
                    await gpu.nc.publish("chat.c1.message.posted", b"{}")
                    await gpu.nc.flush()
                    await asyncio.sleep(0.1)
                    if "tokens.c1.r1" in seen:
                        break
                assert "tokens.c1.r1" in seen, "the worker's publish never reached the hub"
                assert "chat.c1.message.posted" not in seen, "a leaf posted a message as the worker user"
            finally:
                await sub.unsubscribe()
                await gpu.close()
        finally:
            await services.close()
    finally:
        stop(*servers)
