"""Settings: one frozen Struct per service, read from the environment; a bad value names its variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from schemas.queries import MAX_PAGE_SIZE
from schemas.settings_env import SettingsError, env_vars, load
from services.api import settings as api_settings
from services.api.settings import ApiSettings
from services.cli import settings as cli_settings
from services.cli.settings import CliSettings
from services.image_store import settings as image_settings
from services.image_store.settings import ImageStoreSettings
from services.llm_worker import settings as worker_settings
from services.llm_worker.settings import WorkerSettings

ROOT = Path(__file__).parent.parent
MODULES = [
    (api_settings, ApiSettings),
    (worker_settings, WorkerSettings),
    (image_settings, ImageStoreSettings),
    (cli_settings, CliSettings),
]


@pytest.mark.parametrize(
    ("cls", "variable", "value", "reason"),
    [
        (ApiSettings, "CHATBUS_API_PORT", "http", "expected an integer"),
        (ApiSettings, "CHATBUS_API_PORT", "70000", "expected an integer <= 65535"),
        (ApiSettings, "CHATBUS_MAX_PAGE_SIZE", "500", f"expected an integer <= {MAX_PAGE_SIZE}"),
        (ApiSettings, "CHATBUS_READ_TIMEOUT", "0", "expected a number > 0"),
        (ApiSettings, "CHATBUS_SELF_REGISTRATION", "maybe", "expected true or false"),
        (WorkerSettings, "CHATBUS_WORKER_CAPACITY", "abc", "expected an integer"),
        (WorkerSettings, "CHATBUS_WORKER_CAPACITY", "0", "expected an integer >= 1"),
        (WorkerSettings, "CHATBUS_WORKER_ACK_WAIT", "soon", "expected a number"),
        (WorkerSettings, "CHATBUS_BATCH_RESERVE", "-1", "expected an integer >= 0"),
        (WorkerSettings, "CHATBUS_WORKER_DEVICE", "gpu", "expected text matching"),
        (WorkerSettings, "CHATBUS_WORKER_DTYPE", "int3", "invalid enum value 'int3'"),
        (ImageStoreSettings, "CHATBUS_IMAGE_MAX_BYTES", "10MB", "expected an integer"),
        (ImageStoreSettings, "CHATBUS_IMAGE_CONCURRENCY", "0", "expected an integer >= 1"),
        (ImageStoreSettings, "CHATBUS_IMAGE_FETCH_TIMEOUT", "-1", "expected a number > 0"),
        (CliSettings, "CHATBUS_NATS_PORT", "four", "expected an integer"),
        (CliSettings, "CHATBUS_LOG_LEVEL", "loud", "expected text matching"),
    ],
)
def test_a_bad_value_names_its_variable_and_what_is_wrong(
    cls: type[msgspec.Struct], variable: str, value: str, reason: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load(cls, {variable: value})
    assert str(caught.value).startswith(f"{variable}={value!r}: {reason}"), str(caught.value)


def test_a_trusted_proxy_must_be_an_address_or_a_network() -> None:
    with pytest.raises(SettingsError, match=r"^CHATBUS_TRUSTED_PROXIES: 'lan' is not an address or network$"):
        ApiSettings.from_env({"CHATBUS_TRUSTED_PROXIES": "10.0.0.1, lan"})


def test_worker_variables_are_checked_as_they_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBUS_WORKER_KV_BLOCKS", "lots")
    with pytest.raises(SettingsError, match=r"^CHATBUS_WORKER_KV_BLOCKS='lots': expected an integer$"):
        WorkerSettings.from_env()


def test_a_bad_value_from_the_command_line_names_its_setting() -> None:
    with pytest.raises(SettingsError, match=r"^capacity=0: expected an integer >= 1$"):
        WorkerSettings.from_env(None, capacity=0)


def test_defaults_then_variables_and_an_empty_variable_is_unset() -> None:
    assert ApiSettings.from_env({}) == ApiSettings()
    assert ApiSettings.from_env({"CHATBUS_API_PORT": "", "CHATBUS_API_HOST": " "}) == ApiSettings()
    assert ApiSettings.from_env({"CHATBUS_MAX_PAGE_SIZE": str(MAX_PAGE_SIZE)}).max_page_size == MAX_PAGE_SIZE
    assert ImageStoreSettings.from_env({}) == ImageStoreSettings()
    assert CliSettings.from_env({}) == CliSettings()
    assert CliSettings.from_env({"CHATBUS_LOG_LEVEL": "debug", "CHATBUS_NATS_PORT": "4333"}) == CliSettings(
        log_level="debug", nats_port=4333
    )
    store = ImageStoreSettings.from_env(
        {
            "CHATBUS_IMAGE_MAX_BYTES": "1000",
            "CHATBUS_IMAGE_MAX_PIXELS": "500",
            "CHATBUS_IMAGE_FETCH_TIMEOUT": "2.5",
            "CHATBUS_IMAGE_PRIVATE_HOSTS": "NAS.home.test, pics.home.test,",
            "CHATBUS_IMAGE_CONCURRENCY": "3",
        }
    )
    assert (store.limits.max_bytes, store.limits.max_pixels, store.concurrency) == (1000, 500, 3)
    assert (store.fetch.max_bytes, store.fetch.total_timeout) == (1000, 2.5)
    assert store.fetch.private_hosts == {"nas.home.test", "pics.home.test"}


def test_a_variable_two_services_read_is_defined_once() -> None:
    """CHATBUS_IMAGE_MAX_BYTES: the API refuses what the image store would; one definition, one meaning."""
    environ = {"CHATBUS_IMAGE_MAX_BYTES": "1000"}
    api, store = ApiSettings.from_env(environ), ImageStoreSettings.from_env(environ)
    assert api.max_image_bytes == store.max_bytes == 1000
    assert ApiSettings().max_image_bytes == ImageStoreSettings().max_bytes
    described: dict[str, set[str]] = {}
    for module, _ in MODULES:
        for name, description in module.ENV_VARS:
            described.setdefault(name, set()).add(description)
    assert {name for name, texts in described.items() if len(texts) > 1} == set()


@pytest.mark.parametrize(("module", "cls"), MODULES, ids=lambda x: getattr(x, "__name__", ""))
def test_each_service_has_a_frozen_settings_struct_whose_fields_make_its_table(
    module: Any, cls: type
) -> None:
    assert cls.__struct_config__.frozen
    assert module.ENV_VARS == env_vars(cls) and module.ENV_VARS
    assert all(name.startswith("CHATBUS_") and description for name, description in module.ENV_VARS)
    settings = cls(model="m") if cls is WorkerSettings else cls()
    field = msgspec.structs.fields(cls)[0].name
    with pytest.raises(AttributeError):
        setattr(settings, field, getattr(settings, field))


def _chatbus(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """`chatbus ARGS` from this tree, with these variables set."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **environ}
    cmd = [sys.executable, "-m", "services.cli", *args, "--nats", "nats://127.0.0.1:1"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize(
    ("command", "variable", "value", "says"),
    [
        ("worker", "CHATBUS_WORKER_CAPACITY", "abc", "CHATBUS_WORKER_CAPACITY='abc': expected an integer"),
        ("api", "CHATBUS_MAX_PAGE_SIZE", "1000", "CHATBUS_MAX_PAGE_SIZE='1000': expected an integer <= 200"),
        ("image-store", "CHATBUS_LOG_LEVEL", "loud", "CHATBUS_LOG_LEVEL='loud': expected text"),
    ],
)
def test_a_service_with_a_bad_variable_says_so_and_exits_2_without_a_traceback(
    command: str, variable: str, value: str, says: str
) -> None:
    done = _chatbus(command, **{variable: value})
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr
