"""Outbound HTTP that a user's URL cannot turn inward (SSRF): the image fetch and the webhooks share it.

A library of its own, under the services and beside logtools/identity: it imports no package of ours,
only the standard library and aiohttp (it is the guard of an HTTP client, so aiohttp is its business).
"""

from netguard.addresses import IPAddress, is_public, unwrap
from netguard.vetting import (
    Resolve,
    UrlRefused,
    VettedResolver,
    check_url,
    literal_address_refused,
    system_resolve,
    vet,
)

__all__ = [
    "IPAddress",
    "Resolve",
    "UrlRefused",
    "VettedResolver",
    "check_url",
    "is_public",
    "literal_address_refused",
    "system_resolve",
    "unwrap",
    "vet",
]
