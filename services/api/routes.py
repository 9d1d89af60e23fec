"""The route table: the one list that registers every route and describes it in the OpenAPI document."""

from __future__ import annotations

from schemas.api import (
    AcceptedResponse,
    ChatCreatedResponse,
    ConsentRequest,
    CreateChatRequest,
    FeedbackRequest,
    FloorActionRequest,
    FloorActionResponse,
    ImageFromUrlRequest,
    ImageInfo,
    JoinRequest,
    LoginRequest,
    LoginResponse,
    MeResponse,
    ModelList,
    ParticipantResponse,
    PostMessageRequest,
    PostMessageResponse,
    RegenerateRequest,
    RegisterRequest,
    RenameChatRequest,
    SelectBranchRequest,
    StatusResponse,
    UserErasedResponse,
)
from schemas.api_arena import (
    BattleCreated,
    BattleRequest,
    CategoryRequest,
    ContinueRequest,
    ContinueResponse,
    VoteRequest,
    VoteResponse,
)
from schemas.api_bots import BotBody, BotFile, BotList, BotRequest, BotsImported
from schemas.api_leaderboard import LeaderboardBody
from schemas.api_webhooks import WebhookSecretResponse
from schemas.audit import AuditTrail
from schemas.openai import ChatCompletion, ChatCompletionRequest
from schemas.queries import ChatDetail, ChatPage, MessagesAnswer
from services.api import (
    live,
    routes_arena,
    routes_audit,
    routes_batches,
    routes_bots,
    routes_chats,
    routes_erasure,
    routes_images,
    routes_jobs,
    routes_leaderboard,
    routes_llamalith,
    routes_me,
    routes_misc,
    routes_openai,
    routes_party,
    routes_ratings,
    routes_session,
    routes_ui,
)
from services.api.route_spec import Param, Route

MIN_SEQ = Param(
    "min_seq", "integer", "Read your writes: wait until the read model has applied this CHAT seq."
)
AFTER = (
    Param("after_chat_seq", "integer", "Send CHAT events after this stream sequence (default 0: all)."),
    Param(
        "after_token_seq", "integer", "Send TOKENS deltas after this stream sequence (default 0: all kept)."
    ),
)
CHAT = "/v1/chats/{chat_id}"
BOT = "/v1/bots/{bot_id}"
IF_MATCH = Param(
    "If-Match", "string", 'The bot\'s `version` you read, e.g. "42": 409 if it changed since.', "header"
)

