"""The chat client's HTTP side: JSON calls with an API key, and a chat's live feed over WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

RECONNECT_SECONDS = 1.0
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)


class ApiFailure(Exception):
    """The API refused or could not be reached: `message` is what to show the user."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def __str__(self) -> str:
        return f"{self.message} ({self.status} {self.code})" if self.status else self.message


class Frame(msgspec.Struct, frozen=True, kw_only=True):
    """One live frame: `event` (a CHAT event, seq = its CHAT sequence) or `tokens` (seq = TOKENS)."""

    kind: str
    seq: int
    event: msgspec.Raw


_frame = msgspec.json.Decoder(Frame)


class ChatApi:
    """One user's connection to a chatbus API: `base` like http://127.0.0.1:8080, and an API key."""

    def __init__(self, base: str, key: str) -> None:
        self.base = base.rstrip("/")
        self.key = key
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ChatApi:
        headers = {"Authorization": f"Bearer {self.key}"}
        self.session = aiohttp.ClientSession(headers=headers, timeout=TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self.session is None:
            raise RuntimeError("use ChatApi in `async with`")
        return self.session

    async def call(self, method: str, path: str, body: object = None) -> Any:
        """The JSON answer of one request; ApiFailure with the API's own message when it refuses."""
        data = None if body is None else msgspec.json.encode(body)
        headers = {} if data is None else {"Content-Type": "application/json"}
        try:
            async with self._http().request(method, self.base + path, data=data, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiFailure(0, "unreachable", f"cannot reach the API at {self.base}: {exc}") from None
        try:
            answer = msgspec.json.decode(raw) if raw else {}
        except msgspec.DecodeError:
            answer = {}
        if status >= 400:
            if not isinstance(answer, dict):
                answer = {}
            error = str(answer.get("error") or "error")
            message = str(answer.get("message") or raw[:200].decode(errors="replace") or "no answer")
            raise ApiFailure(status, error, message)
        return answer

    async def feed(self, chat_id: str, chat_seq: int = 0, token_seq: int = 0) -> AsyncIterator[Frame]:
        """The chat's live frames from these sequences on; after a cut it reconnects where it was.

        Ends (ApiFailure) only when the API refuses the feed itself (no such chat, key revoked).
        """
        url = self.base.replace("http", "ws", 1) + f"/v1/chats/{chat_id}/ws"
        while True:
            query = {"after_chat_seq": str(chat_seq), "after_token_seq": str(token_seq)}
            try:
                async with self._http().ws_connect(url, params=query, heartbeat=20) as ws:
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        try:
                            frame = _frame.decode(msg.data)
                        except msgspec.DecodeError:
                            continue  # a pong, or a frame of a newer server: nothing to show
                        if frame.kind == "tokens":
                            token_seq = max(token_seq, frame.seq)
                        elif frame.kind == "event":
                            chat_seq = max(chat_seq, frame.seq)
                        yield frame
                    if ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION:
                        raise ApiFailure(403, "access_revoked", "the API closed the feed: access revoked")
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403, 404):
                    raise ApiFailure(
                        exc.status, "refused", f"the live feed was refused ({exc.message})"
                    ) from None
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass  # the API restarted or the network blinked: resume from where we were
            await asyncio.sleep(RECONNECT_SECONDS)
