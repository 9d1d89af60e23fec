"""The stateless HTTP API: REST, WebSocket and SSE over NATS (no database, no files of its own)."""

from services.api.app import create_app, run_api
from services.api.settings import ENV_VARS, ApiSettings

__all__ = ["ENV_VARS", "ApiSettings", "create_app", "run_api"]
