"""KV buckets' subjects and keys: `$KV.<bucket>.<key>`, and worker presence keys `<alias>.<worker_id>`."""

from __future__ import annotations

import msgspec

from schemas.subjects.roots import ANY, REST, join

KV_ROOT = "$KV"
ALL_KEYS = REST  # every key of a bucket


def kv_stream(bucket: str) -> str:
    """The stream that holds a KV bucket."""
    return f"KV_{bucket}"


def object_stream(bucket: str) -> str:
    """The stream that holds an object-store bucket (chunks and metadata)."""
    return f"OBJ_{bucket}"


def kv_prefix(bucket: str) -> str:
    """What a KV bucket's key subjects start with (nats-py's `pre`), the final dot included."""
    return join(KV_ROOT, bucket, "")


def kv_key(bucket: str, key: str) -> str:
    """The subject a KV key is stored on: `$KV.<bucket>.<key>`."""
    return join(KV_ROOT, bucket, key)


class KVSubject(msgspec.Struct, frozen=True):
    """A KV key's subject, parsed."""

    bucket: str
    key: str


def parse_kv_subject(subject: str) -> KVSubject | None:
    """The bucket and key of a KV subject, or None."""
    parts = subject.split(".", 2)
    if len(parts) != 3 or parts[0] != KV_ROOT or not parts[2]:
        return None
    return KVSubject(parts[1], parts[2])


# Worker presence, bucket `workers`: key `<alias>.<worker_id>`, so `<alias>.*` is one alias's workers.


def presence_key(alias: str, worker_id: str) -> str:
    """KV key of a worker's presence entry."""
    return join(alias, worker_id)


def presence_of(alias: str) -> str:
    """The presence keys of every worker serving `alias`."""
    return presence_key(alias, ANY)


class PresenceKey(msgspec.Struct, frozen=True):
    """A presence key, parsed."""

    alias: str
    worker_id: str


def parse_presence_key(key: str) -> PresenceKey | None:
    """The alias and worker of a presence key, or None."""
    parts = key.split(".")
    if len(parts) != 2:
        return None
    return PresenceKey(parts[0], parts[1])


# Login limits, bucket `login_attempts`: keys of hashed names and addresses (identity/attempts.py).


def login_attempts_key(name_digest: str, address_digest: str) -> str:
    """KV key counting the logins of one name from one address."""
    return join("login", name_digest, address_digest)


def login_attempts_of(name_digest: str) -> str:
    """The keys counting one name's logins, from every address."""
    return login_attempts_key(name_digest, ANY)


def address_attempts_key(address_digest: str) -> str:
    """KV key counting the failed logins from one address, any name."""
    return join("address", address_digest)


def register_attempts_key(address_digest: str) -> str:
    """KV key counting the accounts asked for from one address."""
    return join("register", address_digest)
