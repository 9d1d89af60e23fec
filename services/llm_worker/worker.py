"""The bus-facing loop: pull reply requests, drive the engine, stream tokens, end each reply once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec

import bus
import schemas
from bus import Bus, Delivery
from schemas.chat import ReplyCompleted, ReplyFailed, ReplyRequested, ReplyStarted
from schemas.ids import new_id
from schemas.presence import WorkerPresence
from schemas.streams import CHAT, WORKERS_KV
from schemas.subjects import (
    ANY,
    BATCH_LANE,
    lane_of,
    max_deliveries_advisory,
    parse_reply_subject,
    presence_key,
    reply_event,
    reply_tokens,
)
from schemas.tokens import TokenDelta
from services.llm_worker.attempts import expired_error, refusal, retry_in, seconds_left
from services.llm_worker.coalesce import Chunk, reply_coalescer
from services.llm_worker.context import build_context, fit_prompt, image_hashes, read_context
from services.llm_worker.engine import ChatMessage, Engine, GenerationParams, Prompt, PromptTooLong
from services.llm_worker.gate import BackgroundGate
from services.llm_worker.lanes import BatchWidth, EngineDied, lane_specs, watch_engine, worker_lanes
from services.llm_worker.pictures import load_images
from services.llm_worker.presence import beat, beat_every, presence_of
from services.llm_worker.reply_events import (
    append_fenced,
    completed,
    end_given_up,
    failed,
    finish,
    refuse,
    retry,
)
from services.llm_worker.reply_text import ReplyText
from services.llm_worker.settings import WorkerSettings

log = logging.getLogger(__name__)
_request_decoder = msgspec.json.Decoder(ReplyRequested)


@dataclass
class ActiveReply:
    """A reply this worker is generating now."""

    request: ReplyRequested
    delivery: Delivery
    engine_id: str
    chunks: asyncio.Queue[Chunk] = field(default_factory=asyncio.Queue)
    expired: bool = False  # its job's deadline passed: its generation was (or is about to be) cancelled
    batch: bool = False  # a batch's line: background work in the engine


class Worker:
    """One worker process: serves one model alias through one engine."""

    def __init__(self, settings: WorkerSettings, nbus: Bus, engine: Engine, tokenizer: Any) -> None:
        self.settings = settings
        self.bus = nbus
        self.width = BatchWidth(settings)  # how many batch lines may run now
        self.engine = BackgroundGate(engine, self.width.limit)  # holds the batch lines taken beyond that
        self.tokenizer = tokenizer
        self.active: dict[str, ActiveReply] = {}
        self.started_at = schemas.now()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: collections.deque[tuple[ActiveReply, Chunk]] = collections.deque()
        self._inbox_lock = threading.Lock()
        self._wake_pending = False
        self._halt = asyncio.Event()  # take no more work: stopping, or the engine died
        self._cancels: dict[str, None] = {}  # insertion-ordered set of recently cancelled replies
        # Prompts are rendered off the event loop, one at a time: a tokenizer is not meant for
        # concurrent use from several threads.
        self._prompts = ThreadPoolExecutor(1, thread_name_prefix="prompt")
        cap = settings.max_new_tokens_cap
        # What a request that names no sampling gets (the config's), within the cap.
        self.defaults = msgspec.structs.replace(
            settings.defaults, max_new_tokens=min(settings.defaults.max_new_tokens, cap)
        )

    def _drain_inbox(self) -> None:
        """Hand engine outputs to their replies: one wake-up of the loop per engine step, not per reply."""
        with self._inbox_lock:
            self._wake_pending = False
        while self._inbox:
            reply, chunk = self._inbox.popleft()
            reply.chunks.put_nowait(chunk)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop`; then hand unfinished replies back for another worker. Raises EngineDied when
        the engine's generation thread died (its replies handed back too): the process must start anew."""
        self._loop = asyncio.get_running_loop()
        self.engine.start()
        cancel_sub = await self.bus.nc.subscribe(reply_event(ANY, ANY, "cancelled"), cb=self._on_cancel)
        # One worker of the alias (queue group) ends a reply whose request JetStream gave up on.
        gave_up_subs = [
            await self.bus.nc.subscribe(
                max_deliveries_advisory(spec.stream, spec.durable), queue=spec.durable, cb=self._on_gave_up
            )
            for spec in lane_specs(self.settings)
        ]
        presence = bus.KV(self.bus.js, WORKERS_KV.bucket)
        await beat(presence, self._presence())
        halt = self._halt  # `stop`, or the engine died
        tasks = [
            asyncio.create_task(beat_every(presence, self.settings.heartbeat_every, self._presence, halt)),
            asyncio.create_task(self._keep_alive(halt)),
            asyncio.create_task(watch_engine(self.engine, stop, halt)),
        ]
        lanes = worker_lanes(self.settings, self._handle, self.width, self.engine)
        try:
            await bus.pull_lanes(self.bus.js, lanes, stop=halt)
        finally:
            for task in tasks:
                task.cancel()
            await cancel_sub.unsubscribe()
            for sub in gave_up_subs:
                await sub.unsubscribe()
            for reply in list(self.active.values()):
                self.engine.cancel(reply.engine_id)
                with contextlib.suppress(bus.BusError):  # unanswered: it is redelivered after ack_wait
                    await reply.delivery.nak()
            with contextlib.suppress(bus.BusError):  # unanswered: the heartbeat expires on its own
                await presence.delete(presence_key(self.settings.alias, self.settings.worker_id))
            self.engine.stop()
            self._prompts.shutdown(wait=False)
        if not stop.is_set():
            raise EngineDied(f"worker {self.settings.worker_id}: the engine's generation thread died")

    def _presence(self) -> WorkerPresence:
        batch = sum(reply.batch for reply in self.active.values())
        return presence_of(
            self.settings, self.engine, self.started_at, self.defaults, len(self.active), batch
        )

    async def _keep_alive(self, stop: asyncio.Event) -> None:
        """Tell JetStream the active requests are still being worked on, well inside ack_wait."""
        while not stop.is_set():
            await asyncio.sleep(max(self.settings.ack_wait / 3, 0.2))
            for reply in list(self.active.values()):
                with contextlib.suppress(bus.BusError):  # NATS may be restarting: try again next round
                    await reply.delivery.in_progress()

    async def _on_cancel(self, msg: Any) -> None:
        cancelled = parse_reply_subject(msg.subject)
        if cancelled is None:
            return
        reply_id = cancelled.reply_id
        reply = self.active.get(reply_id)
        if reply is not None:
            # Remembered too: the reply may be between its cancel check and reaching the engine.
            self._cancels[reply_id] = None
            while len(self._cancels) > 10_000:
                self._cancels.pop(next(iter(self._cancels)))
            self.engine.cancel(reply.engine_id)

    async def _on_gave_up(self, msg: Any) -> None:
        """After the last delivery's worker died too: end the reply with `reply.failed`, once."""
        await end_given_up(self.bus.js, self.settings, msg.data)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            request = _request_decoder.decode(delivery.data)
        except msgspec.DecodeError as exc:
            log.error("unreadable reply request at seq %s: %s", delivery.stream_seq, exc)
            await delivery.term()
            return
        if request.imported:  # its reply came with it
            await delivery.ack()
            return
        why = refusal(request.job, delivery.attempt, schemas.now())
        if why is not None and request.job is not None:
            with contextlib.suppress(bus.BusError):  # unanswered: delivered again, and refused again
                await refuse(self.bus.js, self.settings, request, request.job, delivery, why)
            return
        try:
            if not self.engine.alive():
                raise EngineDied("the engine's generation thread died")
            await self._serve(request, delivery)
        except EngineDied:  # not the request's fault: back to the queue, for a worker with a live engine
            self._halt.set()  # (a moment later than now: not to this worker's next fetch)
            with contextlib.suppress(bus.BusError):  # unanswered: it is redelivered after ack_wait
                await delivery.nak(delay=1.0)
        except Exception as exc:
            if delivery.attempt < self.settings.max_deliver:
                log.exception("reply %s failed in the worker; handing it back", request.reply_id)
                with contextlib.suppress(bus.BusError):  # unanswered: it is redelivered after ack_wait
                    await delivery.nak(delay=1.0)
                return
            # JetStream will not deliver it again: end the reply rather than leave it open forever.
            log.exception("reply %s failed on its last delivery", request.reply_id)
            gave_up = failed(
                self.settings,
                request,
                delivery.attempt,
                f"gave up after {delivery.attempt} attempts: {exc}",
                "gave_up",
            )
            with contextlib.suppress(bus.BusError):  # unanswered: the max-deliveries advisory ends it
                await bus.append_event(self.bus.js, gave_up, msg_id=f"{request.reply_id}.end")
                await delivery.ack()

    async def _serve(self, request: ReplyRequested, delivery: Delivery) -> None:
        js = self.bus.js
        chat_id, reply_id, attempt = request.chat_id, request.reply_id, delivery.attempt
        started = ReplyStarted(
            event_id=new_id("e"),
            chat_id=chat_id,
            at=schemas.now(),
            reply_id=reply_id,
            attempt=attempt,
            worker_id=self.settings.worker_id,
            model=self.settings.alias,
        )
        # The context was in the log before the request: read it while the start is appended (TTFT).
        context = asyncio.ensure_future(read_context(js, chat_id, delivery.stream_seq))
        context.add_done_callback(_retrieved)
        try:
            fence = await append_fenced(self.bus.js, started, f"{reply_id}.started.{attempt}", None)
        except BaseException:
            context.cancel()
            raise
        if fence is None:
            context.cancel()
            await delivery.ack()  # already ended (we died between appending the end and acking)
            return
        began = time.monotonic()
        queue_ms = max((started.at - request.at).total_seconds() * 1000.0, 0.0)
        reply = ActiveReply(
            request=request,
            delivery=delivery,
            engine_id=f"{reply_id}.{attempt}",
            batch=lane_of(request) == BATCH_LANE,
        )
        self.active[reply_id] = reply
        left, timer = seconds_left(request.job, schemas.now()), None
        if left is not None:  # cancelled at its deadline, wherever it is by then
            timer = asyncio.get_running_loop().call_later(max(left, 0.0), self._expire, reply)
        try:
            if await bus.last_msg(js, CHAT.name, reply_event(chat_id, reply_id, "cancelled")) is not None:
                end: ReplyCompleted | ReplyFailed = completed(
                    self.settings, request, attempt, "", 0, 0, "cancelled", queue_ms, 0.0, 0.0
                )
            else:
                end = await self._generate(reply, await context, attempt, began, queue_ms)
        finally:
            context.cancel()  # nothing if it is done
            if timer is not None:
                timer.cancel()
            if self.active.get(reply_id) is reply:
                del self.active[reply_id]
        if isinstance(end, ReplyFailed):
            delay = retry_in(request.job, attempt, end.code, self.settings.max_deliver)
            if delay is not None:  # a job's engine error with attempts left: asked again after a backoff
                await retry(self.bus.js, end, delay, fence, delivery)
                return
        await finish(self.bus.js, end, fence, delivery)

    def _expire(self, reply: ActiveReply) -> None:
        """Its job's deadline passed: stop its generation now, freeing its slot (it ends as `expired`)."""
        if reply.request.reply_id in self._cancels:
            return  # someone cancelled it first: it ends as cancelled
        reply.expired = True
        self.engine.cancel(reply.engine_id)

    async def _generate(
        self, reply: ActiveReply, stored: list[bus.StoredMsg], attempt: int, began: float, queue_ms: float
    ) -> ReplyCompleted | ReplyFailed:
        request = reply.request
        context = build_context(request, stored)
        wanted = image_hashes(context.messages)
        pictures = (
            await load_images(self.bus.js, wanted, self.settings.max_images)
            if self.engine.supports_images
            else {}
        )
        loop = asyncio.get_running_loop()
        p = request.params
        # A request from before the cap (or appended by hand) asks at most what this model allows.
        max_new_tokens = min(p.max_new_tokens, self.settings.max_new_tokens_cap)
        window = getattr(self.engine, "max_context", 0)
        room = min(max_new_tokens, window // 2)  # the reply's tokens, within half the window at most

        def build(messages: list[ChatMessage]) -> Prompt:
            return self.engine.build_prompt(messages, pictures)

        try:
            fitted = await loop.run_in_executor(self._prompts, fit_prompt, context, build, window, room)
        except Exception as exc:  # noqa: BLE001 - a template that cannot render this chat will never succeed
            return failed(
                self.settings, request, attempt, f"cannot build the prompt: {exc}", "invalid_prompt"
            )
        prompt = fitted.prompt
        if fitted.dropped:
            log.info(
                "reply %s: the oldest %d turn(s) left out to fit a %d-token window",
                request.reply_id,
                len(fitted.dropped),
                window,
            )
        ignored = [sha for sha in wanted if sha not in prompt.images_seen]
        if ignored:
            why = "is text-only" if not self.engine.supports_images else "sees at most its image limit"
            log.info("reply %s: %d image(s) not shown, the model %s", request.reply_id, len(ignored), why)
        params = GenerationParams(
            max_new_tokens=max_new_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            ignore_eos=p.ignore_eos,
            stop=tuple(p.stop),
            seed=p.seed,
        )

        def hand_over(chunk: Chunk) -> None:  # called on the engine's thread
            self._inbox.append((reply, chunk))
            with self._inbox_lock:
                if self._wake_pending:
                    return
                self._wake_pending = True
            loop.call_soon_threadsafe(self._drain_inbox)

        coalescer = reply_coalescer(self.settings, reply.batch, hand_over, self.engine.active)
        try:
            self.engine.submit(reply.engine_id, prompt, params, coalescer.on_output, background=reply.batch)
        except ValueError as exc:  # e.g. the prompt leaves no room in the model's context
            code = "context_length_exceeded" if isinstance(exc, PromptTooLong) else "invalid_prompt"
            return failed(self.settings, request, attempt, str(exc), code)
        if request.reply_id in self._cancels or reply.expired:  # while its context was loading
            self.engine.cancel(reply.engine_id)
        reply_text = ReplyText(self.tokenizer, params.stop)
        subject = reply_tokens(request.chat_id, request.reply_id)
        text_parts: list[str] = []
        index = generated = 0
        acks: list[asyncio.Future[Any]] = []
        try:
            while True:
                chunk = await reply.chunks.get()
                out, finished = chunk.last, chunk.last.finished
                text, used = reply_text.push(chunk.token_ids, finished)
                if reply_text.stopped:
                    self.engine.cancel(reply.engine_id)  # free its slot now; its last output is not read
                if used or text:
                    delta = TokenDelta(
                        chat_id=request.chat_id,
                        reply_id=request.reply_id,
                        attempt=attempt,
                        index=index,
                        text=text,
                        n_tokens=used,
                    )
                    acks.append(
                        await self.bus.js.publish_async(
                            subject,
                            schemas.encode(delta),
                            headers={"Nats-Msg-Id": f"{request.reply_id}.{attempt}.{index}"},
                        )
                    )
                    text_parts.append(text)
                    generated += used
                    index += 1
                if finished or reply_text.stopped:
                    break
            first_token_ms = (coalescer.first_token_at - began) * 1000.0 if coalescer.first_token_at else 0.0
        except BaseException:
            self.engine.cancel(reply.engine_id)  # nobody reads its output any more: free its slot
            raise
        if acks:
            await asyncio.gather(*acks, return_exceptions=True)  # deltas land before the end event
        generation_ms = (time.monotonic() - began) * 1000.0
        if reply_text.stopped:
            reason, completion_tokens = "stop", generated
        elif reply.expired and out.finish_reason == "cancelled":
            job = request.job
            assert job is not None  # only a job has a deadline
            return failed(self.settings, request, attempt, expired_error(job, attempt, generated), "expired")
        elif out.finish_reason == "error":
            if not self.engine.alive():  # the engine died under it: not this reply's failure
                raise EngineDied(out.error or "the engine's generation thread died")
            return failed(self.settings, request, attempt, out.error or "generation failed", "engine_error")
        else:
            reason, completion_tokens = out.finish_reason or "stop", out.completion_tokens
        return completed(
            self.settings,
            request,
            attempt,
            "".join(text_parts),
            out.prompt_tokens,
            completion_tokens,
            reason,
            queue_ms,
            first_token_ms,
            generation_ms,
            images_seen=list(prompt.images_seen),
            images_ignored=ignored,
            context_dropped=fitted.dropped,
        )


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark a task's outcome as seen: a context read we stopped needing may have failed, and that is fine."""
    if not task.cancelled():
        task.exception()
