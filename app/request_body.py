"""Reading a request body with a size bound (a client cannot make us buffer more)."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(ValueError):
    pass


async def read_body(request: Request, bytes_max: int) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > bytes_max:
        raise BodyTooLarge(f"request body larger than {bytes_max} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > bytes_max:
            raise BodyTooLarge(f"request body larger than {bytes_max} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
