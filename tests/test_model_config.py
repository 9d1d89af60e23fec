"""The model config: TOML per alias, checked on load with errors that name the key; env and flags override."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from schemas.sampling import SamplingParams
from services.llm_worker.model_config import ModelConfigError, default_config, load_config
from services.llm_worker.settings import WorkerSettings

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "deploy" / "models.example.toml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_the_documented_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert "smollm2-135m" in config.models
    entry = config.models["smollm2-135m"]
    assert entry.source == "smollm2-135m-instruct" and entry.engine.capacity == 16


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            '[models.a]\nsource = "x"\n[models.a.engine]\ncapacity = "many"\n',
            "models.a.engine.capacity: Expected",
        ),
        ('[models.a]\nsource = "x"\ntempreature = 0.3\n', "models.a.tempreature: unknown key"),
        ('[models.a]\nsource = "x"\n[models.a.sampling]\ntemperature = 9\n', "models.a.sampling.temperature"),
        ('[models.a]\nsource = "x"\n[models.a.engine]\ndevice = "gpu"\n', "models.a.engine.device"),
        ('[models.a]\nsource = "x"\n[models.a.engine]\ndtype = "int3"\n', "models.a.engine.dtype"),
        ('[models.a]\nsource = "x"\n[models.a.engine]\nengine = "vllm"\n', "models.a.engine.engine"),
        (
            '[models.a]\nsource = "x"\n[models.a.engine]\nquantization = "int4"\n',
            "models.a.engine.quantization",
        ),
        (
            '[models.a]\nsource = "x"\n[models.a.engine]\nquantisation = "int8"\n',
            "models.a.engine.quantisation: unknown",
        ),
        ("[models.a]\nimages = true\n", "models.a: Object missing required field `source`"),
        ('[models."two words"]\nsource = "x"\n', "models.two words: an alias is"),
        ('model = "x"\n', "model: unknown key"),
        ("[models.a\n", "is not valid TOML"),
    ],
)
def test_a_bad_config_names_the_key(tmp_path: Path, text: str, says: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ModelConfigError) as caught:
        load_config(path)
    assert says in str(caught.value) and str(path) in str(caught.value)


def test_settings_come_from_the_config_then_env_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        tmp_path,
        '[models.m]\nsource = "/models/m"\n[models.m.sampling]\ntemperature = 0.0\nmax_tokens = 99\n'
        '[models.m.engine]\ncapacity = 3\nthreads = 2\ndtype = "bfloat16"\n',
    )
    entry = load_config(path).models["m"]
    settings = WorkerSettings.from_env(entry, alias="m")
    assert (settings.model, settings.capacity, settings.threads, settings.dtype) == (
        "/models/m",
        3,
        2,
        "bfloat16",
    )
    assert settings.defaults == SamplingParams(temperature=0.0, max_new_tokens=99)
    monkeypatch.setenv("CHATBUS_WORKER_CAPACITY", "5")
    monkeypatch.setenv("CHATBUS_WORKER_MODEL", "/models/other")
    assert WorkerSettings.from_env(entry, alias="m").capacity == 5
    assert WorkerSettings.from_env(entry, alias="m").model == "/models/other"
    assert WorkerSettings.from_env(entry, alias="m", capacity=7, model="/x").capacity == 7


def test_the_default_config_serves_the_real_assistant_first() -> None:
    config = default_config()
    first, entry = next(iter(config.models.items()))
    assert first == "smollm2-135m" and entry.source == "smollm2-135m-instruct"
    assert config.models["demo-vision"].source == "demo-vision"


def _worker(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "services.cli", "worker", *args, "--nats", "nats://127.0.0.1:1"]
    return subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "PYTHONPATH": str(ROOT)},  # this tree's code
    )


def test_the_worker_refuses_a_bad_config_or_alias_before_loading_anything(tmp_path: Path) -> None:
    bad = _write(tmp_path, '[models.a]\nsource = "x"\nworkers = -1\n')
    done = _worker("--config", str(bad), "--alias", "a", cwd=tmp_path)
    assert done.returncode == 2 and "models.a.workers" in done.stderr, done.stderr
    good = _write(tmp_path, '[models.a]\nsource = "/nowhere/at/all"\n')
    done = _worker("--config", str(good), "--alias", "b", cwd=tmp_path)
    assert done.returncode == 2 and "no [models.b]" in done.stderr and "a" in done.stderr, done.stderr
    done = _worker("--config", str(good), "--alias", "a", cwd=tmp_path)
    assert done.returncode == 2 and "not found" in done.stderr, done.stderr
