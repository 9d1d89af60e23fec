"""deploy/ stays valid: every nats-server config passes `nats-server -t`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bus import nats_server_binary

DEPLOY = Path(__file__).parent.parent / "deploy"
CONFIGS = sorted(p for p in (DEPLOY / "nats").glob("*.conf") if p.name != "accounts.conf")


def test_there_are_configs_to_check() -> None:
    assert {p.name for p in CONFIGS} >= {"single.conf", "cluster-1.conf", "remote-worker-leaf.conf"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_nats_config_is_valid(config: Path) -> None:
    result = subprocess.run(
        [nats_server_binary(), "-t", "-c", config.name],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "is valid" in result.stderr + result.stdout
