"""Image store settings: upload limits, URL fetch policy, how many images are normalised at once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from services.image_store.fetch import FetchPolicy
from services.image_store.normalize import MIB, ImageLimits

ENV_VARS: tuple[tuple[str, str], ...] = (
    (
        "CHATBUS_IMAGE_MAX_BYTES",
        "Largest image upload or fetched file in bytes (default 10485760 = 10 MiB); the API reads it too.",
    ),
    (
        "CHATBUS_IMAGE_MAX_PIXELS",
        "Largest image in pixels, checked before decoding (default 24000000, a 6000x4000 photo).",
    ),
    ("CHATBUS_IMAGE_FETCH_TIMEOUT", "Seconds a URL fetch may take in total (default 10)."),
    (
        "CHATBUS_IMAGE_PRIVATE_HOSTS",
        "Comma-separated host names that may resolve to private addresses (a home network); default none.",
    ),
    ("CHATBUS_IMAGE_CONCURRENCY", "Images one image-store process normalises at once (default 2)."),
)


@dataclass(frozen=True)
class ImageStoreSettings:
    """Limits and policy of one image-store process; see ENV_VARS."""

    limits: ImageLimits = field(default_factory=ImageLimits)
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    concurrency: int = 2

    @classmethod
    def from_env(cls) -> ImageStoreSettings:
        """Settings from CHATBUS_IMAGE_* variables."""
        max_bytes = int(os.environ.get("CHATBUS_IMAGE_MAX_BYTES", str(10 * MIB)))
        hosts = os.environ.get("CHATBUS_IMAGE_PRIVATE_HOSTS", "")
        return cls(
            limits=ImageLimits(
                max_bytes=max_bytes, max_pixels=int(os.environ.get("CHATBUS_IMAGE_MAX_PIXELS", "24000000"))
            ),
            fetch=FetchPolicy(
                max_bytes=max_bytes,
                total_timeout=float(os.environ.get("CHATBUS_IMAGE_FETCH_TIMEOUT", "10")),
                private_hosts=frozenset(h.strip().lower() for h in hosts.split(",") if h.strip()),
            ),
            concurrency=max(1, int(os.environ.get("CHATBUS_IMAGE_CONCURRENCY", "2"))),
        )
