"""Bearer-key authentication: every request reads the key's latest IDENTITY event (no cache to go stale)."""

from __future__ import annotations

import contextlib
import ipaddress

from aiohttp import web
from aiohttp.typedefs import Handler

from identity.accounts import Principal, UserExists, add_user, authenticate, is_valid_user_id, user_role
from identity.sessions import COOKIE, CSRF_HEADER, SessionInfo, csrf_ok, find_session
from services.api.errors import ApiError
from services.api.keys import BUS, PUBLIC_ROUTES, SETTINGS

PRINCIPAL = web.RequestKey("principal", Principal)
SESSION = web.RequestKey("session", SessionInfo)


def principal_of(request: web.Request) -> Principal:
    """The authenticated caller of a request that passed the auth middleware."""
    return request[PRINCIPAL]


def bearer_key(request: web.Request) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="chatbus"'})


def session_of(request: web.Request) -> SessionInfo | None:
    """The browser session a request was authenticated with (None for API keys)."""
    return request.get(SESSION)


PROXY_KEY_ID = "proxy"  # the key_id of a principal the trusted proxy named


def _trusted(request: web.Request) -> bool:
    return request.remote is not None and _is_proxy(request, request.remote)


def _is_proxy(request: web.Request, remote: str) -> bool:
    settings = request.app[SETTINGS]
    if not settings.trusted_proxies:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket shows 10.0.0.1 as ::ffff:10.0.0.1
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.trusted_proxies)


def via_proxy(request: web.Request) -> bool:
    """True when the trusted proxy named the caller (no session, no key: the proxy vouches)."""
    principal = request.get(PRINCIPAL)
    return principal is not None and principal.key_id == PROXY_KEY_ID


async def proxy_principal_now(request: web.Request) -> Principal | None:
    """The proxy-named caller as the log has them now (role included); None once the user is gone.

    For long-lived feeds: the proxy vouched for the user when the connection opened and cannot
    take it back, so what can change is the account itself (erased, or its role).
    """
    user_id = principal_of(request).user_id
    role = await user_role(request.app[BUS].js, user_id)
    return None if role is None else Principal(user_id=user_id, role=role, key_id=PROXY_KEY_ID)


def client_address(request: web.Request) -> str:
    """The client's address: the peer's, or behind trusted proxies the nearest hop of X-Forwarded-For
    that is not one of them (what the proxies saw; hops further left are the client's to write)."""
    address = request.remote or ""
    if not _trusted(request):
        return address
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_proxy(request, hop):
            return hop
    return address


def own_origin(request: web.Request) -> str:
    """The origin of this site's pages as the browser sees it (https behind a TLS proxy)."""
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    return f"{'https' if secure else 'http'}://{request.host}".lower()


def from_our_pages(request: web.Request) -> bool:
    """Whether the request's Origin is this site's own or one of CHATBUS_ALLOWED_ORIGINS: the one rule
    for what browser credentials (a session, the trusted proxy's login) may do across sites."""
    origin = request.headers.get("Origin")
    allowed = {own_origin(request), *(o.lower() for o in request.app[SETTINGS].allowed_origins)}
    return origin is not None and origin.lower() in allowed


def check_login_origin(request: web.Request) -> None:
    """Logging in and registering only from this site's pages or an allowed origin (no login CSRF: a page
    elsewhere could log the victim into the attacker's account). Clients that send no Origin are no
    browser posting across sites."""
    origin = request.headers.get("Origin")
    if origin is not None and not from_our_pages(request):
        raise ApiError(
            403,
            "bad_origin",
            f"logging in is only possible from {own_origin(request)} (or CHATBUS_ALLOWED_ORIGINS), "
            f"not from {origin}",
        )


async def _from_trusted_proxy(request: web.Request) -> Principal | None:
    """The user a trusted reverse proxy (oauth2-proxy …) names in its header; None if not from one.

    Accounts are created on first sight (the proxy authenticated them). Such requests carry no
    CSRF token, so a write must come from this site's own pages (Origin). The header must come once:
    two values mean a client's own header got through the proxy, and neither can be believed.
    """
    settings = request.app[SETTINGS]
    values = request.headers.getall(settings.trusted_user_header, [])
    if not values or not _trusted(request):
        return None
    if len(values) > 1:
        name = settings.trusted_user_header
        raise ApiError(400, "bad_request", f"{name} came {len(values)} times; the proxy must send it once")
    user_id = values[0].strip().lower()
    if not user_id:
        return None
    js = request.app[BUS].js
    if not is_valid_user_id(user_id):
        raise _unauthorized(f"the proxy's user name {user_id!r} is not a valid user id")
    role = await user_role(js, user_id)
    if role is None:
        with contextlib.suppress(UserExists):
            await add_user(js, user_id)
        role = await user_role(js, user_id)
    if role is None:  # the name exists but is being erased: it acts as nobody
        raise _unauthorized(f"the user {user_id} is being erased")
    if request.method not in ("GET", "HEAD", "OPTIONS") and not from_our_pages(request):
        raise ApiError(403, "bad_origin", "writes through the proxy must come from this site's pages")
    _refuse_other_sites(request)
    return Principal(user_id=user_id, role=role, key_id=PROXY_KEY_ID)


def _refuse_other_sites(request: web.Request) -> None:
    """Browser credentials (a session cookie, the proxy's login) act only for this site's pages: a request
    that says it comes from another origin is refused, reads too, so that no CORS grant
    (CHATBUS_CORS_ORIGINS) lets another site's script read a user's data with their cookie. Such
    scripts send an API key. A request without Origin is a same-site read or no browser at all."""
    origin = request.headers.get("Origin")
    if origin is not None and not from_our_pages(request):
        raise ApiError(
            403,
            "bad_origin",
            f"a browser session works only on {own_origin(request)}'s pages (or CHATBUS_ALLOWED_ORIGINS), "
            f"not from {origin}: send `Authorization: Bearer <api key>` instead",
        )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate by API key (Bearer) or session cookie; 401 otherwise, except on public routes.

    A cookie-authenticated write (any method but GET/HEAD/OPTIONS) must carry the session's CSRF
    token in `X-CSRF-Token`, else 403.
    """
    match = request.match_info
    if match.http_exception is not None or match.route.name in request.app[PUBLIC_ROUTES]:
        return await handler(request)
    js = request.app[BUS].js
    key = bearer_key(request)
    if key is not None:
        principal = await authenticate(js, key)
        if principal is None:
            raise _unauthorized("the API key is invalid or revoked")
        request[PRINCIPAL] = principal
        return await handler(request)
    proxied = await _from_trusted_proxy(request)
    if proxied is not None:
        request[PRINCIPAL] = proxied
        return await handler(request)
    session = await find_session(js, request.cookies.get(COOKIE))
    if session is None:
        raise _unauthorized("log in (POST /v1/login) or send `Authorization: Bearer <api key>`")
    role = await user_role(js, session.user_id)
    if role is None:
        raise _unauthorized("the session's user no longer exists")
    _refuse_other_sites(request)
    if request.method not in ("GET", "HEAD", "OPTIONS") and not csrf_ok(
        session, request.headers.get(CSRF_HEADER)
    ):
        raise ApiError(403, "csrf", f"send the session's CSRF token in {CSRF_HEADER} (from POST /v1/login)")
    request[PRINCIPAL] = Principal(user_id=session.user_id, role=role, key_id="session")
    request[SESSION] = session
    return await handler(request)
