"""Settings from environment variables: one frozen msgspec Struct per service, each field naming its variable.

A field read from the environment carries its variable, its description and its bounds in its metadata:

    port: Annotated[int, env("CHATBUS_API_PORT", "TCP port the API listens on.", ge=0, le=65535)] = 8080

`load(ApiSettings)` reads every such variable (an empty or unset one keeps the default), converts and
checks it, and raises SettingsError naming the variable and what is wrong with its value; `env_vars`
lists the variables and their descriptions (the README's configuration table is tested against it).
Text becomes an int, a float or a bool (`true/false`, `yes/no`, `on/off`, `1/0`); a tuple or set
field takes comma-separated values. Settings are never changed once built: `msgspec.structs.replace`.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)

_BOOL_WORDS = {"yes": "true", "on": "true", "no": "false", "off": "false"}
_SPLIT = (tuple, list, set, frozenset)
_NOUNS = {"`int`": "an integer", "`float`": "a number", "`bool`": "true or false", "`str`": "text"}


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable and what is wrong."""


def env(name: str, description: str, **bounds: Any) -> msgspec.Meta:
    """The metadata of a setting read from the variable `name`; `bounds` are msgspec.Meta's (ge, le, ...)."""
    return msgspec.Meta(description=description, extra={"env": name}, **bounds)


def variable(annotation: Any) -> str | None:
    """The environment variable an `Annotated[..., env(...)]` annotation names (None: not from the env)."""
    found = _declared(annotation)
    return None if found is None else found[0]


def env_name(cls: type[msgspec.Struct], field: str) -> str:
    """The environment variable of `cls.field` (KeyError if it has none)."""
    for info in msgspec.structs.fields(cls):
        if info.name == field and (name := variable(info.type)) is not None:
            return name
    raise KeyError(f"{cls.__name__}.{field} is not read from the environment")


def env_vars(cls: type[msgspec.Struct]) -> tuple[tuple[str, str], ...]:
    """(variable, description) of each field of `cls` read from the environment, in field order."""
    table: list[tuple[str, str]] = []
    for info in msgspec.structs.fields(cls):
        found = _declared(info.type)
        if found is not None:
            table.append(found)
    return tuple(table)


def read_env(cls: type[msgspec.Struct], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields of `cls` that set environment variables give, converted and checked, by field name."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for info in msgspec.structs.fields(cls):
        name = variable(info.type)
        if name is None or not (raw := environ.get(name, "").strip()):
            continue
        try:
            values[info.name] = _from_text(raw, info.type)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"{name}={raw!r}: {_reason(exc)}") from None
    return values


def load(
    cls: type[S],
    environ: Mapping[str, str] | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> S:
    """A `cls` from its defaults, then `base`, then its environment variables, then `overrides`, all checked.

    `base` is what a config file says, `overrides` what the command line says; a bad value of theirs is
    reported by field name, a bad variable by its name.
    """
    values = {**_checked(cls, base or {}), **read_env(cls, environ), **_checked(cls, overrides or {})}
    return cls(**values)


def _checked(cls: type[msgspec.Struct], given: Mapping[str, Any]) -> dict[str, Any]:
    """Values given in code (a config file's, the command line's), converted and checked by field name."""
    fields = {info.name: info for info in msgspec.structs.fields(cls)}
    checked: dict[str, Any] = {}
    for field, value in given.items():
        if field not in fields:
            raise TypeError(f"{cls.__name__} has no setting {field!r}")
        try:
            checked[field] = msgspec.convert(value, fields[field].type)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"{field}={value!r}: {_reason(exc)}") from None
    return checked


def _from_text(raw: str, annotation: Any) -> Any:
    """A variable's text as the field's type: comma-separated items for a collection, words for a bool."""
    base = typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation
    value: Any = raw
    if typing.get_origin(base) in _SPLIT:
        value = [part.strip() for part in raw.split(",") if part.strip()]
    elif base is bool:
        value = _BOOL_WORDS.get(raw.lower(), raw.lower())
    return msgspec.convert(value, annotation, strict=False)


def _reason(exc: msgspec.ValidationError) -> str:
    """msgspec's message, said of text: `expected an integer >= 1`, not "Expected `int`, got `str`"."""
    text = str(exc).removesuffix(", got `str`")
    for word, noun in _NOUNS.items():
        text = text.replace(word, noun)
    return text[:1].lower() + text[1:]


def _declared(annotation: Any) -> tuple[str, str] | None:
    """(variable, description) of a field's env(...) metadata, if it has one."""
    if typing.get_origin(annotation) is not Annotated:
        return None
    for meta in typing.get_args(annotation)[1:]:
        if isinstance(meta, msgspec.Meta) and meta.extra and "env" in meta.extra:
            return str(meta.extra["env"]), meta.description or ""
    return None
