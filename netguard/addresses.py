"""Which addresses a user's URL may reach: global unicast only, whatever the spelling."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 ranges whose last 32 bits are an IPv4 address a gateway may reach: NAT64 (RFC 6052, RFC 8215),
# IPv4-compatible (deprecated) and SIIT IPv4-translated addresses.
_EMBEDS_IPV4 = tuple(
    ipaddress.IPv6Network(net) for net in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96")
)
# Only global unicast IPv6 (2000::/3) is ever public; this refuses site-local fec0::/10 and the like.
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address embeds (mapped, 6to4, Teredo, NAT64, compatible), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
        if any(address in net for net in _EMBEDS_IPV4):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address: IPAddress) -> bool:
    """True for a global unicast address (after unwrapping embedded IPv4)."""
    inner = unwrap(address)
    if inner is not address:
        return inner.is_global and not inner.is_multicast
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST:
        return False
    return address.is_global and not address.is_multicast
