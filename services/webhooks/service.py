"""Run the webhooks dispatcher: POST each finished job that has a `callback_url`, signed, with retries.

It pulls the ends of replies (`reply.completed`, `reply.failed`) from the durable consumers
`webhooks-completed` and `webhooks-failed` (schemas/streams.py), reads the reply's events from the log
and, for a job with a callback, POSTs the job (logtools/job_view.py: the body of GET /v1/jobs/{id})
signed with its owner's secret (schemas/webhook.py). Each delivery is recorded as `reply.webhook` with
the dedup id `<reply_id>.webhook.<delivery>`; the end event is acknowledged only once the final delivery
(a 2xx, a refused URL, or the last try) is recorded. A dispatcher restarted mid-way reads the recorded
deliveries and goes on from the next one, after the backoff counted from the last one's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

import msgspec

import bus
import schemas
from bus import Bus, Delivery
from identity.webhook_secrets import webhook_secret_of
from logtools.job_view import body_of, read_job
from netguard import Resolve, system_resolve
from schemas.api_jobs import JobBody
from schemas.chat import WebhookAttempted
from schemas.ids import new_id
from schemas.streams import WEBHOOK_CONSUMERS, WEBHOOKS_SERVICE, ConsumerSpec
from schemas.subjects import parse_reply_subject
from services.webhooks.deliver import Outcome, post_delivery
from services.webhooks.settings import WebhookSettings

log = logging.getLogger(__name__)
VERSION = "0.1.0"
RETRY_AFTER = 2.0  # seconds before an end that could not be handled (NATS away) is delivered again
CAPACITY = 64  # finished jobs delivered at once


class WebhooksStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What `webhooks.status` answers: deliveries made since the process started."""

    deliveries: int  # POSTs tried (each recorded as reply.webhook)
    delivered: int  # jobs whose callback answered 2xx
    given_up: int  # jobs whose last try failed, or whose URL was refused
    in_flight: int  # jobs being delivered now (waiting out a backoff included)


class Dispatcher:
    """The webhooks service's state in one process."""

    def __init__(
        self,
        nbus: Bus,
        settings: WebhookSettings,
        resolve: Resolve = system_resolve,
        clock: Callable[[], datetime] = schemas.now,
        progress_every: float = 10.0,
    ) -> None:
        self.js = nbus.js
        self.settings = settings
        self.resolve = resolve
        self.clock = clock
        self.progress_every = progress_every
        self.deliveries = self.delivered = self.given_up = self.in_flight = 0

    async def handle(self, delivery: Delivery) -> None:
        """Deliver the job a reply end finishes (if it has a callback); acked after the final record."""
        subject = parse_reply_subject(delivery.msg.subject)
        if subject is None or subject.kind not in ("completed", "failed"):
            await delivery.ack()
            return
        self.in_flight += 1
        try:
            await self._deliver_job(delivery, subject.chat_id, subject.reply_id)
        except (bus.BusError, TimeoutError) as exc:  # NATS away: the end comes again, the records say where
            log.warning(
                "reply %s: webhook not handled (%r); again in %g s", subject.reply_id, exc, RETRY_AFTER
            )
            with contextlib.suppress(bus.BusError):
                await delivery.nak(delay=RETRY_AFTER)
        finally:
            self.in_flight -= 1

    async def _deliver_job(self, delivery: Delivery, chat_id: str, reply_id: str) -> None:
        job = await read_job(self.js, chat_id, reply_id)
        request = job.request
        if request is None or request.job is None or not request.job.callback_url:
            await delivery.ack()
            return
        last = max(job.deliveries, key=lambda e: e.delivery, default=None)
        if last is not None and last.final:
            await delivery.ack()  # delivered, or given up, before: this is a redelivered end
            return
        body = body_of(job, self.clock())
        secret = await webhook_secret_of(self.js, request.requested_by) or ""
        number, last_at = (last.delivery + 1, last.at) if last is not None else (1, None)
        while True:
            if last_at is not None:
                await self._wait_until(delivery, last_at.timestamp() + self.settings.wait_before(number))
            outcome = await self._post(body, secret, number)
            final = outcome.delivered or outcome.refused or not secret or number >= self.settings.tries
            record = WebhookAttempted(
                event_id=new_id("e"),
                chat_id=chat_id,
                at=self.clock(),
                reply_id=reply_id,
                delivery=number,
                status=outcome.status,
                error=outcome.error,
                final=final,
            )
            await bus.append_event(self.js, record, msg_id=f"{reply_id}.webhook.{number}")
            self.deliveries += 1
            job.state.apply(record)  # the next delivery's body says how this one went, as GET would
            body = msgspec.structs.replace(body, webhook=job.state.webhook())
            if final:
                self.delivered += outcome.delivered
                self.given_up += not outcome.delivered
                log.info(
                    "job %s: webhook %s after %d deliveries",
                    body.job_id,
                    outcome.status or outcome.error,
                    number,
                )
                await delivery.ack()
                return
            number, last_at = number + 1, record.at

    async def _post(self, body: JobBody, secret: str, number: int) -> Outcome:
        if not secret:
            return Outcome(error="no_webhook_secret: the job's owner has no webhook secret", refused=True)
        return await post_delivery(
            body.callback_url or "",
            msgspec.json.encode(body),
            secret=secret,
            webhook_id=f"{body.job_id}.{number}",
            resolve=self.resolve,
            private_hosts=self.settings.allowed_private,
            timeout=self.settings.timeout,
        )

    async def _wait_until(self, delivery: Delivery, when: float) -> None:
        """Sleep until `when` (unix seconds), telling the server the end is still being worked on."""
        while (left := when - self.clock().timestamp()) > 0:
            await asyncio.sleep(min(left, self.progress_every))
            await delivery.in_progress()

    def status(self) -> WebhooksStatus:
        """Counts for `webhooks.status`."""
        return WebhooksStatus(
            deliveries=self.deliveries,
            delivered=self.delivered,
            given_up=self.given_up,
            in_flight=self.in_flight,
        )


async def run_webhooks(
    nbus: Bus,
    stop: asyncio.Event,
    settings: WebhookSettings | None = None,
    *,
    capacity: int = CAPACITY,
    consumers: tuple[ConsumerSpec, ...] = WEBHOOK_CONSUMERS,
    resolve: Resolve = system_resolve,
) -> None:
    """Deliver finished jobs to their callbacks until `stop` is set; `webhooks.status` answers meanwhile."""
    dispatcher = Dispatcher(
        nbus,
        settings or WebhookSettings.from_env(),
        resolve,
        progress_every=min(spec.ack_wait for spec in consumers) / 3,
    )

    async def status(data: bytes) -> bytes:
        return msgspec.json.encode(dispatcher.status())

    log.info("webhooks running (%d jobs at once)", capacity)
    await bus.serve_consumers(
        nbus.nc,
        nbus.js,
        WEBHOOKS_SERVICE,
        VERSION,
        "chatbus webhooks: finished jobs",
        {"status": status},
        consumers,
        dispatcher.handle,
        capacity=capacity,
        stop=stop,
    )
