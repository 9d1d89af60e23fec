"""API settings: defaults, and the environment variables that override them."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated

import msgspec

from schemas.queries import MAX_PAGE_SIZE
from schemas.settings_env import SettingsError, env, env_name, env_vars, load
from schemas.settings_shared import DEFAULT_API_PORT, DEFAULT_IMAGE_MAX_BYTES, ApiPort, ImageMaxBytes

KIB = 1024
MIB = 1024 * KIB

Positive = Annotated[int, msgspec.Meta(ge=1)]
# What a browser sends as Origin: scheme, host and maybe port; no path, no trailing slash.
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+\Z")


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the API process can be told; see ENV_VARS."""

    host: Annotated[str, env("CHATBUS_API_HOST", "Address the API listens on (default 127.0.0.1).")] = (
        "127.0.0.1"
    )
    port: ApiPort = DEFAULT_API_PORT
    max_body_bytes: Annotated[
        Positive,
        env(
            "CHATBUS_MAX_BODY_BYTES",
            "Largest accepted request body in bytes (default 1 MiB); larger gets 413.",
        ),
    ] = 1 * MIB
    batch_max_lines: Annotated[
        Positive,
        env("CHATBUS_BATCH_MAX_LINES", "Most lines a batch may hold (default 50000); more gets 400."),
    ] = 50_000
    batch_max_bytes: Annotated[
        Positive,
        env(
            "CHATBUS_BATCH_MAX_BYTES",
            "Largest batch input or uploaded batch file in bytes (default 50 MiB); larger gets 413.",
        ),
    ] = 50 * MIB
    max_message_chars: Annotated[
        Positive,
        env(
            "CHATBUS_MAX_MESSAGE_CHARS",
            "Longest chat message in characters (default 32000); longer gets 413.",
        ),
    ] = 32_000
    # At most the projector's page: one page is one NATS reply, which must stay well under max_payload.
    max_page_size: Annotated[
        int,
        env(
            "CHATBUS_MAX_PAGE_SIZE",
            f"Largest `limit` a list request may ask for (default and at most {MAX_PAGE_SIZE}); "
            "larger gets 400.",
            ge=1,
            le=MAX_PAGE_SIZE,
        ),
    ] = MAX_PAGE_SIZE
    ws_max_frame_bytes: Annotated[
        Positive,
        env(
            "CHATBUS_WS_MAX_FRAME_BYTES",
            "Largest WebSocket frame a client may send (default 64 KiB); else 1009.",
        ),
    ] = 64 * KIB
    default_model: Annotated[
        str,
        env(
            "CHATBUS_DEFAULT_MODEL",
            "Model alias used when neither message nor chat names one (default none).",
        ),
    ] = ""
    read_timeout: Annotated[
        float,
        env("CHATBUS_READ_TIMEOUT", "Seconds to wait for the projector to answer a read (default 5).", gt=0),
    ] = 5.0
    max_image_bytes: ImageMaxBytes = DEFAULT_IMAGE_MAX_BYTES
    training_consent_default: Annotated[
        bool,
        env(
            "CHATBUS_TRAINING_CONSENT_DEFAULT",
            "May chats of users who never chose be used for training "
            "(default false; read by API and export).",
        ),
    ] = False
    self_registration: Annotated[
        bool,
        env(
            "CHATBUS_SELF_REGISTRATION",
            "Let anyone create an account with POST /v1/register (default false).",
        ),
    ] = False
    trusted_proxies: Annotated[
        tuple[str, ...],
        env(
            "CHATBUS_TRUSTED_PROXIES",
            "Proxy addresses/networks (comma-separated) whose user header is trusted, e.g. oauth2-proxy.",
        ),
    ] = ()
    trusted_user_header: Annotated[
        str,
        env(
            "CHATBUS_TRUSTED_USER_HEADER",
            "The header such a proxy names the user in (default X-Forwarded-User).",
        ),
    ] = "X-Forwarded-User"
    allowed_origins: Annotated[
        tuple[str, ...],
        env(
            "CHATBUS_ALLOWED_ORIGINS",
            "Origins besides the one the API sees in Host (comma-separated, e.g. https://chat.example.org: "
            "a proxy that rewrites Host) whose pages may log in, register, open live feeds with a session "
            "and write through the trusted proxy; default none.",
        ),
    ] = ()
    cors_origins: Annotated[
        tuple[str, ...],
        env(
            "CHATBUS_CORS_ORIGINS",
            "Origins whose scripts may call the API (CORS; comma-separated exact origins, e.g. "
            "https://app.example.org, or `*` for any, which never allows credentials); default none: "
            "CORS off. Such callers authenticate with an API key: sessions stay with this site's pages.",
        ),
    ] = ()
    login_limit: Annotated[
        Positive,
        env(
            "CHATBUS_LOGIN_LIMIT",
            "Logins of one user name from one client address before 429 for 15 minutes (default 5; "
            "a success clears it).",
        ),
    ] = 5
    login_address_limit: Annotated[
        Positive,
        env(
            "CHATBUS_LOGIN_ADDRESS_LIMIT",
            "Failed logins from one client address (an IPv6 /64), any user name, before 429 for "
            "15 minutes (default 30).",
        ),
    ] = 30
    register_limit: Annotated[
        Positive,
        env(
            "CHATBUS_REGISTER_LIMIT",
            "Accounts one client address may ask POST /v1/register for within 15 minutes (default 5).",
        ),
    ] = 5
    password_threads: Annotated[
        int,
        env(
            "CHATBUS_PASSWORD_THREADS",
            "Threads that hash and check passwords (argon2: ~0.1 s of CPU and 64 MiB each); default 0: "
            "half the cores, at least 1, so that logins never take every core from the requests.",
            ge=0,
        ),
    ] = 0
    password_queue: Annotated[
        int,
        env(
            "CHATBUS_PASSWORD_QUEUE",
            "Logins that may wait for a password thread (default 8); beyond, 503 with Retry-After.",
            ge=0,
        ),
    ] = 8
    arena_daily_votes: Annotated[
        int,
        env(
            "CHATBUS_ARENA_DAILY_VOTES",
            "Arena votes one user may cast per day (since 00:00 UTC; default 200, 0 = no cap); "
            "more gets 429.",
            ge=0,
        ),
    ] = 200
    # A body that has not arrived in this many seconds is refused (a slow sender holds no connection).
    upload_seconds: float = 60.0
    # An open WebSocket/SSE re-checks its key and chat this often; revoked or deleted closes it.
    access_recheck_seconds: float = 10.0
    max_feeds_per_user: Annotated[
        Positive,
        env(
            "CHATBUS_MAX_FEEDS_PER_USER",
            "Live feeds (WebSocket + SSE) one user may hold open on one API process (default 10); "
            "more gets 429.",
        ),
    ] = 10
    max_feeds_per_key: Annotated[
        Positive,
        env(
            "CHATBUS_MAX_FEEDS_PER_KEY",
            "Live feeds one API key may hold open on one API process (default 5); more gets 429.",
        ),
    ] = 5
    feed_buffer_bytes: Annotated[
        Positive,
        env(
            "CHATBUS_FEED_BUFFER_BYTES",
            "Bytes a live feed may hold for a client that does not read (default 4 MiB); beyond, "
            "the feed is dropped (WebSocket close 4008, SSE `end` event) and the client resumes.",
        ),
    ] = 4 * MIB
    sse_heartbeat_seconds: Annotated[
        float,
        env(
            "CHATBUS_SSE_HEARTBEAT_SECONDS",
            "Seconds between the SSE feed's heartbeat comment lines (default 15).",
            gt=0,
        ),
    ] = 15.0
    body_seconds: Annotated[
        float,
        env(
            "CHATBUS_BODY_SECONDS",
            "Seconds a JSON request body may take to arrive (default 10); slower gets 408.",
            gt=0,
        ),
    ] = 10.0

    def __post_init__(self) -> None:
        for origin in self.allowed_origins:
            if not _ORIGIN.match(origin):
                name = env_name(ApiSettings, "allowed_origins")
                raise SettingsError(f"{name}: {origin!r} is not an origin like https://chat.example.org")
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.match(origin):
                name = env_name(ApiSettings, "cors_origins")
                raise SettingsError(
                    f"{name}: {origin!r} is not an origin like https://app.example.org (or `*`)"
                )
        for part in self.trusted_proxies:
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                name = env_name(ApiSettings, "trusted_proxies")
                raise SettingsError(f"{name}: {part!r} is not an address or network") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        """Settings from CHATBUS_* environment variables, defaults for the rest."""
        return load(cls, environ)


ENV_VARS = env_vars(ApiSettings)
