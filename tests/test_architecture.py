"""The layering rules of docs/architecture.md that code can break: imports and the event catalogue."""

from __future__ import annotations

import ast
import inspect
import tomllib
from pathlib import Path

import msgspec
import pytest

import schemas

ROOT = Path(__file__).parent.parent
# The layers, bottom up: schemas <- bus <- the libraries <- the services <- the CLI (services/cli).
PROJECT_PACKAGES = {"schemas", "bus", "logtools", "identity", "netguard", "services"}
# Library packages, each with the other libraries it may import (identity's erasure reads a chat's
# state through logtools; logtools never imports identity).
LIBRARIES: dict[str, set[str]] = {"logtools": set(), "identity": {"logtools"}, "netguard": set()}
# netguard guards outbound HTTP (the image fetch, the webhooks): aiohttp is its business, and it stands
# alone, importing no package of ours (not even schemas): what it vets is a URL and addresses.
HTTP_CLIENT_LIBRARIES = {"netguard"}
SERVICES = ["api", "llm_worker", "projector", "image_store", "conductor", "webhooks", "batches"]
NOT_PACKAGES = {"tests", "bench"}  # test and benchmark code: imports anything, installed nowhere


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_schemas_imports_no_project_package() -> None:
    for path in _files("schemas"):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in PROJECT_PACKAGES - {"schemas"}, f"{path} imports {name}"
            assert top in {"schemas", "msgspec", "__future__"} or top in _stdlib(), f"{path} imports {name}"


def _stdlib() -> set[str]:
    import sys

    return set(sys.stdlib_module_names)


def _project_package(name: str) -> str | None:
    top = name.split(".")[0]
    return top if top in PROJECT_PACKAGES else None


def test_bus_imports_only_schemas() -> None:
    for path in _files("bus"):
        for name in _imports(path):
            assert _project_package(name) in {None, "schemas", "bus"}, f"{path} imports {name}"


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_a_library_imports_only_schemas_bus_and_the_libraries_it_may(library: str) -> None:
    """A library (logtools/, identity/) serves services and the CLI alike, so it never imports them."""
    allowed = {"schemas", "bus", library, *LIBRARIES[library]}
    for path in _files(library):
        for name in _imports(path):
            package = _project_package(name)
            assert package is None or package in allowed, f"{path} imports {name}"


def test_the_libraries_do_not_import_each_other_both_ways() -> None:
    for library, below in LIBRARIES.items():
        assert below <= set(LIBRARIES) and library not in below
        for other in below:
            assert library not in LIBRARIES[other], f"{library} and {other} import each other"


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_a_library_knows_no_http_and_no_terminal(library: str) -> None:
    """aiohttp belongs to the services that serve or fetch (and to netguard, their guard), typer and rich
    to the CLI."""
    banned = {"typer", "rich"} if library in HTTP_CLIENT_LIBRARIES else {"aiohttp", "typer", "rich"}
    for path in _files(library):
        for name in _imports(path):
            assert name.split(".")[0] not in banned, f"{path} imports {name}"


@pytest.mark.parametrize("library", sorted(HTTP_CLIENT_LIBRARIES))
def test_the_http_guard_imports_nothing_of_ours(library: str) -> None:
    for path in _files(library):
        for name in _imports(path):
            assert _project_package(name) in {None, library}, f"{path} imports {name}"


def test_every_package_of_ours_is_ruled_and_installed() -> None:
    """A new top-level package must join the layers above, the wheel (pyproject's packages) and mypy."""
    found = {path.parent.name for path in ROOT.glob("*/__init__.py")} - NOT_PACKAGES
    assert found == PROJECT_PACKAGES
    assert PROJECT_PACKAGES == {"schemas", "bus", *LIBRARIES, "services"}
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.removesuffix("*") for pattern in included} == PROJECT_PACKAGES
    assert set(config["tool"]["mypy"]["packages"]) == PROJECT_PACKAGES


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_never_imports_another(service: str) -> None:
    """Nor the CLI: of ours, a service imports itself, the libraries, bus and schemas."""
    own = f"services.{service}"
    for path in _files(f"services/{service}"):
        for name in _imports(path):
            if _project_package(name) == "services":
                assert name == own or name.startswith(f"{own}."), f"{path} imports {name}"


def test_only_the_cli_package_composes_services() -> None:
    """Every module under services/ is part of one service or of the CLI (the composition root), so the
    rule above covers every module that is not the CLI's."""
    for path in _files("services"):
        rel = path.relative_to(ROOT / "services")
        assert rel.parts[0] in {*SERVICES, "cli", "__init__.py"}, f"{path}: a service of its own or the CLI?"


