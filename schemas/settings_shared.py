"""Settings that more than one process reads, each defined once (see schemas/settings_env.py)."""

from __future__ import annotations

from typing import Annotated

from schemas.settings_env import env

MIB = 1024 * 1024

# The API refuses a larger upload before it crosses the bus; the image store refuses a larger file or fetch.
ImageMaxBytes = Annotated[
    int,
    env(
        "CHATBUS_IMAGE_MAX_BYTES",
        "Largest image upload or fetched file in bytes (default 10485760 = 10 MiB); the API reads it too.",
        ge=1,
    ),
]
DEFAULT_IMAGE_MAX_BYTES = 10 * MIB

# The API listens on it; `chatbus up` reads it too (its --port), to print the address and pass it on.
ApiPort = Annotated[
    int, env("CHATBUS_API_PORT", "TCP port the API listens on (default 8080).", ge=0, le=65535)
]
DEFAULT_API_PORT = 8080
