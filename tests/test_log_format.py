"""One log format for walletd's lines and uvicorn's (issue 12 item 2): UTC, text or
JSON, the callback's operator, command and transaction id as fields, no secret."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from app.logfields import AccessFields, CallFields, in_call
from app.logformat import TextFormatter, formatter, log_config
from app.logsafe import TEXT_CHARS_MAX, RateLimitedLog
from app.protocols.oia import handler as oia
from app.protocols.stargame import handler as stargame
from app.redis_server import relay_log
from app.settings import ConfigError, LogSettings, Settings, check
from tests.log_capture import captured, json_lines, lines_with
from tests.oia_calls import change, envelope, error_code, new_session, post
from tests.support import BUSY_LUA, OPERATOR, SECRET, sg

pytestmark = pytest.mark.anyio

# 2026-11-22T04:13:18.885Z
AT = 1795320798.885


def record(msg: str = "hello %s", args: tuple = ("world",), name: str = "walletd.oia",
           **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)
    made.created, made.msecs = AT, 885.0
    made.__dict__.update(extra)
    return made


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time is not UTC: the lines must not follow it."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_text_line_is_utc_with_z_then_level_logger_message_and_fields(new_york: None) -> None:
    line = TextFormatter().format(record(operator="op1", command="changebalance", transaction_id=7))
    assert line == ("2026-11-22T04:13:18.885Z WARNING walletd.oia: hello world "
                    "operator=op1 command=changebalance transaction_id=7")


def test_a_text_line_stays_one_line_with_a_newline_and_a_traceback() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        failed = record("two\nlines %s", ("x\r\ny",), command="a b\nc")
        failed.exc_info = sys.exc_info()
    line = TextFormatter().format(failed)
    assert "\n" not in line and "\r" not in line
    assert "two\\nlines x\\r\\ny" in line
    assert "command='a b\\nc'" in line  # not bare: quoted and escaped
    assert "exc_info='Traceback (most recent call last):" in line and "ValueError: bad\\nthing'" in line


def test_a_json_line_parses_with_the_fields_and_nothing_else(new_york: None) -> None:
    made = record(operator="op1", command="cancel", transaction_id=12, color_message="\x1b[1mhello\x1b[0m",
                  secret_key="must-not-show")
    line = formatter("json").format(made)
    assert "\n" not in line
    assert json.loads(line) == {"time": "2026-11-22T04:13:18.885Z", "level": "WARNING", "logger": "walletd.oia",
                                "message": "hello world", "operator": "op1", "command": "cancel",
                                "transaction_id": 12}


def test_a_json_field_from_the_request_is_capped() -> None:
    parsed = json.loads(formatter("json").format(record(command="x" * 10_000, operator="\n\x1b[2J")))
    assert parsed["command"].startswith("x" * TEXT_CHARS_MAX) and len(parsed["command"]) < TEXT_CHARS_MAX + 20
    assert parsed["operator"] == "\n\x1b[2J"  # escaped by the encoder: the line is one line


def test_the_call_fields_come_from_the_callback_that_logs() -> None:
    def in_a_callback() -> logging.LogRecord:
        in_call("op1", "status", 99)
        made = record()
        CallFields().filter(made)
        return made

    made = contextvars.copy_context().run(in_a_callback)
    assert (made.operator, made.command, made.transaction_id) == ("op1", "status", 99)  # type: ignore[attr-defined]
    outside = record()
    CallFields().filter(outside)  # another task's context: nothing of that call
    assert "operator" not in outside.__dict__
    given = record(operator="claimed")  # extra= wins over the context
    contextvars.copy_context().run(lambda: (in_call("op1", "status"), CallFields().filter(given)))
    assert given.operator == "claimed"  # type: ignore[attr-defined]


def test_an_access_line_has_the_request_fields_with_secrets_masked() -> None:
    made = record('%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5000", "GET", "/stargame?cmd=getBalance&uid=7&token=t0k3n&"
                                               "password=pw", "1.1", 200), name="uvicorn.access")
    AccessFields().filter(made)
    parsed = json.loads(formatter("json").format(made))
    assert parsed["client"] == "127.0.0.1:5000" and parsed["method"] == "GET" and parsed["status"] == 200
    assert parsed["path"] == "/stargame?cmd=getBalance&uid=7&token=<redacted>&password=<redacted>"
    assert parsed["message"] == f"GET {parsed['path']} 200"
    assert "t0k3n" not in json.dumps(parsed) and "=pw" not in json.dumps(parsed)


@pytest.mark.parametrize("access_log", [False, True])
def test_the_access_log_is_switched_by_its_setting_not_by_the_level(access_log: bool) -> None:
    config = log_config(LogSettings(level="warning", access_log=access_log))
    assert config["loggers"]["uvicorn.access"]["level"] == ("INFO" if access_log else "WARNING")
    assert config["root"]["level"] == "WARNING"
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn's lines go through walletd's handler
        assert config["loggers"][name] == {**config["loggers"][name], "handlers": [], "propagate": True}


@pytest.mark.parametrize(("field", "value"), [("format", "xml"), ("level", "loud"), ("redis", "syslog")])
def test_a_bad_log_setting_is_refused_by_name(field: str, value: str) -> None:
    settings = Settings()
    setattr(settings.log, field, value)
    with pytest.raises(ConfigError, match=f"log.{field} '{value}' must be one of"):
        check(settings)


def test_redis_lines_are_relayed_with_their_level_and_without_their_local_time() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"12:M 22 Nov 2026 05:13:18.885 * Ready to accept connections\n"
                        b"12:M 22 Nov 2026 05:13:18.886 # WARNING overcommit\n"
                        b"not a redis line \x1b[2J\n")
    os.close(write_end)
    with captured() as stream:
        relay_log(os.fdopen(read_end, "rb"))
    lines = json_lines(stream.getvalue())
    assert [(line["logger"], line["level"], line["message"]) for line in lines] == [
        ("walletd.redis.server", "INFO", "Ready to accept connections"),
        ("walletd.redis.server", "WARNING", "WARNING overcommit"),
        ("walletd.redis.server", "INFO", "not a redis line \x1b[2J"),
    ]


@pytest.fixture
def fresh_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rate limiters with no history: earlier tests' refusals do not hide this one's lines."""
    monkeypatch.setattr(oia, "limited_log", RateLimitedLog(oia.log))
    monkeypatch.setattr(stargame, "limited_log", RateLimitedLog(stargame.log))


