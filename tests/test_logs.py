"""A real `walletd serve` (its uvicorn workers, its flush process) and a CLI command
write one log format, JSON or text, in UTC; callback lines name operator, command
and transaction id; and no secret or token of any kind reaches the log, whatever
the callbacks sent (issue 12 item 2)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.log_capture import json_lines, lines_with
from tests.oia_calls import change, envelope, sha1
from tests.process import Server, walletd
from tests.redis_servers import PrivateRedis, private_redis
from tests.support import ADMIN_TOKEN, BUSY_LUA, OPERATOR, SECRET

pytestmark = pytest.mark.slow

REDIS_PASSWORD = "redis-pw-9f2c81d7e4"
WRONG_ADMIN_TOKEN = "wrong-admin-token-5b7e0c"
WRONG_HASH = sha1("not the secret")
PLAYER = "611"
# A text line: time (UTC, Z) LEVEL logger: message [key=value...]
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: .*")
# Redis runs a script this long while a booking waits longer than redis.socket_timeout_ms.
BUSY_US = 1_000_000


@pytest.fixture
def protected_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path / "redis", password=REDIS_PASSWORD) as server:
        yield server


def serve(tmp_path: Path, redis_url: str, log: str, workers: int = 1) -> Server:
    return Server(tmp_path / "walletd", redis_url=redis_url, workers=workers,
                  redis_extra="socket_timeout_ms = 300\nrequire_durable = false\n", extra=f"[log]\n{log}\n").start()


def admin(client: httpx.Client, path: str, body: dict, token: str = ADMIN_TOKEN) -> httpx.Response:
    return client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})


def oia(client: httpx.Client, command: str, body: dict, authorization: str | None = None) -> dict:
    headers = {"X-Operator-Id": OPERATOR, "X-Authorization": authorization or sha1(command + SECRET)}
    response = client.post(f"/oia/{command}", json=body, headers=headers)
    return {"status_code": response.status_code, "text": response.text}


def error_code_of(answer: dict) -> str | None:
    reply = httpx.Response(200, text=answer["text"]).json()["response"]
    return reply["data"].get("error_code")


def callbacks(server: Server, admin_redis_url: str) -> list[str]:
    """A session's worth of calls, refusals with bad hashes and tokens among them, and one
    booking whose outcome is unknown; the secrets and tokens they carried or got back."""
    seen = [SECRET, ADMIN_TOKEN, WRONG_ADMIN_TOKEN, WRONG_HASH]
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert admin(client, "/admin/players", {"player_id": PLAYER, "currency": "EUR", "balance": "100.00",
                                                "operator_id": OPERATOR}).status_code == 201
        assert admin(client, "/admin/sessions", {"player_id": PLAYER}, WRONG_ADMIN_TOKEN).status_code == 401
        session = admin(client, "/admin/sessions", {"player_id": PLAYER, "game_id": 200})
        token = session.json()["token"]
        seen.append(token)
        for body in (envelope("authenticate", {"token": token}), envelope("balance", {
                "user_id": PLAYER, "token": token, "currency_code": "EUR"})):
            answer = oia(client, body["command"], body)
            assert error_code_of(answer) is None, answer
            seen += [body["hash"], httpx.Response(200, text=answer["text"]).json()["response"]["hash"]]
        booked = envelope("changebalance", change(PLAYER, 1, "BET", 5, token=token))
        assert error_code_of(oia(client, "changebalance", booked)) is None
        forged = {**envelope("changebalance", change(PLAYER, 2, "BET", 5, token=token)), "hash": WRONG_HASH}
        assert error_code_of(oia(client, "changebalance", forged)) == "OP_20"
        assert oia(client, "balance", envelope("balance", {}), authorization=WRONG_HASH)["status_code"] == 403
        seen += [booked["hash"], sha1("changebalance" + SECRET), sha1("authenticate" + SECRET)]
        assert client.get("/stargame", params={"cmd": "getBalance", "uid": PLAYER}).status_code == 200
        unknown = envelope("changebalance", change(PLAYER, 3, "BET", 5, token=token))
        assert error_code_of(while_redis_is_busy(admin_redis_url, lambda: oia(client, "changebalance",
                                                                               unknown))) == "OP_47"
        seen.append(unknown["hash"])
    return seen


def while_redis_is_busy(url: str, call: Any) -> Any:
    busy = redis.Redis.from_url(url)
    started = threading.Event()

    def block() -> None:
        started.set()
        busy.eval(BUSY_LUA, 0, BUSY_US)

    blocker = threading.Thread(target=block)
    blocker.start()
    started.wait()
    try:
        threading.Event().wait(0.1)  # the script runs
        return call()
    finally:
        blocker.join()
        busy.close()


def assert_no_secret(text: str, secrets: list[str]) -> None:
    assert len(secrets) >= 10 and all(len(secret) >= 8 for secret in secrets)
    for secret in secrets:
        assert secret not in text, f"{secret!r} is in the log"


def test_json_lines_parse_carry_the_fields_and_hold_no_secret(tmp_path: Path,
                                                              protected_redis: PrivateRedis) -> None:
    url = protected_redis.admin_url  # redis://:PASSWORD@...
    server = serve(tmp_path, url, 'format = "json"\naccess_log = true', workers=2)
    try:
        secrets = callbacks(server, url)
        cli = walletd(server.config, "player", "show", PLAYER)
    finally:
        server.stop()
    text = server.log.read_text()
    lines = json_lines(text)  # every line of serve, its workers and its flush process is JSON
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]) for line in lines)
    started = lines_with(lines, "Started server process")
    assert len(started) == 2 and {line["logger"] for line in started} == {"uvicorn.error"}  # both workers
    assert lines_with(lines, "flusher") and {line["logger"] for line in lines_with(lines, "flusher")} == {
        "walletd.flusher"}  # the flush process's lines too
    [forbidden] = lines_with(lines, "refused (403)")
    assert (forbidden["operator"], forbidden["command"]) == (OPERATOR, "balance")
    [unknown] = lines_with(lines, "outcome unknown")
    assert (unknown["operator"], unknown["command"], unknown["transaction_id"]) == (OPERATOR, "changebalance", 3)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert {(line["method"], line["path"], line["status"]) for line in access} >= {
        ("POST", "/admin/sessions", 401), ("POST", "/oia/balance", 403), ("GET", "/stargame?cmd=getBalance&uid=611",
                                                                         200)}
    assert all(line["client"].startswith("127.0.0.1:") for line in access)
    json_lines(cli.stderr)  # a CLI command's log lines are JSON too
    assert_no_secret(text + cli.stdout + cli.stderr, [*secrets, REDIS_PASSWORD])


def test_text_lines_are_utc_one_per_record_with_redis_and_no_access_log(tmp_path: Path) -> None:
    server = serve(tmp_path, "embedded", 'format = "text"\nredis = "walletd"')
    try:
        redis_url = (tmp_path / "walletd" / "var" / "redis.url").read_text().strip()
        secrets = callbacks(server, redis_url)
    finally:
        server.stop()
    text = server.log.read_text()
    strays = [line for line in text.splitlines() if not TEXT_LINE.fullmatch(line)]
    assert not strays, strays  # Redis's lines and uvicorn's included
    assert " INFO uvicorn.error: Started server process" in text
    assert " INFO walletd.redis.server: Ready to accept connections" in text  # the embedded Redis's own log
    assert not (tmp_path / "walletd" / "var" / "redis" / "redis.log").exists()
    assert "uvicorn.access" not in text  # off by default
    [unknown] = [line for line in text.splitlines() if "outcome unknown" in line]
    assert unknown.endswith(f" operator={OPERATOR} command=changebalance transaction_id=3"), unknown
    assert_no_secret(text, secrets)
