"""Every NATS subject chatbus uses, built and parsed here and nowhere else.

Subjects put the aggregate id before the event kind (`chat.<chat_id>.message.posted`), so one
pattern (`chat.<chat_id>.>`) is one conversation. Ids are token-safe (`[A-Za-z0-9_-]`): a subject
splits on dots into exactly the tokens its builder joined, which is what makes the parsers exact.

A builder's id arguments may be the wildcards `ANY` (`*`, one token) or `REST` (`>`, the final
tokens) to make a pattern, e.g. `feedback(ANY, ANY, user_id)` is every rating a user gave.
Parsers take a concrete subject and return a typed value, or None when it is not of that shape.

Also here: KV keys that hold several tokens (worker presence), KV and JetStream API subjects,
micro service endpoints and the advisory a worker listens to. What each NATS user may publish and
subscribe to is schemas/permissions.py, built from these builders.

This package is the one home of those rules, a module per area (roots, chat, identity, image, kv,
nats_api; events: the subject of each event, which events a subject may carry (`belongs`: exactly
the one `subject_of` names, checked by every reader), and every root and kind); import from the package.
"""

from schemas.subjects.arena import (
    ARENA_KINDS as ARENA_KINDS,
)
from schemas.subjects.arena import (
    arena_pool as arena_pool,
)
from schemas.subjects.arena import (
    one_voter as one_voter,
)
from schemas.subjects.arena import (
    parse_arena_subject as parse_arena_subject,
)
from schemas.subjects.arena import (
    voter_excluded as voter_excluded,
)
from schemas.subjects.batch import (
    BATCH_KINDS as BATCH_KINDS,
)
from schemas.subjects.batch import (
    BatchKind as BatchKind,
)
from schemas.subjects.batch import (
    BatchSubject as BatchSubject,
)
from schemas.subjects.batch import (
    FileSubject as FileSubject,
)
from schemas.subjects.batch import (
    batch_event as batch_event,
)
from schemas.subjects.batch import (
    batches_of_kind as batches_of_kind,
)
from schemas.subjects.batch import (
    file_uploaded as file_uploaded,
)
from schemas.subjects.batch import (
    one_batch as one_batch,
)
from schemas.subjects.batch import (
    parse_batch_subject as parse_batch_subject,
)
from schemas.subjects.bot import (
    BOT_KINDS as BOT_KINDS,
)
from schemas.subjects.bot import (
    BotKind as BotKind,
)
from schemas.subjects.bot import (
    BotSubject as BotSubject,
)
from schemas.subjects.bot import (
    bot_event as bot_event,
)
from schemas.subjects.bot import (
    one_bot as one_bot,
)
from schemas.subjects.bot import (
    parse_bot_subject as parse_bot_subject,
)
from schemas.subjects.chat import (
    BATCH_LANE as BATCH_LANE,
)
from schemas.subjects.chat import (
    CHAT_KINDS as CHAT_KINDS,
)
from schemas.subjects.chat import (
    REPLY_ENDS as REPLY_ENDS,
)
from schemas.subjects.chat import (
    REPLY_KINDS as REPLY_KINDS,
)
from schemas.subjects.chat import (
    ChatKind as ChatKind,
)
from schemas.subjects.chat import (
    ChatSubject as ChatSubject,
)
from schemas.subjects.chat import (
    FeedbackSubject as FeedbackSubject,
)
from schemas.subjects.chat import (
    Lane as Lane,
)
from schemas.subjects.chat import (
    ReplyEventKind as ReplyEventKind,
)
from schemas.subjects.chat import (
    ReplyKind as ReplyKind,
)
from schemas.subjects.chat import (
    ReplySubject as ReplySubject,
)
from schemas.subjects.chat import (
    TokensSubject as TokensSubject,
)
from schemas.subjects.chat import (
    all_votes as all_votes,
)
from schemas.subjects.chat import (
    any_reply_request as any_reply_request,
)
from schemas.subjects.chat import (
    chat_event as chat_event,
)
from schemas.subjects.chat import (
    chat_tokens as chat_tokens,
)
from schemas.subjects.chat import (
    context_subjects as context_subjects,
)
from schemas.subjects.chat import (
    feedback as feedback,
)
from schemas.subjects.chat import (
    one_chat as one_chat,
)
from schemas.subjects.chat import (
    one_reply as one_reply,
)
from schemas.subjects.chat import (
    parse_chat_subject as parse_chat_subject,
)
from schemas.subjects.chat import (
    parse_reply_subject as parse_reply_subject,
)
from schemas.subjects.chat import (
    parse_tokens_subject as parse_tokens_subject,
)
from schemas.subjects.chat import (
    reply_ends_of_every_chat as reply_ends_of_every_chat,
)
from schemas.subjects.chat import (
    reply_event as reply_event,
)
from schemas.subjects.chat import (
    reply_kind as reply_kind,
)
from schemas.subjects.chat import (
    reply_requested as reply_requested,
)
from schemas.subjects.chat import (
    reply_requests_of as reply_requests_of,
)
from schemas.subjects.chat import (
    reply_tokens as reply_tokens,
)
from schemas.subjects.events import (
    KINDS as KINDS,
)
from schemas.subjects.events import (
    ROOTS as ROOTS,
)
from schemas.subjects.events import (
    Event as Event,
)
from schemas.subjects.events import (
    belongs as belongs,
)
from schemas.subjects.events import (
    lane_of as lane_of,
)
from schemas.subjects.events import (
    subject_of as subject_of,
)
from schemas.subjects.identity import (
    APIKEY_KINDS as APIKEY_KINDS,
)
from schemas.subjects.identity import (
    USER_KINDS as USER_KINDS,
)
from schemas.subjects.identity import (
    ApiKeyKind as ApiKeyKind,
)
from schemas.subjects.identity import (
    ApiKeySubject as ApiKeySubject,
)
from schemas.subjects.identity import (
    UserKind as UserKind,
)
from schemas.subjects.identity import (
    UserSubject as UserSubject,
)
from schemas.subjects.identity import (
    apikey_event as apikey_event,
)
from schemas.subjects.identity import (
    one_apikey as one_apikey,
)
from schemas.subjects.identity import (
    one_user as one_user,
)
from schemas.subjects.identity import (
    parse_identity_subject as parse_identity_subject,
)
from schemas.subjects.identity import (
    user_event as user_event,
)
from schemas.subjects.image import (
    ImageKind as ImageKind,
)
from schemas.subjects.image import (
    ImageSubject as ImageSubject,
)
from schemas.subjects.image import (
    image_purged as image_purged,
)
from schemas.subjects.image import (
    image_stored as image_stored,
)
from schemas.subjects.image import (
    one_image as one_image,
)
from schemas.subjects.image import (
    parse_image_subject as parse_image_subject,
)
from schemas.subjects.kv import (
    ALL_KEYS as ALL_KEYS,
)
from schemas.subjects.kv import (
    KV_ROOT as KV_ROOT,
)
from schemas.subjects.kv import (
    KVSubject as KVSubject,
)
from schemas.subjects.kv import (
    PresenceKey as PresenceKey,
)
from schemas.subjects.kv import (
    address_attempts_key as address_attempts_key,
)
from schemas.subjects.kv import (
    kv_key as kv_key,
)
from schemas.subjects.kv import (
    kv_prefix as kv_prefix,
)
from schemas.subjects.kv import (
    kv_stream as kv_stream,
)
from schemas.subjects.kv import (
    login_attempts_key as login_attempts_key,
)
from schemas.subjects.kv import (
    login_attempts_of as login_attempts_of,
)
from schemas.subjects.kv import (
    object_stream as object_stream,
)
from schemas.subjects.kv import (
    parse_kv_subject as parse_kv_subject,
)
from schemas.subjects.kv import (
    parse_presence_key as parse_presence_key,
)
from schemas.subjects.kv import (
    presence_key as presence_key,
)
from schemas.subjects.kv import (
    presence_of as presence_of,
)
from schemas.subjects.kv import (
    register_attempts_key as register_attempts_key,
)
from schemas.subjects.nats_api import (
    DEFAULT_INBOX_PREFIX as DEFAULT_INBOX_PREFIX,
)
from schemas.subjects.nats_api import (
    JS_ROOT as JS_ROOT,
)
from schemas.subjects.nats_api import (
    WORKER_INBOX_PREFIX as WORKER_INBOX_PREFIX,
)
from schemas.subjects.nats_api import (
    AdvisorySubject as AdvisorySubject,
)
from schemas.subjects.nats_api import (
    ServiceSubject as ServiceSubject,
)
from schemas.subjects.nats_api import (
    inboxes as inboxes,
)
from schemas.subjects.nats_api import (
    js_acks as js_acks,
)
from schemas.subjects.nats_api import (
    js_api as js_api,
)
from schemas.subjects.nats_api import (
    js_flow_control as js_flow_control,
)
from schemas.subjects.nats_api import (
    max_deliveries_advisory as max_deliveries_advisory,
)
from schemas.subjects.nats_api import (
    parse_max_deliveries_advisory as parse_max_deliveries_advisory,
)
from schemas.subjects.nats_api import (
    parse_service_endpoint as parse_service_endpoint,
)
from schemas.subjects.nats_api import (
    service_endpoint as service_endpoint,
)
from schemas.subjects.roots import (
    ALL_APIKEYS as ALL_APIKEYS,
)
from schemas.subjects.roots import (
    ALL_ARENA as ALL_ARENA,
)
from schemas.subjects.roots import (
    ALL_BATCH_FILES as ALL_BATCH_FILES,
)
from schemas.subjects.roots import (
    ALL_BATCHES as ALL_BATCHES,
)
from schemas.subjects.roots import (
    ALL_BOTS as ALL_BOTS,
)
from schemas.subjects.roots import (
    ALL_CHATS as ALL_CHATS,
)
from schemas.subjects.roots import (
    ALL_GROUPS as ALL_GROUPS,
)
from schemas.subjects.roots import (
    ALL_IMAGES as ALL_IMAGES,
)
from schemas.subjects.roots import (
    ALL_TOKENS as ALL_TOKENS,
)
from schemas.subjects.roots import (
    ALL_USERS as ALL_USERS,
)
from schemas.subjects.roots import (
    ANY as ANY,
)
from schemas.subjects.roots import (
    APIKEY_ROOT as APIKEY_ROOT,
)
from schemas.subjects.roots import (
    ARENA_ROOT as ARENA_ROOT,
)
from schemas.subjects.roots import (
    BATCH_FILE_ROOT as BATCH_FILE_ROOT,
)
from schemas.subjects.roots import (
    BATCH_ROOT as BATCH_ROOT,
)
from schemas.subjects.roots import (
    BOT_ROOT as BOT_ROOT,
)
from schemas.subjects.roots import (
    CHAT_ROOT as CHAT_ROOT,
)
from schemas.subjects.roots import (
    GROUP_ROOT as GROUP_ROOT,
)
from schemas.subjects.roots import (
    IMAGE_ROOT as IMAGE_ROOT,
)
from schemas.subjects.roots import (
    REST as REST,
)
from schemas.subjects.roots import (
    TOKENS_ROOT as TOKENS_ROOT,
)
from schemas.subjects.roots import (
    USER_ROOT as USER_ROOT,
)
from schemas.subjects.roots import (
    matches as matches,
)
