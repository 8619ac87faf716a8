"""A JSON response encoded by one shared msgspec Encoder (not stdlib json)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

# One encoder for every JSON response: reused, not built per call.
ENCODER = msgspec.json.Encoder()


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return ENCODER.encode(content)
