"""The batch lane on the bus: a batch line's request is on `...requested.<alias>.batch`, and everything that
reads requests sees it (parsers, "any model" lookups, the read model, the audit, export, ratings)."""

from __future__ import annotations

import bus
import schemas
from logtools.export import ExportFilter, chats_json, hash_ref, read_log, sft_rows
from schemas.chat import ChatCreated, MessagePosted, ReplyRequested
from schemas.ids import new_id
from schemas.job import JobSpec
from schemas.permissions import worker_permissions
from schemas.sampling import SamplingParams
from schemas.streams import batch_worker_consumer, worker_consumer
from schemas.subjects import (
    ANY,
    BATCH_LANE,
    ReplySubject,
    any_reply_request,
    belongs,
    js_api,
    parse_chat_subject,
    reply_requested,
    reply_requests_of,
    subject_of,
)
from tests.apihelp import Api, serve_model
from tests.logs import complete_reply
from tests.subject_match import matches


def _request(chat_id: str, batch_id: str, message_id: str = "m1") -> ReplyRequested:
    reply_id = new_id("r")
    job = JobSpec(job_id=f"{chat_id}-{reply_id}", batch_id=batch_id, custom_id="line-1" if batch_id else "")
    return ReplyRequested(
        event_id=new_id("e"),
        chat_id=chat_id,
        at=schemas.now(),
        reply_id=reply_id,
        message_id=message_id,
        model="demo",
        params=SamplingParams(max_new_tokens=8),
        context=[message_id],
        requested_by="ann",
        job=job,
    )


def test_a_batch_line_goes_on_the_batch_lane_and_parses_back() -> None:
    line, job = _request("c1", "q1"), _request("c1", "")
    assert subject_of(line) == f"chat.c1.reply.{line.reply_id}.requested.demo.batch"
    assert subject_of(job) == f"chat.c1.reply.{job.reply_id}.requested.demo"
    assert parse_chat_subject(subject_of(line)) == ReplySubject(
        "c1", line.reply_id, "requested", "demo", "batch"
    )
    assert parse_chat_subject(subject_of(job)) == ReplySubject("c1", job.reply_id, "requested", "demo", "")
    assert parse_chat_subject(f"chat.c1.reply.{line.reply_id}.requested.demo.other") is None
    # A reader skips a request filed on the other lane (bus/decode.py's rule).
    assert belongs(subject_of(line), line) and not belongs(subject_of(job), line)
    assert not belongs(reply_requested("c1", job.reply_id, "demo", BATCH_LANE), job)
    # The two consumers split the requests; "any model" lookups see both.
    for request, lane in ((line, BATCH_LANE), (job, "")):
        subject = subject_of(request)
        assert matches(reply_requests_of("demo", lane), subject)
        assert not matches(reply_requests_of("demo", BATCH_LANE if not lane else ""), subject)
        assert matches(any_reply_request("c1", request.reply_id), subject)
        assert matches(any_reply_request("c1", ANY), subject)
    assert worker_consumer("demo").durable == "worker-demo"
    assert batch_worker_consumer("demo").durable == "worker-demo-batch"
    assert batch_worker_consumer("demo").filter_subject == reply_requests_of("demo", BATCH_LANE)


def test_a_workers_nats_user_may_pull_both_lanes() -> None:
    rights = worker_permissions("demo")
    for durable in ("worker-demo", "worker-demo-batch"):
        assert js_api("CONSUMER.MSG.NEXT", "CHAT", durable) in rights.publish_allow


async def test_a_batch_line_is_folded_audited_exported_and_rated(api: Api) -> None:
    await serve_model(api.nbus)
    chat_id = new_id("c")
    now = schemas.now()
    created = ChatCreated(
        event_id=new_id("e"), chat_id=chat_id, at=now, owner_id="ann", title="t", model="demo"
    )
    await bus.append_event(api.nbus.js, created, expected_subject_seq=0)
    posted = MessagePosted(
        event_id=new_id("e"), chat_id=chat_id, at=now, message_id="m1", author_id="ann", content="a question"
    )
    await bus.append_event(api.nbus.js, posted)
    line = _request(chat_id, "q1")
    await bus.append_event(api.nbus.js, line)
    seq = await complete_reply(api, chat_id, line.reply_id, "an answer")
    assert line.job is not None

    # The read model folds it: its job is listed (with its batch), its reply is in the chat.
    status, listed = await api.call("GET", f"/v1/chats/{chat_id}/messages?min_seq={seq}", "ann")
    assert status == 200, listed
    assert [(r["reply_id"], r["text"]) for r in listed["replies"]] == [(line.reply_id, "an answer")]
    status, job = await api.call("GET", f"/v1/jobs/{line.job.job_id}", "ann")
    assert status == 200 and job["status"] == "done", job
    # A rating finds the reply's request on either lane.
    url = f"/v1/chats/{chat_id}/replies/{line.reply_id}/feedback"
    assert (await api.call("PUT", url, "ann", json={"rating": "up"}))[0] == 200

    # The audit reads it as a request (nothing skipped as misfiled), and export includes it.
    status, trail = await api.call("GET", f"/v1/admin/chats/{chat_id}/audit", "root")
    assert status == 200, trail
    types = [e["type"] for e in trail["entries"]]
    assert types[:4] == [
        "chat.created",
        "chat.message.posted",
        "chat.reply.requested",
        "chat.reply.completed",
    ]
    log = await read_log(api.nbus)
    document = chats_json(log, ExportFilter(user="ann", consent_only=False))
    (chat,) = [c for c in document["chats"] if c["chat_id"] == chat_id]
    assert "chat.reply.requested" in [e["type"] for e in chat["events"]]
    everyone = ExportFilter(user="ann", consent_only=False)
    rows = [r for r in sft_rows(log, everyone, "active", hash_ref) if r.chat_id == chat_id]
    assert [r.messages[-1]["content"] for r in rows] == ["an answer"]
