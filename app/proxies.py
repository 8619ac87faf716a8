"""Behind a reverse proxy: the client address a request is judged by (README "Behind a proxy").

With server.forwarded_allow_ips set, every request's scope["client"] is replaced,
before any route sees it, by the address walletd believes: the StarGame allow-list,
OIA's and uvicorn's log lines all read that one. uvicorn's own proxy handling stays
off (app/serve.py), so this is the only rule:

- the direct TCP peer is not a trusted proxy: the peer, whatever X-Forwarded-For says;
- it is: X-Forwarded-For is read from the right (each proxy appends the address it
  was called from), skipping trusted proxies; the first address that is not one is
  the client. Anything left of it was written by the client and is never read, so a
  spoofed left-most entry changes nothing. If every entry is a trusted proxy, the
  left-most is the client; with no header at all, no client (None): a proxy that
  drops the header (misconfigured) must fail closed, not pass every caller off as
  itself, which may well be on the allow-list (the default allows 127.0.0.1);
- an entry on that walk that is not an IP address (or a walk longer than
  HOPS_MAX): no client (None), which the StarGame allow-list refuses like any
  caller it does not know, and the logs show as "?".
"""

from __future__ import annotations

import ipaddress
from typing import Any, TypeVar

from app.allowlist import AllowList
from app.asgi import Receive, Scope, Send

HEADER = b"x-forwarded-for"
# Proxies in a row walletd will walk through; a longer chain is refused (bounds the work a header costs).
HOPS_MAX = 16
Client = tuple[str, int] | None
App = TypeVar("App")


def forwarded_client(peer: Client, forwarded: list[bytes], proxies: AllowList) -> Client:
    """The client by the rule above; forwarded: the X-Forwarded-For values, in the
    order they came (several header lines read as one comma-separated list)."""
    if peer is None or not proxies.allows(peer[0]):
        return peer
    if not forwarded:
        return None
    # At most HOPS_MAX + 1 entries; past HOPS_MAX trusted proxies the first one still
    # holds commas, is no address, and refuses the request.
    client = peer
    for entry in reversed(b",".join(forwarded).rsplit(b",", HOPS_MAX)):
        address = parsed(entry)
        if address is None:
            return None
        client = (address, 0)
        if not proxies.allows(address):
            break
    return client


def parsed(entry: bytes) -> str | None:
    try:
        return str(ipaddress.ip_address(entry.strip().decode("ascii")))
    except (ValueError, UnicodeDecodeError):
        return None


class ForwardedClient:
    """An ASGI front that sets scope["client"] by forwarded_client, then calls app."""

    def __init__(self, app: Any, trusted: list[str]) -> None:
        self.app = app
        self.proxies = AllowList(trusted)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # app.state, app.router: the wrapped app's

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [value for name, value in scope["headers"] if name == HEADER]
            scope["client"] = forwarded_client(scope.get("client"), headers, self.proxies)
        return await self.app(scope, receive, send)


def behind_proxies(app: App, trusted: list[str]) -> App | ForwardedClient:
    """app itself when no proxy is trusted (the usual case costs nothing), else app behind ForwardedClient."""
    return ForwardedClient(app, trusted) if trusted else app
