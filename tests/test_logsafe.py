"""app/logsafe: request text cannot forge a log line, secrets are masked, floods are bounded."""

from __future__ import annotations

import logging

import pytest

from app import logsafe
from app.logsafe import FloodFilter, RateLimitedLog, quoted, redacted, secret_pattern, without_passwords

HOSTILE = ["balance\n2026-11-21 10:00:00 INFO walletd.oia: forged", "a\rb", "x\x1b[2J", "p\u2028q", "n\x85m",
           "\x00", b"\xff\xfe\n", "\u202eevil"]


@pytest.mark.parametrize("value", HOSTILE)
def test_quoted_is_one_printable_line(value: object) -> None:
    text = quoted(value)
    assert text.isprintable(), text  # no newline, CR, escape, line or paragraph separator
    assert "\n" not in text and "\r" not in text


def test_quoted_is_capped() -> None:
    assert len(quoted("x" * 10**6)) < logsafe.TEXT_CHARS_MAX + 20
    assert len(quoted(b"\xff" * 10**6)) < 4 * logsafe.TEXT_CHARS_MAX + 20


def test_redacted_masks_json_members_and_query_parameters() -> None:
    body = b'{"command":"balance","hash":"5f2b\\"x","data":{"token":"LIVEsessionTOKEN123","user_id":"7"}}'
    text = redacted(body)
    assert "LIVEsessionTOKEN123" not in text and "5f2b" not in text
    assert '"user_id":"7"' in text
    assert "SEC" not in redacted("cmd=getBalance&uid=1&TOKEN=SEC&x=2")
    assert "SEC" not in redacted("uid=1&foo=SEC", secret_pattern("foo"))
    assert "SEC" not in redacted('{"token": "SEC')  # cut mid-value


def test_a_flood_logs_one_line_per_kind_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("walletd.test"), interval_s=3600)
    with caplog.at_level(logging.WARNING, "walletd.test"):
        logged = [limited.warning("forbidden", "refused %s", i) for i in range(10_000)]
        limited.warning("other", "another kind")
    assert sum(logged) == 1
    assert [r.getMessage() for r in caplog.records] == ["refused 0", "another kind"]


def test_the_next_line_counts_the_suppressed_ones(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("walletd.test"), interval_s=0.05)
    with caplog.at_level(logging.WARNING, "walletd.test"):
        for _ in range(5):
            limited.warning("k", "refused")
        limited.kinds["k"][0] -= 1  # the interval has passed
        limited.warning("k", "refused")
    assert len(caplog.records) == 2
    assert "4 more like this suppressed" in caplog.records[1].getMessage()


def test_kinds_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("walletd.test"), interval_s=3600, kinds_max=8)
    with caplog.at_level(logging.WARNING, "walletd.test"):
        for i in range(1000):
            limited.warning(f"kind-{i}", "refused")
    assert len(limited.kinds) <= 8
    assert len(caplog.records) <= 8


def test_the_flood_filter_bounds_a_logger_walletd_does_not_write(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("walletd.test.server")
    flood = FloodFilter(interval_s=3600)
    logger.addFilter(flood)
    try:
        with caplog.at_level(logging.INFO, "walletd.test.server"):
            for i in range(1000):
                logger.warning("Invalid HTTP request received.")
                logger.info("client %s went away", i)
            flood.limiter.kinds[next(iter(flood.limiter.kinds))][0] -= 3600  # the first kind's interval passed
            logger.warning("Invalid HTTP request received.")
    finally:
        logger.removeFilter(flood)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["Invalid HTTP request received.", "client 0 went away",
                        "Invalid HTTP request received. (999 more like this suppressed in the last 3600 s)"]


@pytest.mark.parametrize(("text", "shown"), [
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    ("postgresql://walletd:s3cret@db.example:5432/walletd", "postgresql://walletd:***@db.example:5432/walletd"),
    ("postgresql://walletd@db.example/walletd?sslmode=require&password=s3cret",
     "postgresql://walletd@db.example/walletd?sslmode=require&password=***"),
    ("cannot open host=db user=walletd password='two words' dbname=walletd",
     "cannot open host=db user=walletd password=*** dbname=walletd"),
    ("postgresql://walletd@db.example/walletd", "postgresql://walletd@db.example/walletd"),
    ("postgresql://walletd:p@ss@db.example/walletd", "postgresql://walletd:***@db.example/walletd"),  # '@' unencoded
    ("from redis://:a@h:1/0 to postgresql://u:b@h/d", "from redis://:***@h:1/0 to postgresql://u:***@h/d"),
])
def test_without_passwords_masks_every_form_of_a_url_password(text: str, shown: str) -> None:
    assert without_passwords(text) == shown
