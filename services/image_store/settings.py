"""Image store settings: upload limits, URL fetch policy, how many images are normalised at once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import msgspec

from schemas.settings_env import env, env_vars, load
from schemas.settings_shared import DEFAULT_IMAGE_MAX_BYTES, ImageMaxBytes
from services.image_store.fetch import FetchPolicy
from services.image_store.normalize import ImageLimits


class ImageStoreSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Limits and policy of one image-store process; see ENV_VARS."""

    max_bytes: ImageMaxBytes = DEFAULT_IMAGE_MAX_BYTES
    max_pixels: Annotated[
        int,
        env(
            "CHATBUS_IMAGE_MAX_PIXELS",
            "Largest image in pixels, checked before decoding (default 24000000, a 6000x4000 photo).",
            ge=1,
        ),
    ] = 24_000_000
    fetch_timeout: Annotated[
        float, env("CHATBUS_IMAGE_FETCH_TIMEOUT", "Seconds a URL fetch may take in total (default 10).", gt=0)
    ] = 10.0
    private_hosts: Annotated[
        frozenset[str],
        env(
            "CHATBUS_IMAGE_PRIVATE_HOSTS",
            "Comma-separated host names that may resolve to private addresses (a home network); "
            "default none.",
        ),
    ] = frozenset()
    concurrency: Annotated[
        int,
        env(
            "CHATBUS_IMAGE_CONCURRENCY",
            "Images one image-store process normalises at once (default 2).",
            ge=1,
        ),
    ] = 2

    @property
    def limits(self) -> ImageLimits:
        """What an upload or a fetched file must stay within."""
        return ImageLimits(max_bytes=self.max_bytes, max_pixels=self.max_pixels)

    @property
    def fetch(self) -> FetchPolicy:
        """How a user's image URL is fetched (host names compare without case)."""
        return FetchPolicy(
            max_bytes=self.max_bytes,
            total_timeout=self.fetch_timeout,
            private_hosts=frozenset(host.lower() for host in self.private_hosts),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImageStoreSettings:
        """Settings from CHATBUS_IMAGE_* variables, defaults for the rest."""
        return load(cls, environ)


ENV_VARS = env_vars(ImageStoreSettings)
