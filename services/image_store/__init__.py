"""The image store: normalise, content-address and safely fetch images (NATS micro service `images`)."""

from services.image_store.service import run_image_store
from services.image_store.settings import ENV_VARS, ImageStoreSettings

__all__ = ["ENV_VARS", "ImageStoreSettings", "run_image_store"]
