"""Logging what a request brought without letting the request write the log.

Three rules for every protocol handler:
- request-derived text goes through quoted(): control characters (newline,
  carriage return, escape sequences, U+2028...) are escaped repr-style and the
  length is capped, so no request can start a forged line or fill the disk;
- secrets (session tokens, hashes, signatures, passwords) go through
  redacted() or are not logged at all;
- refusals an unauthenticated client can provoke at will go through a
  RateLimitedLog: one line per kind per interval, with the count suppressed.
"""

from __future__ import annotations

import logging
import re
import threading
import time

# Enough to recognise an id, a path or a command; a request cannot make a line longer.
TEXT_CHARS_MAX = 120
# A repeated refusal is logged at most once per this many seconds per kind.
INTERVAL_S = 60.0
# Kinds are code-chosen constants; the cap only guards against a caller passing request text.
KINDS_MAX = 256
# One slot for a kind and one for OVERFLOW_KIND, which all kinds beyond the cap share.
KINDS_MIN = 2
OVERFLOW_KIND = "(other)"
REDACTED = "<redacted>"
# Members and parameters whose values are secrets or sign something.
SECRET_NAMES = ("token", "hash", "secret", "secret_key", "password", "authorization", "sign", "signature")


def quoted(value: object, chars_max: int = TEXT_CHARS_MAX) -> str:
    """Request-derived text as a single-line, bounded, repr-style literal: 'a\\nb'."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value[: chars_max * 4]).decode("utf-8", "backslashreplace")
    else:
        text = str(value)
    if len(text) > chars_max:
        return f"{text[:chars_max]!r}...(truncated)"
    return repr(text)


def _secret_pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(name) for name in names)
    # "name": "value" (JSON), "name": 123, and name=value (query strings, headers).
    return re.compile(
        rf'("(?:{alternatives})"\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}}\s]+)'
        rf"|(\b(?:{alternatives})=)([^&\s]*)",
        re.IGNORECASE,
    )


# Built once for redacted(); secret_pattern() makes one with a protocol's extra names.
SECRETS = _secret_pattern(SECRET_NAMES)


def _mask(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return f'{match.group(1)}"{REDACTED}"'
    return f"{match.group(3)}{REDACTED}"


def masked(text: str, pattern: re.Pattern[str] = SECRETS) -> str:
    """text with the value of every secret member or parameter replaced by <redacted>
    (not quoted: for a log field, which its formatter escapes)."""
    return pattern.sub(_mask, text)


def redacted(text: str | bytes, pattern: re.Pattern[str] = SECRETS) -> str:
    """masked(text), then quoted: the result is safe to log as it is."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", "backslashreplace")
    return quoted(masked(text, pattern))


# A password in a URL's user part (scheme://user:PASSWORD@host): Redis and PostgreSQL URLs.
PASSWORD_IN_URL = re.compile(r"(//[^/:@\s]*:)[^\s/]*@")  # to the last @: a password may hold one
# A password as a URL parameter or libpq keyword (?password=..., password=... in a conninfo).
PASSWORD_PARAMETER = re.compile(r"(\bpassword\s*=\s*)('[^']*'|[^&\s]*)", re.IGNORECASE)


def without_passwords(text: str) -> str:
    """text (a URL, or a message naming one) with every password in it shown as ***."""
    return PASSWORD_PARAMETER.sub(r"\1***", PASSWORD_IN_URL.sub(r"\1***@", text))


def secret_pattern(*names: str) -> re.Pattern[str]:
    """A pattern for redacted() with extra secret names (e.g. a protocol's own 'foo')."""
    return _secret_pattern(SECRET_NAMES + names)


