"""The callbacks' raw ASGI path: platform callbacks skip Starlette's middleware,
routing, Request and Response objects (measured: README "Benchmarks"); every
other route is Starlette's.

A hot handler never lets an exception out: it answers in its protocol's own
way (OP_50, {"status":"fail"}) itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

class BodyTooLarge(ValueError):
    pass


JSON_TYPE = (b"content-type", b"application/json")
TEXT_TYPE = (b"content-type", b"text/plain; charset=utf-8")


def headers_of(scope: Scope) -> dict[bytes, bytes]:
    """Lower-case names (ASGI guarantees it) to values; a repeated header keeps its last value."""
    return dict(scope["headers"])


def client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


async def read_body(receive: Receive, headers: dict[bytes, bytes], bytes_max: int) -> bytes:
    """The whole body, refused past bytes_max (a client cannot make us buffer more)."""
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and int(declared) > bytes_max:
        raise BodyTooLarge(f"request body larger than {bytes_max} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; what came is all there is
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > bytes_max:
            raise BodyTooLarge(f"request body larger than {bytes_max} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(send: Send, body: bytes, status: int = 200, content_type: tuple[bytes, bytes] = JSON_TYPE) -> None:
    headers = [content_type, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HotPaths:
    """Exact (method, path) routes, plus one POST prefix (the OIA commands),
    in front of the Starlette app that serves everything else."""

    def __init__(self, app: Handler, exact: dict[tuple[str, str], Handler], prefix: str, prefixed: Handler) -> None:
        assert prefix.endswith("/")
        self.app = app
        self.exact = exact
        self.prefix = prefix
        self.prefixed = prefixed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # app.state, app.router: the Starlette app's

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            handler = self.exact.get((scope["method"], path))
            if handler is not None:
                return await handler(scope, receive, send)
            if scope["method"] == "POST" and path.startswith(self.prefix) and "/" not in path[len(self.prefix):]:
                return await self.prefixed(scope, receive, send)
        return await self.app(scope, receive, send)
