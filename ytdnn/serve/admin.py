"""Who may call the admin endpoints: loopback clients, or, once a token is configured, whoever
sends it (and nobody else, loopback included).

The check is on the address of the TCP peer, so a server bound to 0.0.0.0 still refuses a reload
from another machine. Behind a reverse proxy on the same host every client looks like loopback:
configure a token there.
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


def check_admin(client_host: str | None, authorization: str | None, token: str | None) -> None:
    """Raise AdminRefused unless this client may use the admin endpoints.

    client_host: the peer's address; authorization: the Authorization header, "Bearer <token>";
    token: the configured admin token, or None (then loopback clients only).
    """
    if token:
        scheme, _, sent = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.encode()):
            raise AdminRefused(401, "admin endpoints need 'Authorization: Bearer <admin token>'")
        return
    if not is_loopback(client_host):
        raise AdminRefused(403, f"admin endpoints answer loopback clients only (not {client_host}) "
                                "unless an admin token is configured")