class Limiter:
    """Per kind: admit one event per interval and count the ones refused in
    between. Memory is bounded by kinds_max."""

    def __init__(self, interval_s: float = INTERVAL_S, kinds_max: int = KINDS_MAX) -> None:
        assert interval_s >= 0 and kinds_max >= KINDS_MIN
        self.interval_s = interval_s
        self.kinds_max = kinds_max
        self.kinds: dict[str, list[float | int]] = {}  # kind -> [last admitted (monotonic s), suppressed]
        self.lock = threading.Lock()  # the flusher thread and the event loop may share one

    def admit(self, kind: str) -> int | None:
        """None if kind had an event less than interval_s ago (counted), else how
        many were suppressed since the last admitted one."""
        now = time.monotonic()
        with self.lock:
            kind = self._slot(kind, now)
            state = self.kinds.get(kind)
            if state is not None and now - state[0] < self.interval_s:
                state[1] += 1
                return None
            self.kinds[kind] = [now, 0]
            return int(state[1]) if state is not None else 0

    def _slot(self, kind: str, now: float) -> str:
        """kind itself if it has (or can get) a slot, else the shared overflow kind."""
        if kind in self.kinds or len(self.kinds) < self.kinds_max - 1:
            return kind
        for old in [k for k, (at, suppressed) in self.kinds.items()
                    if k != OVERFLOW_KIND and now - at >= self.interval_s and not suppressed]:
            del self.kinds[old]  # idle and nothing to report: forget it
        return kind if len(self.kinds) < self.kinds_max - 1 else OVERFLOW_KIND


class RateLimitedLog:
    """At most one record per kind per interval; the next record of that kind
    says how many were suppressed in between."""

    def __init__(self, logger: logging.Logger, interval_s: float = INTERVAL_S, kinds_max: int = KINDS_MAX) -> None:
        self.logger = logger
        self.limiter = Limiter(interval_s, kinds_max)

    @property
    def interval_s(self) -> float:
        return self.limiter.interval_s

    @property
    def kinds(self) -> dict[str, list[float | int]]:
        return self.limiter.kinds

    def log(self, level: int, kind: str, msg: str, *args: object, exc_info: BaseException | None = None,
            extra: dict[str, object] | None = None) -> bool:
        """Log msg % args under kind unless one was logged less than interval_s ago; True if logged.
        extra: fields of the line (app/logfields.py), as logging's extra=."""
        suppressed = self.limiter.admit(kind)
        if suppressed is None:
            return False
        if suppressed:
            msg += " (%d more like this suppressed in the last %.0f s)"
            args = (*args, suppressed, self.interval_s)
        self.logger.log(level, msg, *args, exc_info=exc_info, extra=extra)
        return True

    def warning(self, kind: str, msg: str, *args: object, extra: dict[str, object] | None = None) -> bool:
        return self.log(logging.WARNING, kind, msg, *args, extra=extra)

    def error(self, kind: str, msg: str, *args: object, exc_info: BaseException | None = None) -> bool:
        return self.log(logging.ERROR, kind, msg, *args, exc_info=exc_info)


class FloodFilter(logging.Filter):
    """For loggers walletd does not write itself (uvicorn logs one WARNING per
    malformed HTTP request): one record per message template per interval."""

    def __init__(self, interval_s: float = INTERVAL_S, kinds_max: int = KINDS_MAX) -> None:
        super().__init__()
        self.limiter = Limiter(interval_s, kinds_max)

    def filter(self, record: logging.LogRecord) -> bool:
        suppressed = self.limiter.admit(f"{record.name}:{record.levelno}:{record.msg}")
        if suppressed is None:
            return False
        if suppressed:
            note = f" ({suppressed} more like this suppressed in the last {self.limiter.interval_s:.0f} s)"
            record.msg, record.args = record.getMessage() + note, None
        return True


# Loggers of the HTTP server that any client can make write (bad requests, bad upgrades).
SERVER_LOGGERS = ("uvicorn.error",)


def limit_server_logs() -> None:
    """Installs a FloodFilter on the HTTP server's loggers, once per process."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, FloodFilter) for f in logger.filters):
            logger.addFilter(FloodFilter())
