"""Login and registration limits, counted in a KV bucket that every API replica shares.

An attempt is counted BEFORE the password is verified, with a revision-checked create or update
(tried again when another replica counted meanwhile), so a hundred parallel guesses against a limit
of five verify five. A count lapses LOGIN_ATTEMPTS_KV.ttl (15 min) after its last change. The counts:

- `login.<name>.<address>`: logins of one name from one address. At the limit that name is refused
  from that address only: its owner still logs in from any other, and a success clears the count.
- `address.<address>`: failed logins from one address whatever the name (a success gives its
  attempt back), so that one address cannot spread its guesses over many names.
- `register.<address>`: accounts asked for from one address.

Names and addresses are hashed (token-safe keys; listing the bucket names nobody). An IPv6 client
counts by its /64, which one subscriber usually holds whole. A count that cannot be read or written
raises a bus error, and the caller refuses: the limits fail closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import random
import time
from dataclasses import dataclass

import bus
from schemas.streams import LOGIN_ATTEMPTS_KV
from schemas.subjects import (
    address_attempts_key,
    login_attempts_key,
    login_attempts_of,
    register_attempts_key,
)

log = logging.getLogger(__name__)

RETRY_AFTER = int(LOGIN_ATTEMPTS_KV.ttl)  # a refused client may try again once its count lapsed
# Each conflict means another write won: an attempt counted (at most `limit` of them before a
# refusal) or one given back. The margin covers the latter under a crowd; beyond it, BusUnavailable.
_CONFLICT_MARGIN = 100


class TooManyAttempts(Exception):
    """A limit is reached: refuse until the count lapses (`retry_after` seconds)."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limits:
    """How many logins each count allows within its window."""

    login: int  # logins of one name from one address
    address: int  # failed logins from one address, any name


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def counted_address(address: str) -> str:
    """The address a client is counted by: IPv4 as is (also when IPv4-mapped), IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an IP (a unix socket): counted as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _login_key(user_id: str, address: str) -> str:
    return login_attempts_key(_digest(user_id), _digest(counted_address(address)))


def _address_key(address: str) -> str:
    return address_attempts_key(_digest(counted_address(address)))


def _count(entry: bus.KVEntry) -> int:
    try:
        return int(entry.value or b"0")
    except ValueError:
        return 1 << 30  # not a count this version wrote: treat the limit as reached


async def _back_off(conflicts: int) -> None:
    """Spread the next round of a crowd writing one count (a few ms, more as conflicts repeat)."""
    await asyncio.sleep(random.uniform(0, 0.002 * min(conflicts + 1, 10)))


async def _take(kv: bus.KV, key: str, limit: int) -> bool:
    """Count one attempt on `key` unless `limit` is reached (False then, nothing written)."""
    for conflicts in range(limit + _CONFLICT_MARGIN):
        try:
            entry = await kv.get(key)
        except bus.NotFound:
            try:
                await kv.create(key, b"1")
                return True
            except bus.Conflict:
                continue  # another attempt created it first
        count = _count(entry)
        if count >= limit:
            return False
        try:
            await kv.update(key, str(count + 1).encode(), entry.revision)
            return True
        except bus.Conflict:
            await _back_off(conflicts)
    raise bus.BusUnavailable(f"{kv.bucket}: {key} kept changing under concurrent attempts")


async def _give_back(kv: bus.KV, key: str) -> None:
    """Uncount one attempt (a success, or an attempt never judged). Failing to leaves the count high:
    the safe side, so it is logged, not raised."""
    for conflicts in range(_CONFLICT_MARGIN):
        try:
            entry = await kv.get(key)
        except bus.NotFound:
            return
        count = _count(entry)
        if count <= 0:
            return
        try:
            await kv.update(key, str(count - 1).encode(), entry.revision)
            return
        except bus.Conflict:
            await _back_off(conflicts)
    log.warning("%s: could not give an attempt back on %s (it lapses with the count)", kv.bucket, key)


BLOCKED_SECONDS = 60.0  # how long a process remembers an address at its limit without asking KV


class BlockedAddresses:
    """The addresses this process last found at their limit, refused without a KV round trip for
    BLOCKED_SECONDS: a flood from one address costs a dict lookup a request, not five KV calls.

    Only a success elsewhere lowers an address's count, so at worst an address that dropped below
    its limit waits BLOCKED_SECONDS longer here. One per API process (tests run several apps)."""

    def __init__(self, seconds: float = BLOCKED_SECONDS, most: int = 100_000) -> None:
        self.seconds = seconds
        self.most = most
        self._until: dict[str, float] = {}

    def blocked(self, key: str) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if until < time.monotonic():
            del self._until[key]
            return False
        return True

    def block(self, key: str) -> None:
        if len(self._until) >= self.most:  # a spread-out attack: forget the oldest (KV still counts)
            for old in list(self._until)[: self.most // 2]:
                del self._until[old]
        self._until[key] = time.monotonic() + self.seconds


@dataclass(frozen=True)
class LoginAttempt:
    """A counted login; tell it how it ended."""

    kv: bus.KV
    login_key: str
    address_key: str

    async def succeeded(self) -> None:
        """The password was right: this name's count at this address is cleared, the address's given back."""
        await self.kv.delete(self.login_key)
        await _give_back(self.kv, self.address_key)

    async def withdrawn(self) -> None:
        """The password was never judged (no hashing thread free): both counts are given back."""
        await _give_back(self.kv, self.login_key)
        await _give_back(self.kv, self.address_key)


async def start_login(
    js: bus.JetStream, user_id: str, address: str, limits: Limits, blocked: BlockedAddresses | None = None
) -> LoginAttempt:
    """Count a login of `user_id` from `address` before its password is verified; TooManyAttempts when
    the address, or this name from this address, is at its limit."""
    kv = bus.KV(js, LOGIN_ATTEMPTS_KV.bucket)
    attempt = LoginAttempt(kv, _login_key(user_id, address), _address_key(address))
    at_limit = TooManyAttempts("too many failed logins from this address; wait 15 minutes")
    if blocked is not None and blocked.blocked(attempt.address_key):
        raise at_limit
    # The name's count first: a crowd guessing one name is stopped there and never writes the address's.
    if not await _take(kv, attempt.login_key, limits.login):
        raise TooManyAttempts("too many failed logins for this user from this address; wait 15 minutes")
    if not await _take(kv, attempt.address_key, limits.address):
        await _give_back(kv, attempt.login_key)  # refused unjudged: no failure of this name
        if blocked is not None:
            blocked.block(attempt.address_key)
        raise at_limit
    return attempt


async def count_registration(js: bus.JetStream, address: str, limit: int) -> None:
    """Count an account asked for from `address`; TooManyAttempts at the limit."""
    key = register_attempts_key(_digest(counted_address(address)))
    if not await _take(bus.KV(js, LOGIN_ATTEMPTS_KV.bucket), key, limit):
        raise TooManyAttempts("too many accounts asked for from this address; wait 15 minutes")


async def unlock(js: bus.JetStream, user_id: str) -> int:
    """Clear the login counts of `user_id` from every address (an administrator's remedy); how many."""
    kv = bus.KV(js, LOGIN_ATTEMPTS_KV.bucket)
    keys = await kv.keys(login_attempts_of(_digest(user_id)))
    for key in keys:
        await kv.delete(key)
    return len(keys)
