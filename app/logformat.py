"""How every walletd process writes its log: one format for walletd's lines and
uvicorn's, in UTC, to stderr (README "Logs").

[log] format = "text": one line per record,
    2026-11-22T04:13:18.885Z WARNING walletd.oia: <message> operator=op1 command=changebalance transaction_id=7
"json": one object per line with time, level, logger, message and the same fields.

The CLI's process calls configure_logging() once the settings are read; serve hands
the same configuration to uvicorn (log_config), which applies it in each of
its worker processes too, so uvicorn installs no handler or format of its own.
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
import time
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from app.logfields import FIELDS
from app.logsafe import TEXT_CHARS_MAX, quoted
from app.settings import LogSettings

# A traceback is code's text with an exception's message in it: capped all the same.
EXC_CHARS_MAX = 8_000
# A text field's value shown bare (key=value); any other is quoted (escaped, capped).
BARE_VALUE = re.compile(rf"[\w.:/@+-]{{1,{TEXT_CHARS_MAX}}}")
ACCESS_LOGGER = "uvicorn.access"
# Loggers whose records reach the one handler of the root logger (none has its own).
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", ACCESS_LOGGER, "uvicorn.asgi")


def utc_time(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC with milliseconds: 2026-11-22T04:13:18.885Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The record's fields (app/logfields.py), in FIELDS order; none other is shown."""
    return {name: record.__dict__[name] for name in FIELDS if record.__dict__.get(name) is not None}


def capped(value: Any, chars_max: int = TEXT_CHARS_MAX) -> Any:
    """A JSON value: a number as it is, text cut at chars_max (the encoder escapes it)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = str(value)
    return text if len(text) <= chars_max else text[:chars_max] + "...(truncated)"


class TextFormatter(logging.Formatter):
    """time LEVEL logger: message key=value...; one line per record, a traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not message.isprintable():  # a newline or escape sequence cannot start a line of its own
            message = repr(message)[1:-1]
        parts = [f"{utc_time(record)} {record.levelname} {record.name}: {message}"]
        parts.extend(f"{name}={self.value(value)}" for name, value in fields_of(record).items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            parts.append(f"exc_info={quoted(record.exc_text, EXC_CHARS_MAX)}")
        return " ".join(parts)

    @staticmethod
    def value(value: Any) -> str:
        text = str(value)
        return text if BARE_VALUE.fullmatch(text) else quoted(text)


class JsonLinesFormatter(JsonFormatter):
    """{"time", "level", "logger", "message", fields..., "exc_info"}: only these keys
    (uvicorn's color_message and any other extra never reach a line)."""

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data.update(time=utc_time(record), level=record.levelname, logger=record.name, message=record.message)
        log_data.update((name, capped(value)) for name, value in fields_of(record).items())
        for name in ("exc_info", "stack_info"):
            if message_dict.get(name):
                log_data[name] = capped(message_dict[name], EXC_CHARS_MAX)


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is when a record comes, not the one it was built
    with (as logging's last-resort handler): code that swaps sys.stderr (a test's capture
    around an in-process `walletd` command) leaves no handler on a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always sys.stderr


def formatter(format: str = "text") -> logging.Formatter:
    """logging.config's factory for the configured format."""
    return JsonLinesFormatter() if format == "json" else TextFormatter()


def log_config(log: LogSettings) -> dict[str, Any]:
    """The logging.config dictionary (also uvicorn's log_config, which it applies in each
    worker process it starts): one stderr handler on the root logger, with the callback's
    fields; uvicorn's loggers write through it, its access lines at INFO when the access
    log is on, whatever the level (access_log switches it)."""
    loggers: dict[str, Any] = {name: {"handlers": [], "propagate": True} for name in UVICORN_LOGGERS}
    loggers[ACCESS_LOGGER].update(filters=["access"], level="INFO" if log.access_log else "WARNING")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"walletd": {"()": f"{__name__}.formatter", "format": log.format}},
        "filters": {"call": {"()": "app.logfields.CallFields"}, "access": {"()": "app.logfields.AccessFields"}},
        "handlers": {"stderr": {"class": f"{__name__}.StderrHandler", "formatter": "walletd", "filters": ["call"]}},
        "root": {"handlers": ["stderr"], "level": log.level.upper()},
        "loggers": loggers,
    }


def configure_logging(log: LogSettings | None = None) -> None:
    """This process's log in the configured format (the defaults before the settings are read)."""
    logging.config.dictConfig(log_config(log or LogSettings()))