def test_the_process_helper_imports_nothing_of_ours() -> None:
    """Tests and benchmarks import services/cli/processes.py: it must not pull a service (or torch) in."""
    for name in _imports(ROOT / "services" / "cli" / "processes.py"):
        assert name.split(".")[0] not in PROJECT_PACKAGES, f"processes.py imports {name}"


def test_heavy_libraries_stay_in_their_service() -> None:
    owners = {
        "torch": ("services/llm_worker/",),
        "transformers": ("services/llm_worker/",),
        "accelerate": ("services/llm_worker/",),
        "duckdb": ("services/projector/",),
        "nats": ("bus/",),
        "argon2": ("identity/",),
        "pyarrow": ("services/projector/", "logtools/"),  # the read model's bulk inserts; Parquet exports
    }
    for package in sorted(PROJECT_PACKAGES):
        for path in _files(package):
            rel = path.relative_to(ROOT).as_posix()
            for name in _imports(path):
                top = name.split(".")[0]
                if top in owners:
                    assert rel.startswith(owners[top]), f"{rel} imports {top}, owned by {owners[top]}"


@pytest.mark.parametrize("event_type", schemas.EVENT_TYPES, ids=lambda t: t.__name__)
def test_every_event_has_a_docstring_a_subject_and_a_stable_tag(event_type: type) -> None:
    doc = inspect.getdoc(event_type) or ""
    assert "Subject `" in doc, f"{event_type.__name__} docstring must name its subject"
    info = msgspec.inspect.type_info(event_type)
    assert isinstance(info, msgspec.inspect.StructType)
    assert isinstance(info.tag, str) and "." in info.tag and "schemas" not in info.tag
    assert info.tag_field == "type"
    assert event_type.__struct_config__.frozen
    assert not event_type.__struct_config__.forbid_unknown_fields, "old readers must skip new fields"


def test_event_tags_are_unique() -> None:
    tags = [msgspec.inspect.type_info(t).tag for t in schemas.EVENT_TYPES]  # type: ignore[attr-defined]
    assert len(tags) == len(set(tags))


def test_api_request_bodies_refuse_unknown_fields() -> None:
    from schemas import api

    requests = [v for k, v in vars(api).items() if k.endswith("Request") and isinstance(v, type)]
    assert requests
    for body in requests:
        assert body.__struct_config__.forbid_unknown_fields, body.__name__


def _reads_environment(path: Path) -> list[int]:
    """Lines that use os.environ or os.getenv, except `{**os.environ, ...}` (a copy for a child process)."""
    tree = ast.parse(path.read_text())
    copies = {
        id(value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        for key, value in zip(node.keys, node.values, strict=True)
        if key is None
    }
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if {alias.name for alias in node.names} & {"environ", "getenv"}:
                lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr in {"environ", "getenv", "environb"} and id(node) not in copies:
                lines.append(node.lineno)
    return lines


def test_settings_are_read_from_the_environment_in_one_place() -> None:
    """Every variable is a field of a settings Struct, read by schemas/settings_env.py alone."""
    helper = ROOT / "schemas" / "settings_env.py"
    assert _reads_environment(helper), "the helper should be the one reader"
    for package in sorted(PROJECT_PACKAGES):
        for path in _files(package):
            if path != helper:
                assert not _reads_environment(path), f"{path} reads the environment itself"


def test_a_test_module_never_imports_another() -> None:
    """Shared helpers live in helper modules (apihelp, stack, hosts, images, logs) or conftest fixtures."""
    modules = sorted((ROOT / "tests").glob("*.py"))
    assert any(path.name.startswith("test_") for path in modules)
    for path in modules:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module or ''}.{alias.name}" for alias in node.names]
                relative = node.level > 0
            elif isinstance(node, ast.Import):
                names, relative = [alias.name for alias in node.names], False
            else:
                continue
            for name in names:
                last = name.rsplit(".", 1)[-1]
                imports_a_test = name.startswith("tests.test_") or (relative and last.startswith("test_"))
                assert not imports_a_test, f"{path.name} imports {name}: move what it shares to a helper"


MAX_MODULE_LINES = 420  # "about 400": a module past it holds more than one thing; split it


def test_no_module_is_over_about_400_lines() -> None:
    packages = [*PROJECT_PACKAGES, "tests", "bench"]
    paths = [
        p
        for package in packages
        for p in (ROOT / package).rglob("*.py")
        if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
    ]
    assert len(paths) > 100
    long = {
        str(p.relative_to(ROOT)): n
        for p in paths
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these modules along their seams: {long}"