async def test_an_oia_403_line_names_the_operator_and_command(client: httpx.AsyncClient, fresh_logs: None) -> None:
    with captured() as stream:
        r = await post(client, "balance", envelope("balance", {}), authorization="wrong-hash-value")
    assert r.status_code == 403
    [line] = lines_with(json_lines(stream.getvalue()), "refused (403)")
    assert (line["operator"], line["command"]) == (OPERATOR, "balance")
    assert "wrong-hash-value" not in stream.getvalue() and SECRET not in stream.getvalue()


async def test_an_oia_refusal_line_names_operator_command_and_transaction(
    settings: Settings, client: httpx.AsyncClient, player: str, fresh_logs: None
) -> None:
    settings.wallet.backlog_max = 2  # not flushed: the player's opening entry and the first booking fill it
    token = await new_session(client, player)
    with captured() as stream:
        for tx in (41, 42):
            answer = (await post(client, "changebalance", envelope("changebalance", change(player, tx, token=token))))
            assert error_code(answer.json()["response"]) == ("OP_50" if tx == 42 else None)
    [line] = lines_with(json_lines(stream.getvalue()), "backlog is full")
    assert (line["level"], line["operator"], line["command"], line["transaction_id"]) == (
        "ERROR", OPERATOR, "changebalance", 42)
    assert token not in stream.getvalue()


@pytest.fixture
def short_socket_timeout(settings: Settings) -> Settings:
    settings.redis.socket_timeout_ms = 150
    return settings


async def busy_redis(sync_redis: redis.Redis) -> asyncio.Task:
    """Redis runs a script for 0.4 s from now: replies meanwhile come after the time-out."""
    blocker = asyncio.create_task(asyncio.to_thread(sync_redis.eval, BUSY_LUA, 0, 400_000))
    await asyncio.sleep(0.05)
    return blocker


async def test_an_oia_outcome_unknown_line_names_operator_command_and_transaction(
    short_socket_timeout: Settings, client: httpx.AsyncClient, player: str, sync_redis: redis.Redis,
    fresh_logs: None
) -> None:
    token = await new_session(client, player)
    body = envelope("changebalance", change(player, 77, "BET", 5, token=token))
    with captured("text") as stream:
        blocker = await busy_redis(sync_redis)
        r = await post(client, "changebalance", body)
        await blocker
    assert error_code(r.json()["response"]) == "OP_47"
    [line] = [line for line in stream.getvalue().splitlines() if "outcome unknown" in line]
    assert line.endswith(f" operator={OPERATOR} command=changebalance transaction_id=77"), line
    assert token not in stream.getvalue() and body["hash"] not in stream.getvalue()


async def test_a_stargame_line_names_the_command(
    short_socket_timeout: Settings, client: httpx.AsyncClient, player: str, sync_redis: redis.Redis,
    fresh_logs: None
) -> None:
    assert (await sg(client, cmd="getBalance", uid=player))["status"] == "success"  # connected
    with captured() as stream:
        blocker = await busy_redis(sync_redis)
        answer = await sg(client, cmd="getBalance", uid=player)
        await blocker
    assert answer["status"] == "fail"
    [line] = lines_with(json_lines(stream.getvalue()), "Redis timed out")
    assert line["command"] == "getBalance"
