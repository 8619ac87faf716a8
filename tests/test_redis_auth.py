"""Redis URLs with a password, an ACL user, a db number and TLS, against private
redis-servers: the handshake (AUTH [user] password, SELECT db) completes before
any call uses the connection, at connect and at every reconnect; a failed
handshake is a clear WalletUnavailable and leaves no connection behind; the
settings refuse URLs the clients would misread."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.errors import OutcomeUnknown, WalletUnavailable
from app.redis_client import connect
from app.redis_pipe import PipelinedRedis
from app.scripts import Script
from app.settings import ConfigError, RedisSettings, Settings, check
from tests.redis_servers import PrivateRedis, private_redis, tls_supported

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-pw"
CALLS = 200
INCR = "return redis.call('INCR', KEYS[1])"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path, password=PASSWORD) as running:
        admin = redis.Redis.from_url(running.admin_url)
        admin.acl_setuser("booker", enabled=True, passwords=["+booker-pw"], keys=["*"], commands=["+@all"])
        admin.close()
        yield running


def admin(server: PrivateRedis, db: int) -> redis.Redis:
    return redis.Redis.from_url(server.admin_url.replace("/0", f"/{db}"), decode_responses=True)


def counts(server: PrivateRedis) -> dict[int, int]:
    """Non-empty dbs -> how many keys: where the calls landed."""
    info = admin(server, 0).info("keyspace")
    return {int(name.removeprefix("db")): value["keys"] for name, value in info.items()}


def kill_clients(server: PrivateRedis) -> None:
    with contextlib.closing(admin(server, 0)) as client:
        client.client_kill_filter(_type="normal", skipme=True)


async def issue_until_connected(client: PipelinedRedis, prefix: str) -> list:
    """Calls issued at every loop turn while the (re)connect is under way, then awaited."""
    calls = [asyncio.ensure_future(client.execute("SET", f"{prefix}-first", 0))]
    while not calls[0].done() and len(calls) < CALLS:
        calls.append(asyncio.ensure_future(client.execute("SET", f"{prefix}-{len(calls)}", 1)))
        await asyncio.sleep(0)
    return await asyncio.gather(*calls, return_exceptions=True)


@pytest.mark.slow
async def test_calls_racing_the_connect_land_in_the_configured_db(server: PrivateRedis) -> None:
    client = PipelinedRedis(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/2", timeout_s=2.0, connect_timeout_s=2.0)
    try:
        replies = await issue_until_connected(client, "c")
        assert len(replies) > 2  # calls did arrive while AUTH and SELECT were under way
        assert set(replies) == {"OK"}, {repr(r) for r in replies}
        assert counts(server) == {2: len(replies)}
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_calls_racing_a_reconnect_land_in_the_configured_db(server: PrivateRedis) -> None:
    client = PipelinedRedis(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/2", timeout_s=2.0, connect_timeout_s=2.0)
    total = 0
    try:
        for round_ in range(5):
            first = await client.connect()
            kill_clients(server)  # CLIENT KILL: the next calls reconnect
            for _ in range(100):
                if first.gone:
                    break
                await asyncio.sleep(0.01)
            replies = await issue_until_connected(client, f"r{round_}")
            assert all(reply == "OK" for reply in replies), {repr(r) for r in replies}
            total += len(replies)
        assert counts(server) == {2: total}
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_calls_in_flight_when_killed_either_land_in_the_db_or_fail_precisely(server: PrivateRedis) -> None:
    client = PipelinedRedis(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/2", timeout_s=2.0, connect_timeout_s=2.0)
    try:
        await client.connect()

        async def kill_soon() -> None:
            await asyncio.sleep(0.002)
            await asyncio.to_thread(kill_clients, server)

        killer = asyncio.ensure_future(kill_soon())
        replies = []
        for batch in range(20):  # keep calls flowing through the kill and the reconnect
            replies += await asyncio.gather(*(client.execute("SET", f"b{batch}-{i}", 1) for i in range(50)),
                                            return_exceptions=True)
        await killer
        assert {type(r) for r in replies} <= {str, WalletUnavailable, OutcomeUnknown}
        assert set(counts(server)) <= {2}  # nothing ever ran unselected, in db 0
    finally:
        await client.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pipelined", "redis-py"])
async def test_an_acl_user_authenticates_as_itself(server: PrivateRedis, kind: str) -> None:
    url = f"redis://booker:booker-pw@127.0.0.1:{server.port}/3"
    client = PipelinedRedis(url, 2.0, 2.0) if kind == "pipelined" else connect(url, RedisSettings())
    try:
        script = Script(client, INCR)
        replies = await asyncio.gather(*(script(keys=["n"]) for _ in range(50)))
        assert sorted(replies) == list(range(1, 51))
        assert counts(server) == {3: 1}
        users = {entry["user"] for entry in admin(server, 0).client_list()}
        assert "booker" in users
    finally:
        await client.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("url", ["redis://:wrong-pw@127.0.0.1:{port}/2",
                                 "redis://booker:wrong-pw@127.0.0.1:{port}/2",
                                 f"redis://:{PASSWORD}@127.0.0.1:{{port}}/99"])
async def test_a_failed_handshake_is_clear_and_leaves_no_connection(server: PrivateRedis, url: str) -> None:
    client = PipelinedRedis(url.format(port=server.port), timeout_s=2.0, connect_timeout_s=2.0)
    try:
        for _ in range(2):  # and again: the refused connection was not kept for the next call
            with pytest.raises(WalletUnavailable) as caught:
                await client.execute("SET", "k", 1)
            message = str(caught.value)
            assert "wrong-pw" not in message and PASSWORD not in message
            assert ("refused AUTH" in message) if "wrong" in url else ("refused SELECT 99" in message)
        assert client.connection is None
        await asyncio.sleep(0.05)
        assert len(admin(server, 0).client_list()) == 1  # only the test's own connection
        assert counts(server) == {}
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_a_password_with_url_escapes_is_sent_unescaped(tmp_path: Path) -> None:
    password = "p@ss:w/rd%"
    with private_redis(tmp_path, password=password) as running:
        client = PipelinedRedis(f"redis://:p%40ss%3Aw%2Frd%25@127.0.0.1:{running.port}/1", 2.0, 2.0)
        try:
            assert await client.execute("SET", "k", "v") == "OK"
        finally:
            await client.aclose()


def tls_urls(server: PrivateRedis) -> tuple[str, str]:
    cert = server.directory / "cert.pem"
    good = f"rediss://booker:booker-pw@127.0.0.1:{server.port}/4?ssl_ca_certs={cert}"
    return good, good.split("?", maxsplit=1)[0]  # the second trusts only the system CAs


@pytest.mark.slow
@pytest.mark.skipif(not tls_supported(), reason="needs a redis-server built with TLS and openssl")
@pytest.mark.parametrize("kind", ["pipelined", "redis-py"])
async def test_tls_works_for_both_clients_and_an_untrusted_certificate_is_refused(tmp_path: Path,
                                                                                    kind: str) -> None:
    with private_redis(tmp_path, password=PASSWORD, tls=True) as server:
        with contextlib.closing(redis.Redis.from_url(server.ready_url())) as superuser:
            superuser.acl_setuser("booker", enabled=True, passwords=["+booker-pw"], keys=["*"], commands=["+@all"])
            good, untrusted = tls_urls(server)

            def client_for(url: str) -> PipelinedRedis | redis.asyncio.Redis:
                slow = RedisSettings(connect_timeout_ms=5000)  # 20 TLS handshakes at once on a busy CI machine
                return PipelinedRedis(url, 2.0, 2.0) if kind == "pipelined" else connect(url, slow)

            client = client_for(good)
            try:
                replies = await asyncio.gather(*(Script(client, INCR)(keys=["n"]) for _ in range(20)))
                assert sorted(replies) == list(range(1, 21))
                superuser.select(4)
                assert superuser.get("n") == b"20"
            finally:
                await client.aclose()
            client = client_for(untrusted)
            try:
                with pytest.raises(WalletUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
                    await Script(client, INCR)(keys=["n"])
            finally:
                await client.aclose()


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:6379", "must be 'embedded', redis://"),
    ("redis://booker@127.0.0.1:6379/0", "names user 'booker' without a password"),
    ("redis://:pw@127.0.0.1:6379/two", "db after '/' must be a number"),
    ("rediss://:pw@127.0.0.1:6379/0?ssl_ca_certs=/nonexistent/ca.pem", "No such file"),
    ("rediss://:pw@127.0.0.1:6379/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
])
def test_settings_refuse_redis_urls_the_clients_would_misread(url: str, reason: str) -> None:
    settings = Settings()
    settings.redis.url = url
    with pytest.raises(ConfigError, match=reason) as caught:
        check(settings)
    assert ":pw@" not in str(caught.value)


@pytest.mark.parametrize("url", ["redis://:pw@10.0.0.1:6380/2", "redis://booker:pw@db.internal/3",
                                 "rediss://:pw@127.0.0.1:6379/0", "unix:///run/redis.sock?db=2&password=pw"])
def test_settings_accept_every_documented_redis_url_form(url: str) -> None:
    settings = Settings()
    settings.redis.url = url
    check(settings)


@pytest.mark.slow
async def test_the_handshake_time_out_is_bounded(tmp_path: Path) -> None:
    # A server that accepts but never answers (stopped with SIGSTOP) must not hang the caller.
    with private_redis(tmp_path, password=PASSWORD) as running:
        assert running.process is not None
        running.process.send_signal(19)  # SIGSTOP
        try:
            client = PipelinedRedis(f"redis://:{PASSWORD}@127.0.0.1:{running.port}/2", 2.0, 0.3)
            started = time.monotonic()
            with pytest.raises(WalletUnavailable, match="no reply to the handshake"):
                await client.execute("PING")
            assert time.monotonic() - started < 1.5
            assert client.connection is None
            await client.aclose()
        finally:
            running.process.send_signal(18)  # SIGCONT


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pipelined", "redis-py"])
async def test_a_unix_socket_with_password_and_db(tmp_path: Path, kind: str) -> None:
    sock = tmp_path / "redis.sock"
    extra = ("--unixsocket", str(sock), "--unixsocketperm", "700")
    with private_redis(tmp_path, password=PASSWORD, extra=extra) as running:
        url = f"unix://{sock}?db=7&password={PASSWORD}"
        client = PipelinedRedis(url, 2.0, 2.0) if kind == "pipelined" else connect(url, RedisSettings())
        try:
            replies = await asyncio.gather(*(Script(client, INCR)(keys=["n"]) for _ in range(20)))
            assert sorted(replies) == list(range(1, 21))
            assert counts(running) == {7: 1}
        finally:
            await client.aclose()
