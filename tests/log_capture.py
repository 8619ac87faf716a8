"""walletd's log as its processes write it, captured in process: the configured
formatter and the callback's fields on a handler of the root logger."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

from app.logfields import CallFields
from app.logformat import formatter


@contextlib.contextmanager
def captured(log_format: str = "json") -> Iterator[io.StringIO]:
    """INFO and up from every logger, formatted as walletd's stderr handler formats them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(CallFields())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of text as a JSON object (a line that is not one fails the test)."""
    return [json.loads(line) for line in text.splitlines() if line]


def lines_with(records: list[dict[str, Any]], words: str) -> list[dict[str, Any]]:
    return [record for record in records if words in record["message"]]
