"""Raw ASGI helpers: the request's headers and client, a bounded body reader, a response.

Used by the protocols' raw handlers (routed by app/callbacks.py) and, for the
bounded body, by the admin API on Starlette's side.
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


# Content-type headers, built once: every raw answer carries one of them.
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
