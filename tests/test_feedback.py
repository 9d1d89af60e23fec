"""Feedback on replies and training consent: events, the read model, the API."""

from __future__ import annotations

import bus
import schemas
from schemas.chat import FeedbackGiven
from tests.apihelp import Api, serve_model


async def test_a_rating_can_be_changed_and_withdrawn_and_only_the_latest_counts(api: Api) -> None:
    await serve_model(api.nbus)
    c = (await api.new_chat(model="demo"))["chat_id"]
    _, posted = await api.call("POST", f"/v1/chats/{c}/messages", json={"content": "hi"})
    url = f"/v1/chats/{c}/replies/{posted['reply_id']}/feedback"
    status, _ = await api.call("PUT", url, json={"rating": "up", "comment": "nice", "tags": ["helpful"]})
    assert status == 200
    status, last = await api.call("PUT", url, json={"rating": "down", "tags": ["wrong", "rude"]})
    assert status == 200
    _, listed = await api.call("GET", f"/v1/chats/{c}/messages?min_seq={last['seq']}")
    assert listed["ratings"] == [
        {"reply_id": posted["reply_id"], "rating": "down", "comment": "", "tags": ["wrong", "rude"]}
    ]
    _, withdrawn = await api.call("PUT", url, json={"rating": None})
    _, listed = await api.call("GET", f"/v1/chats/{c}/messages?min_seq={withdrawn['seq']}")
    assert listed["ratings"][0]["rating"] is None
    events = await bus.read_all(api.nbus.js, "CHAT", [f"chat.{c}.feedback.>"])
    given = [schemas.decode_event(m.data) for m in events]
    assert [e.rating for e in given if isinstance(e, FeedbackGiven)] == ["up", "down", None]
    assert {m.subject for m in events} == {f"chat.{c}.feedback.{posted['reply_id']}.ann"}


async def test_feedback_refuses_bad_input_and_unknown_replies(api: Api) -> None:
    await serve_model(api.nbus)
    c = (await api.new_chat(model="demo"))["chat_id"]
    _, posted = await api.call("POST", f"/v1/chats/{c}/messages", json={"content": "hi"})
    url = f"/v1/chats/{c}/replies/{posted['reply_id']}/feedback"
    for body, expected in (
        ({"rating": "meh"}, 422),
        ({}, 422),
        ({"rating": "up", "tags": ["x"] * 11}, 422),
        ({"rating": "up", "comment": "x" * 2001}, 422),
        ({"rating": "up", "stars": 5}, 422),
    ):
        assert (await api.call("PUT", url, json=body))[0] == expected, body
    status, body = await api.call("PUT", f"/v1/chats/{c}/replies/rnope/feedback", json={"rating": "up"})
    assert (status, body["error"]) == (404, "not_found")
    assert await bus.read_all(api.nbus.js, "CHAT", [f"chat.{c}.feedback.>"]) == []


async def test_training_consent_is_off_by_default_and_each_user_sets_their_own(api: Api) -> None:
    assert await api.call("GET", "/v1/me") == (
        200,
        {
            "user_id": "ann",
            "role": "user",
            "training_consent": False,
            "consent_is_default": True,
            "csrf_token": "",
        },
    )
    status, _ = await api.call("PUT", "/v1/me/consent", json={"allowed": True})
    assert status == 200
    assert (await api.call("GET", "/v1/me"))[1]["training_consent"] is True
    assert (await api.call("GET", "/v1/me", "bob"))[1]["training_consent"] is False
    assert (await api.call("PUT", "/v1/me/consent", json={"allowed": "yes"}))[0] == 422
    await api.call("PUT", "/v1/me/consent", json={"allowed": False})
    assert (await api.call("GET", "/v1/me"))[1] == {
        "user_id": "ann",
        "role": "user",
        "training_consent": False,
        "consent_is_default": False,
        "csrf_token": "",
    }
