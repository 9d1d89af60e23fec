"""The webhooks service: POSTs finished jobs to their `callback_url`, signed, retried, each try recorded."""

from services.webhooks.service import Dispatcher, WebhooksStatus, run_webhooks
from services.webhooks.settings import ENV_VARS, WebhookSettings

__all__ = ["ENV_VARS", "Dispatcher", "WebhookSettings", "WebhooksStatus", "run_webhooks"]