ROUTES: tuple[Route, ...] = (
    Route("GET", "/", routes_ui.index, "ui", public=True, media="text/html"),
    Route("GET", "/static/{path:.+}", routes_ui.static, "ui.static", public=True, media="text/html"),
    Route("GET", "/healthz", routes_misc.healthz, "healthz", answer=StatusResponse, public=True),
    Route("GET", "/readyz", routes_misc.readyz, "readyz", answer=StatusResponse, public=True),
    Route("GET", "/v1/openapi.json", routes_misc.openapi, "openapi", public=True),
    Route("GET", "/v1/models", routes_misc.list_models, "models", answer=ModelList, dialect="openai"),
    Route(
        "POST",
        "/v1/chat/completions",
        routes_openai.chat_completions,
        "openai.chat_completions",
        body=ChatCompletionRequest,
        answer=ChatCompletion,
        media="application/json",
        dialect="openai",
    ),
    Route(
        "POST",
        "/v1/login",
        routes_session.login,
        "login",
        body=LoginRequest,
        answer=LoginResponse,
        public=True,
    ),
    Route("POST", "/v1/logout", routes_session.logout, "logout", answer=StatusResponse),
    Route(
        "POST",
        "/v1/register",
        routes_session.register,
        "register",
        status=201,
        body=RegisterRequest,
        answer=StatusResponse,
        public=True,
    ),
    Route("GET", "/v1/me", routes_me.me, "me", answer=MeResponse),
    Route(
        "PUT",
        "/v1/me/consent",
        routes_me.set_consent,
        "me.consent",
        body=ConsentRequest,
        answer=AcceptedResponse,
    ),
    Route(
        "POST",
        "/v1/me/webhook-secret",
        routes_me.make_webhook_secret,
        "me.webhook_secret",
        status=201,
        answer=WebhookSecretResponse,
    ),
    Route(
        "POST",
        "/v1/chats",
        routes_chats.create_chat,
        "chats.create",
        status=201,
        body=CreateChatRequest,
        answer=ChatCreatedResponse,
    ),
    Route(
        "GET",
        "/v1/chats",
        routes_chats.list_chats,
        "chats.list",
        answer=ChatPage,
        params=(
            Param("limit", "integer", "Page size, 1 to CHATBUS_MAX_PAGE_SIZE (default 50)."),
            Param("cursor", "string", "The `next_cursor` of the previous page."),
            Param(
                "origin",
                "string",
                "Which chats: `chat` (default: made in the UI or with /v1/chats), `openai` "
                "(/v1/chat/completions), `jobs` (/v1/jobs), or `all`.",
            ),
            MIN_SEQ,
        ),
    ),
    Route("GET", CHAT, routes_chats.get_chat, "chats.get", answer=ChatDetail, params=(MIN_SEQ,)),
    Route(
        "PATCH",
        CHAT,
        routes_chats.rename_chat,
        "chats.rename",
        body=RenameChatRequest,
        answer=AcceptedResponse,
    ),
    Route("DELETE", CHAT, routes_chats.delete_chat, "chats.delete", answer=AcceptedResponse),
    Route("POST", f"{CHAT}/restore", routes_chats.restore_chat, "chats.restore", answer=AcceptedResponse),
    Route("POST", f"{CHAT}/erase", routes_erasure.erase_chat_route, "chats.erase", answer=AcceptedResponse),
    Route(
        "POST",
        "/v1/admin/users/{user_id}/erase",
        routes_erasure.erase_user_route,
        "admin.users.erase",
        answer=UserErasedResponse,
    ),
    Route(
        "POST",
        f"{CHAT}/messages",
        routes_chats.post_message,
        "messages.post",
        status=202,
        body=PostMessageRequest,
        answer=PostMessageResponse,
    ),
    Route(
        "POST",
        f"{CHAT}/messages/{{message_id}}/edit",
        routes_chats.edit_message,
        "messages.edit",
        status=202,
        body=PostMessageRequest,
        answer=PostMessageResponse,
    ),
    Route(
        "POST",
        f"{CHAT}/replies/{{reply_id}}/regenerate",
        routes_chats.regenerate_reply,
        "replies.regenerate",
        status=202,
        body=RegenerateRequest,
        answer=PostMessageResponse,
    ),
    Route(
        "GET", "/v1/admin/chats/{chat_id}/audit", routes_audit.audit_chat, "admin.audit", answer=AuditTrail
    ),
    Route(
        "PUT",
        f"{CHAT}/replies/{{reply_id}}/feedback",
        routes_ratings.rate_reply,
        "replies.feedback",
        body=FeedbackRequest,
        answer=AcceptedResponse,
    ),
    Route(
        "POST",
        f"{CHAT}/branch",
        routes_chats.select_branch,
        "chats.branch",
        body=SelectBranchRequest,
        answer=AcceptedResponse,
    ),
    Route(
        "POST",
        f"{CHAT}/participants",
        routes_party.join,
        "participants.join",
        status=201,
        body=JoinRequest,
        answer=ParticipantResponse,
    ),
    Route(
        "DELETE",
        f"{CHAT}/participants/{{participant_id}}",
        routes_party.leave,
        "participants.leave",
        answer=FloorActionResponse,
    ),
    Route(
        "POST",
        f"{CHAT}/floor",
        routes_party.floor_action,
        "chats.floor",
        status=202,
        body=FloorActionRequest,
        answer=FloorActionResponse,
    ),
    Route(
        "POST",
        f"{CHAT}/replies/{{reply_id}}/choose",
        routes_party.choose,
        "replies.choose",
        answer=AcceptedResponse,
    ),
    Route(
        "POST",
        "/v1/arena/battles",
        routes_arena.create_battle,
        "arena.battles.create",
        status=201,
        body=BattleRequest,
        answer=BattleCreated,
    ),
    Route(
        "POST", f"{CHAT}/arena/vote", routes_arena.vote, "arena.vote", body=VoteRequest, answer=VoteResponse
    ),
    Route(
        "POST",
        f"{CHAT}/arena/continue",
        routes_arena.continue_battle,
        "arena.continue_with",
        body=ContinueRequest,
        answer=ContinueResponse,
    ),
    Route(
        "PUT",
        f"{CHAT}/arena/category",
        routes_arena.tag_battle,
        "arena.category",
        body=CategoryRequest,
        answer=AcceptedResponse,
    ),
    Route(
        "GET",
        f"{CHAT}/messages",
        routes_chats.list_messages,
        "messages.list",
        answer=MessagesAnswer,
        params=(
            Param("limit", "integer", "Rows per page, 1 to CHATBUS_MAX_PAGE_SIZE (default: the most)."),
            Param("cursor", "string", "The `next_cursor` of the previous page."),
            MIN_SEQ,
        ),
    ),
    Route(
        "POST",
        f"{CHAT}/replies/{{reply_id}}/cancel",
        routes_chats.cancel_reply,
        "replies.cancel",
        status=202,
        answer=AcceptedResponse,
    ),
    Route(
        "POST",
        "/v1/images",
        routes_images.upload_image,
        "images.upload",
        status=201,
        answer=ImageInfo,
        request_media="image/*",
    ),
    Route(
        "POST",
        "/v1/images/from-url",
        routes_images.image_from_url,
        "images.from_url",
        status=201,
        body=ImageFromUrlRequest,
        answer=ImageInfo,
    ),
    Route(
        "GET",
        "/v1/images/{sha256}",
        routes_images.get_image,
        "images.get",
        media="image/*",
        params=(
            Param("If-None-Match", "string", "The image's ETag: answered 304 when it matches.", "header"),
        ),
    ),
    Route(
        "POST", "/v1/bots", routes_bots.create_bot, "bots.create", status=201, body=BotRequest, answer=BotBody
    ),
    Route(
        "GET",
        "/v1/bots",
        routes_bots.list_bots,
        "bots.list",
        answer=BotList,
        params=(Param("scope", "string", "`usable` (default), `mine`, `store` (public) or `all` (admins)."),),
    ),
    Route(
        "POST",
        "/v1/bots/import",
        routes_bots.import_bots,
        "bots.import_file",
        status=201,
        body=BotFile,
        answer=BotsImported,
    ),
    Route("GET", BOT, routes_bots.get_bot, "bots.get", answer=BotBody),
    Route("PUT", BOT, routes_bots.put_bot, "bots.put", body=BotRequest, answer=BotBody, params=(IF_MATCH,)),
    Route("DELETE", BOT, routes_bots.delete_bot, "bots.delete", answer=AcceptedResponse, params=(IF_MATCH,)),
    Route("GET", f"{BOT}/export", routes_bots.export_bot, "bots.export", answer=BotFile),
    Route(
        "GET",
        "/v1/arena/leaderboard",
        routes_leaderboard.leaderboard,
        "arena.leaderboard",
        answer=LeaderboardBody,
        params=(
            Param("since", "string", "Only votes cast at or after this time (ISO; UTC unless it says)."),
            Param("until", "string", "Only votes cast before this time (ISO)."),
            Param("category", "string", "Only votes on battles of this category."),
            Param("length_control", "string", "`true`: the answers' token difference as a covariate."),
            Param("anchor", "string", "The model shown at 1000 (default: the first by name)."),
            Param("rounds", "integer", "Bootstrap rounds for the 95% intervals, 10 to 2000 (default 1000)."),
        ),
    ),
    *routes_batches.BATCH_ROUTES,  # /v1/batches[/{id}[/cancel|/output|/errors]], /v1/files[/{id}[/content]]
    *routes_jobs.JOB_ROUTES,  # POST/GET /v1/jobs, /v1/jobs/{job_id}[/cancel], /v1/sessions/{id}/latest
    *routes_llamalith.LLAMALITH_ROUTES,  # /llamalith/chat/api/{submit,jobs,jobs/{job_id},status/{session_id}}
    Route(
        "GET",
        f"{CHAT}/ws",
        live.watch_ws,
        "chats.ws",
        status=101,
        answer=live.LiveFrame,
        params=AFTER,
        media="websocket",
    ),
    Route(
        "GET",
        f"{CHAT}/events",
        live.watch_sse,
        "chats.events",
        answer=live.LiveFrame,
        params=(
            *AFTER,
            Param(
                "Last-Event-ID",
                "string",
                "Resume from `<chat_seq>:<token_seq>` (overrides the query).",
                "header",
            ),
        ),
        media="text/event-stream",
    ),
)
