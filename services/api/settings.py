"""API settings: defaults, and the environment variables that override them."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB

ENV_VARS: tuple[tuple[str, str], ...] = (
    ("CHATBUS_API_HOST", "Address the API listens on (default 127.0.0.1)."),
    ("CHATBUS_API_PORT", "TCP port the API listens on (default 8080)."),
    ("CHATBUS_MAX_BODY_BYTES", "Largest accepted request body in bytes (default 1 MiB); larger gets 413."),
    ("CHATBUS_MAX_MESSAGE_CHARS", "Longest chat message in characters (default 32000); longer gets 413."),
    ("CHATBUS_MAX_PAGE_SIZE", "Largest `limit` a list request may ask for (default 200); larger gets 400."),
    ("CHATBUS_WS_MAX_FRAME_BYTES", "Largest WebSocket frame a client may send (default 64 KiB); else 1009."),
    ("CHATBUS_DEFAULT_MODEL", "Model alias used when neither message nor chat names one (default none)."),
    ("CHATBUS_READ_TIMEOUT", "Seconds to wait for the projector to answer a read (default 5)."),
    ("CHATBUS_IMAGE_MAX_BYTES", "Largest image upload (shared with the image store; default 10 MiB)."),
    ("CHATBUS_SELF_REGISTRATION", "Let anyone create an account with POST /v1/register (default false)."),
    (
        "CHATBUS_TRUSTED_PROXIES",
        "Proxy addresses/networks (comma-separated) whose user header is trusted, e.g. oauth2-proxy.",
    ),
    ("CHATBUS_TRUSTED_USER_HEADER", "The header such a proxy names the user in (default X-Forwarded-User)."),
    (
        "CHATBUS_TRAINING_CONSENT_DEFAULT",
        "May chats of users who never chose be used for training (default false; read by API and export).",
    ),
)


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


@dataclass(frozen=True)
class ApiSettings:
    """Everything the API process can be told; see ENV_VARS."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1 * MIB
    max_message_chars: int = 32_000
    max_page_size: int = 200
    ws_max_frame_bytes: int = 64 * KIB
    default_model: str = ""
    read_timeout: float = 5.0
    max_image_bytes: int = 10 * MIB
    training_consent_default: bool = False
    self_registration: bool = False
    trusted_proxies: tuple[str, ...] = ()
    trusted_user_header: str = "X-Forwarded-User"
    # A body that has not arrived in this many seconds is refused (a slow sender holds no connection).
    upload_seconds: float = 60.0
    # An open WebSocket/SSE re-checks its key and chat this often; revoked or deleted closes it.
    access_recheck_seconds: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        """Settings from CHATBUS_* environment variables, defaults for the rest."""
        env = os.environ if env is None else env
        d = cls()
        return cls(
            host=env.get("CHATBUS_API_HOST", d.host),
            port=_int(env, "CHATBUS_API_PORT", d.port, low=0),
            max_body_bytes=_int(env, "CHATBUS_MAX_BODY_BYTES", d.max_body_bytes, low=1),
            max_message_chars=_int(env, "CHATBUS_MAX_MESSAGE_CHARS", d.max_message_chars, low=1),
            max_page_size=_int(env, "CHATBUS_MAX_PAGE_SIZE", d.max_page_size, low=1),
            ws_max_frame_bytes=_int(env, "CHATBUS_WS_MAX_FRAME_BYTES", d.ws_max_frame_bytes, low=1),
            default_model=env.get("CHATBUS_DEFAULT_MODEL", d.default_model),
            read_timeout=_float(env, "CHATBUS_READ_TIMEOUT", d.read_timeout),
            max_image_bytes=_int(env, "CHATBUS_IMAGE_MAX_BYTES", d.max_image_bytes, low=1),
            training_consent_default=_bool(
                env, "CHATBUS_TRAINING_CONSENT_DEFAULT", d.training_consent_default
            ),
            self_registration=_bool(env, "CHATBUS_SELF_REGISTRATION", d.self_registration),
            trusted_proxies=_networks(env, "CHATBUS_TRUSTED_PROXIES"),
            trusted_user_header=env.get("CHATBUS_TRUSTED_USER_HEADER") or d.trusted_user_header,
        )


def _int(env: Mapping[str, str], name: str, default: int, low: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < low:
        raise SettingsError(f"{name}={value} must be at least {low}")
    return value


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = [part.strip() for part in env.get(name, "").split(",") if part.strip()]
    for part in raw:
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise SettingsError(f"{name}: {part!r} is not an address or network") from None
    return tuple(raw)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} must be true or false")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise SettingsError(f"{name}={value} must be positive")
    return value
