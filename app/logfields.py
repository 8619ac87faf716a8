"""The fields a log line carries besides its message (README "Logs").

A callback's lines name the operator, the command and the transaction id:
the protocol handler sets them once per callback in a context variable
(asyncio gives every request task its own copy), and CallFields copies them
onto each record as it is written, so a callback that logs nothing pays only
that one set. A record may also bring them itself (logging's extra=).

uvicorn's access lines are rewritten by AccessFields into the same fields
(client, method, path, status), with any secret in the query string masked.
"""

from __future__ import annotations

import contextvars
import logging

from app.logsafe import masked

# The callback's fields, in the order a text line shows them.
CALL_FIELDS = ("operator", "command", "transaction_id")
ACCESS_FIELDS = ("client", "method", "path", "status")
# Every field a formatter shows, in order; nothing else on a record reaches a line.
FIELDS = (*CALL_FIELDS, *ACCESS_FIELDS)

Call = tuple[str | None, str | None, int | str | None]
CALL: contextvars.ContextVar[Call | None] = contextvars.ContextVar("log_call", default=None)


def in_call(operator: str | None, command: str | None, transaction_id: int | str | None = None) -> None:
    """The current callback's fields, for every line logged while it is answered."""
    CALL.set((operator, command, transaction_id))


class CallFields(logging.Filter):
    """Stamps the current callback's fields on each record the handler writes
    (a field the record brought itself, through extra=, wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = CALL.get()
        if call is not None:
            for name, value in zip(CALL_FIELDS, call, strict=True):
                if value is not None and name not in record.__dict__:
                    setattr(record, name, value)
        return True


# uvicorn's access record: '%s - "%s %s HTTP/%s" %d' % (client, method, path, http_version, status).
ACCESS_ARGS = 5
# The path as its message shows it (the path field is capped by the formatter, marked so).
PATH_CHARS_MAX = 200


class AccessFields(logging.Filter):
    """uvicorn.access records as fields, the message "METHOD path status"."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == ACCESS_ARGS:
            client, method, path, _, status = args
            shown = masked(str(path))  # a token or password in a query string
            record.client, record.method, record.path, record.status = client, method, shown, status
            record.msg, record.args = "%s %s %s", (method, shown[:PATH_CHARS_MAX], status)
        return True
