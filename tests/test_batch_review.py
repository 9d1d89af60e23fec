"""Fixes of the batches review (issue 16): each test here failed before its fix. An unknown model in a
long batch does not take the API down; bad bytes and malformed uploads are 4xx, never a 500; every bad
line is counted; the SDK's extra fields are taken; our 409s tell the SDK not to retry."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import msgspec
from aiohttp.test_utils import TestClient, TestServer

import bus
from bus import Bus
from identity.accounts import add_user, issue_key
from schemas.batch_lines import PlanLine, PlanTurn
from schemas.sampling import SamplingParams
from services.api import create_app
from services.api.batches import store_batch
from tests.apihelp import SETTINGS, Api, serve_model


def _line(custom_id: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "body": {"messages": [{"role": "user", "content": "hi"}], **body}}


async def _post(api: Api, data: bytes, query: str = "?model=demo") -> Any:
    return await api.call(
        "POST", f"/v1/batches{query}", data=data, headers={"Content-Type": "application/jsonl"}
    )


async def test_a_long_batch_of_an_unknown_model_is_one_409_and_the_api_stays_up(api: Api) -> None:
    await serve_model(api.nbus)
    data = b"\n".join(msgspec.json.encode(_line(f"c{i}", model="nosuchmodel")) for i in range(2000))
    consumers_before = (await api.nbus.js.stream_info("KV_workers")).state.consumer_count
    status, body = await _post(api, data)
    assert status == 409, body
    assert body["error"]["code"] == "model_unavailable" and "2000 lines" in body["error"]["message"]
    assert len(body["error"]["lines"]) == 20
    # One presence read for the whole batch, not one a line (each leaves a consumer behind a while).
    consumers_after = (await api.nbus.js.stream_info("KV_workers")).state.consumer_count
    assert consumers_after - consumers_before <= 1
    status, models = await api.call("GET", "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["demo"], models


async def test_too_many_models_in_one_batch_is_a_400(api: Api) -> None:
    await serve_model(api.nbus)
    data = b"\n".join(msgspec.json.encode(_line(f"c{i}", model=f"m{i}")) for i in range(40))
    status, body = await _post(api, data)
    assert status == 400 and body["error"]["code"] == "invalid_batch", body
    assert body["error"]["message"].startswith("24 lines")
    assert all("at most 16 models" in line["message"] for line in body["error"]["lines"])


async def test_bytes_that_are_not_utf8_are_a_line_error(api: Api) -> None:
    await serve_model(api.nbus)
    before = await bus.last_seq(api.nbus.js, "BATCHES")
    data = b"\n".join(
        [
            b'{"custom_id":"a","body":{"messages":[{"role":"user","content":"\xff\xfe"}]}}',
            b'{"custom_id":"\xff","body":{"messages":[{"role":"user","content":"hi"}]}}',
            msgspec.json.encode(_line("ok", model="demo")),
        ]
    )
    status, body = await _post(api, data)
    assert status == 400, body
    assert [line["line"] for line in body["error"]["lines"]] == [1, 2]
    assert all("UTF-8" in line["message"] for line in body["error"]["lines"])
    assert body["error"]["type"] == "invalid_request_error" and "param" in body["error"]
    # The same through an uploaded file and the JSON create call.
    status, upload = await _upload(api, data)
    assert status == 200, upload
    status, body = await api.call("POST", "/v1/batches", json={"input_file_id": upload["id"]})
    assert status == 400 and [line["line"] for line in body["error"]["lines"]] == [1, 2], body
    assert await bus.last_seq(api.nbus.js, "BATCHES") == before + 1  # the upload only


async def _upload(api: Api, data: bytes) -> Any:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return await api.call("POST", "/v1/files", data=body, headers=headers)


async def test_a_malformed_multipart_upload_is_a_400(api: Api) -> None:
    for content_type, data in [
        ("multipart/form-data; boundary=x", b"--x\r\n"),
        (
            "multipart/form-data",
            b"--x\r\nContent-Disposition: form-data; name=purpose\r\n\r\nbatch\r\n--x--\r\n",
        ),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=file\r\n\r\nabc"),
    ]:
        status, body = await api.call("POST", "/v1/files", data=data, headers={"Content-Type": content_type})
        assert status == 400, (content_type, data, body)
        assert body["error"]["message"] and body["error"]["type"] == "invalid_request_error"


async def test_every_bad_line_is_counted_though_only_20_are_named(api: Api) -> None:
    await serve_model(api.nbus)
    data = b"\n".join(msgspec.json.encode(_line(f"c{i}", stream=True)) for i in range(30))
    status, body = await _post(api, data)
    assert status == 400 and body["error"]["message"].startswith("30 lines"), body
    assert len(body["error"]["lines"]) == 20


async def test_a_download_the_read_model_cannot_answer_is_a_503_not_an_empty_file(nbus: Bus) -> None:
    """No projector runs here: the output and errors files are 503s, not empty 200s."""
    await add_user(nbus.js, "ann")
    key = (await issue_key(nbus.js, "ann"))[1]
    turns = [PlanTurn(role="user", content="hi")]
    plan = [PlanLine(index=0, custom_id="a", model="demo", params=SamplingParams(), turns=turns)]
    created = await store_batch(nbus.js, "ann", plan, model="demo", window="1h", metadata=None)
    settings = msgspec.structs.replace(SETTINGS, read_timeout=0.5)
    async with TestClient(TestServer(create_app(settings, nbus))) as client:
        for path in ("output", "errors"):
            url = f"/v1/batches/{created.batch_id}/{path}"
            async with client.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
                body = await resp.json(content_type=None)
                assert resp.status == 503 and body["error"]["code"] == "unavailable", body


async def test_metadata_keys_and_values_have_openais_limits(api: Api) -> None:
    await serve_model(api.nbus)
    data = msgspec.json.encode(_line("a"))
    for metadata, status in [({"k" * 65: "v"}, 400), ({"k": "v" * 513}, 400), ({"k" * 64: "v" * 512}, 200)]:
        query = "?model=demo&" + urlencode({"metadata": json.dumps(metadata)})
        answer, body = await _post(api, data, query=query)
        assert answer == status, body
        if status == 400:
            assert body["error"]["param"] == "metadata", body
