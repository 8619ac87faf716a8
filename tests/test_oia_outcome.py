"""A booking whose reply is lost is "outcome unknown" (OP_47), never "wallet
unavailable" (OP_50), which tells the platform nothing moved (issue 9 item 12)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.errors import OutcomeUnknown, WalletUnavailable
from app.protocols.oia.handler import wallet_error
from app.redis_client import command_errors
from app.redis_server import EmbeddedRedis
from app.runtime import Runtime
from app.settings import Settings
from app.web import create_app
from tests.oia_calls import call, change, error_code, new_session
from tests.support import BUSY_LUA, OPERATOR

pytestmark = pytest.mark.anyio

BUSY_US = 3_000_000  # Redis runs a script for 3 s: long enough to kill it mid-call


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "private")
    server.start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def app_client(settings: Settings, url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, url)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://w") as c:
        yield c


async def killed_mid_call(server: EmbeddedRedis, client: httpx.AsyncClient, command: str, data: dict) -> dict:
    """The answer to a call that reached Redis while a script held it, when Redis is then killed."""
    busy = redis.Redis.from_url(server.url)
    blocker = asyncio.create_task(asyncio.to_thread(busy.eval, BUSY_LUA, 0, BUSY_US))
    await asyncio.sleep(0.2)
    answering = asyncio.create_task(call(client, command, data))
    await asyncio.sleep(0.3)  # the call was written and waits behind the script
    assert not answering.done()
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    answer = await answering
    with contextlib.suppress(redis.RedisError):
        await blocker
    busy.close()
    return answer


@pytest.mark.slow
@pytest.mark.parametrize("script_client", ["pipelined", "redis-py"])
@pytest.mark.parametrize("command", ["changebalance", "cancel"])
async def test_a_connection_lost_after_a_booking_was_sent_is_op_47(
    settings: Settings, private_redis: EmbeddedRedis, script_client: str, command: str
) -> None:
    settings.redis.script_client = script_client
    settings.redis.socket_timeout_ms = 10_000  # the loss, not a time-out, ends the call
    async with Runtime(settings, private_redis.url) as runtime:
        await runtime.wallet.create_player("611", "EUR", 10000, "DE", "en", "", [], operator_id=OPERATOR)
    async with app_client(settings, private_redis.url) as client:
        token = await new_session(client, "611")
        data = {"changebalance": change("611", 1, "BET", 5, token=token),
                "cancel": {"user_id": "611", "transaction_id": 1, "round_id": 1, "game_id": 200}}[command]
        answer = await killed_mid_call(private_redis, client, command, data)
        assert error_code(answer) == "OP_47", answer
        assert "outcome unknown" in answer["data"]["error_message"]
        # Not a booking: nothing can have moved, so Redis being gone is plainly unavailable.
        status = await call(client, "status", {"user_id": "611", "transaction_id": 1})
        assert error_code(status) == "OP_50"


def converted(exc: Exception) -> Exception:
    """What the client layer (app/redis_client.command_errors) hands a protocol for one of redis-py's exceptions."""
    try:
        with command_errors():
            raise exc
    except Exception as kind:  # noqa: BLE001 - whatever it became
        return kind
    raise AssertionError("unreachable")


@pytest.mark.parametrize("command, code", [("changebalance", "OP_47"), ("cancel", "OP_47"),
                                           ("balance", "OP_50"), ("status", "OP_50")])
def test_the_client_layers_error_kinds_map_to_the_protocols_answers(command: str, code: str) -> None:
    assert wallet_error(command, WalletUnavailable("not sent")).error_code == "OP_50"
    assert wallet_error(command, OutcomeUnknown("sent, no reply")).error_code == "OP_47"
    assert wallet_error(command, converted(redis.ConnectionError("connection lost"))).error_code == code
    assert wallet_error(command, converted(redis.TimeoutError("timeout"))).error_code == "OP_47"
    assert wallet_error(command, converted(redis.ResponseError("BUSY"))).error_code == "OP_50"
    assert wallet_error(command, RuntimeError("bug")).error_code == "OP_50"
