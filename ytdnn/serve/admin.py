"""Who may call the admin endpoints: loopback clients, or, once a token is configured, whoever
sends it (and nobody else, loopback included).

Without a token, a request is a loopback client's when the client address the server reports is
loopback *and* it carries no forwarding header (``Forwarded``, ``X-Forwarded-For``,
``X-Real-IP``), so a server bound to 0.0.0.0 refuses a reload from another machine. The header
rule is what makes this hold behind a reverse proxy: uvicorn by default (``proxy_headers=True``,
``forwarded_allow_ips="127.0.0.1,::1"``) reports the address a loopback proxy forwards instead of
the TCP peer, and a proxy that passes a client's own ``X-Forwarded-For: 127.0.0.1`` through
unchanged would otherwise let any client in. A request that came through a proxy is refused
whatever address it names. A proxy on the same host that adds none of these headers makes every
client look like loopback: configure a token there.
"""

from __future__ import annotations

import hmac
import ipaddress


class AdminRefused(PermissionError):
    """``status``: 401 (a token is configured and was not sent, or is wrong) or 403 (not loopback)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for names and None."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def is_forwarded(headers) -> bool:
    """True when ``headers`` (a case-insensitive mapping) carry any forwarding header."""
    return any(name in headers for name in FORWARDING_HEADERS)


def check_admin(client_host: str | None, authorization: str | None, token: str | None,
                forwarded: bool = False) -> None:
    """Raise AdminRefused unless this client may use the admin endpoints.

    client_host: the client's address as the server reports it; authorization: the Authorization
    header, "Bearer <token>"; token: the configured admin token, or None (then loopback clients
    only); forwarded: the request carries a forwarding header (``is_forwarded``).
    """
    if token:
        scheme, _, sent = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.encode()):
            raise AdminRefused(401, "admin endpoints need 'Authorization: Bearer <admin token>'")
        return
    if forwarded:
        raise AdminRefused(403, "admin endpoints answer loopback clients only, and a request "
                                "that came through a proxy is not one; configure an admin token")
    if not is_loopback(client_host):
        raise AdminRefused(403, f"admin endpoints answer loopback clients only (not {client_host}) "
                                "unless an admin token is configured")
