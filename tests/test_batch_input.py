"""A batch's input is checked whole before anything is stored: each bad line is named (line number,
custom_id, field) in one 4xx JSON answer, and neither the BATCHES stream nor the object store gets
anything; the limits on lines and bytes hold."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

import bus
from services.api import create_app
from tests.apihelp import SETTINGS, Api, serve_model
from tests.batchhelp import jsonl


def _line(custom_id: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "body": {"messages": [{"role": "user", "content": "hi"}], **body}}


def _input(*lines: Any) -> bytes:
    return b"\n".join(line if isinstance(line, bytes) else msgspec.json.encode(line) for line in lines)


async def _stored(api: Api) -> tuple[int, int]:
    """What BATCHES and the object store `batch_inputs` hold now."""
    objects = len(await bus.list_objects(api.nbus.js, "batch_inputs"))
    return await bus.last_seq(api.nbus.js, "BATCHES"), objects


async def _post(
    api: Api, data: bytes, content_type: str = "application/jsonl", query: str = "?model=demo"
) -> Any:
    return await api.call("POST", f"/v1/batches{query}", data=data, headers={"Content-Type": content_type})


async def test_every_bad_line_is_named_and_nothing_is_stored(api: Api) -> None:
    await serve_model(api.nbus)
    before = await _stored(api)
    data = _input(
        _line("ok-1"),
        b"{not json",
        _line("ok-1"),
        {**_line("u"), "url": "/v1/completions"},
        {**_line("m"), "method": "GET"},
        _line("s", stream=True),
        _line("t", temperature=9),
        {"body": {"messages": []}},
        _line("x", frequency_penalty=1.0),
        b"",
        _line("ok-2"),
    )
    status, body = await _post(api, data)
    assert status == 400, body
    error = body["error"]
    assert error["code"] == "invalid_batch" and "nothing was stored" in error["message"]
    named = {(line["line"], line.get("custom_id"), line.get("param")) for line in error["lines"]}
    assert named == {
        (2, None, None),
        (3, "ok-1", "custom_id"),
        (4, "u", "url"),
        (5, "m", "method"),
        (6, "s", "body.stream"),
        (7, "t", "body.temperature"),
        (8, None, None),
        (9, "x", "body.frequency_penalty"),
    }
    assert all(line["message"] for line in error["lines"])
    assert await _stored(api) == before


async def test_a_model_nobody_serves_is_a_409_naming_its_lines(api: Api) -> None:
    await serve_model(api.nbus)
    before = await _stored(api)
    status, body = await _post(
        api, _input(_line("a"), _line("b", model="nosuch"), _line("c", model="nosuch"))
    )
    assert status == 409, body
    assert body["error"]["code"] == "model_unavailable"
    assert [(line["line"], line["custom_id"]) for line in body["error"]["lines"]] == [(2, "b"), (3, "c")]
    assert await _stored(api) == before
    # Without a model anywhere (no ?model=, none in the line, no default): the line says so.
    status, body = await _post(api, _input(_line("a")), query="")
    assert status == 400 and body["error"]["lines"][0]["param"] == "body.model", body


async def test_other_bad_requests_are_4xx_with_a_json_body(api: Api) -> None:
    await serve_model(api.nbus)
    before = await _stored(api)
    assert (await _post(api, b"", "application/jsonl"))[0] == 400
    status, body = await _post(api, b"hello", "application/octet-stream")
    assert status == 415 and body["error"]["message"]
    status, body = await _post(api, jsonl(1), query="?model=demo&completion_window=9d")
    assert status == 400 and body["error"]["param"] == "completion_window"
    status, body = await _post(api, jsonl(1), query="?model=demo&metadata=nope")
    assert status == 400 and body["error"]["param"] == "metadata"
    status, body = await api.call("POST", "/v1/batches", json={"input_file_id": "fnosuch"})
    assert status == 404 and body["error"]["message"]
    status, body = await api.call(
        "POST", "/v1/batches", json={"input_file_id": "f1", "endpoint": "/v1/embeddings"}
    )
    assert status == 400 and body["error"]["param"] == "endpoint"
    status, body = await api.call("POST", "/v1/files", data=b"x", headers={"Content-Type": "text/plain"})
    assert status == 415
    assert await _stored(api) == before


@pytest.mark.parametrize(("lines", "limit_bytes", "status"), [(6, 100_000, 400), (3, 300, 413)])
async def test_the_limits_on_lines_and_bytes(api: Api, lines: int, limit_bytes: int, status: int) -> None:
    await serve_model(api.nbus)
    before = await _stored(api)
    settings = msgspec.structs.replace(SETTINGS, batch_max_lines=5, batch_max_bytes=limit_bytes)
    async with TestClient(TestServer(create_app(settings, api.nbus))) as client:
        headers = {**api.auth("ann"), "Content-Type": "application/jsonl"}
        async with client.post("/v1/batches?model=demo", data=jsonl(lines), headers=headers) as resp:
            body = await resp.json()
            assert resp.status == status, body
        if status == 400:
            assert "at most 5" in body["error"]["message"] and body["error"]["lines"][0]["line"] == 6
        else:
            assert body["error"]["code"] == "too_large"
    assert await _stored(api) == before
