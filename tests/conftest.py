"""Fixtures only: one private redis-server per session (AOF always), flushed per test;
one PostgreSQL server per session (tests/postgres_servers.py), a fresh database per test.
Shared helpers and constants live in tests/support.py."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.redis_server import EmbeddedRedis
from app.runtime import Runtime
from app.settings import OperatorSettings, Settings
from app.wallet import Wallet
from tests.outage import SG_BUDGET_MS
from tests.postgres_servers import ENV_URL, drop_database, fresh_database, private_postgres
from tests.process import Server
from tests.redis_cluster import LocalCluster, local_cluster
from tests.redis_replicas import ReplicatedRedis, replicated_redis
from tests.support import ADMIN_TOKEN, OPERATOR, OTHER_OPERATOR, OTHER_SECRET, SECRET, serving

os.environ.pop("WALLETD_CONFIG", None)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis-session"))
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    yield redis_server
    client.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three primaries, AOF always, shared by the session: tests must not kill its
    nodes or move its slots (start a private one with local_cluster for that)."""
    with local_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    """The session cluster, emptied, as walletd's redis.url."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def cluster_walletd(tmp_path: Path, cluster_url: str) -> Iterator[Server]:
    """`walletd serve` (one worker, cluster mode detected) on the emptied session cluster,
    StarGame's budget roomy (tests/outage.py) so that a loaded machine's delays are no refusals."""
    server = Server(tmp_path / "walletd", cluster_url, budget_ms=SG_BUDGET_MS)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[ReplicatedRedis]:
    """A private primary and one replica, AOF always (tests/redis_replicas.py); the test
    may pause and resume the replica."""
    with replicated_redis(tmp_path / "replicated") as pair:
        yield pair


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    s = Settings(data_dir=str(tmp_path / "var"))
    s.redis.url = redis_url
    s.storage.url = f"sqlite:///{tmp_path / 'ledger.db'}"
    s.flusher.enabled = False  # tests drain explicitly, so counts are deterministic
    s.flusher.claim_idle_ms = 0
    s.oia.operators = [OperatorSettings(id=OPERATOR, secret_key=SECRET),
                       OperatorSettings(id=OTHER_OPERATOR, secret_key=OTHER_SECRET,
                                        currencies=["EUR"], disabled_games=[666])]
    s.oia.game_launch_host = "games.example.com"
    s.admin.token = ADMIN_TOKEN
    return s


@pytest.fixture
async def wallet(settings: Settings) -> AsyncIterator[Wallet]:
    async with Runtime(settings, settings.redis.url) as runtime:
        yield runtime.wallet


@pytest.fixture
async def player(wallet: Wallet) -> str:
    """Player 611 with EUR 100.00, as in the OIA seed's examples."""
    await wallet.create_player("611", "EUR", 10000, "DE", "en", "John Doe", [], operator_id=OPERATOR)
    return "611"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings) as c:
        yield c


@pytest.fixture
def short_retention(settings: Settings) -> Settings:
    """Transaction and round records expire after 1 s."""
    settings.oia.retention_s = 1
    return settings


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server's URL (as its superuser, on its `postgres` database):
    WALLETD_TEST_POSTGRES_URL when set, else a private server from the pgserver wheel."""
    if os.environ.get(ENV_URL):
        yield os.environ[ENV_URL]
        return
    with private_postgres(tmp_path_factory.mktemp("postgres-session")) as server:
        yield server.url


@pytest.fixture
def postgresql_url(postgres_server: str) -> Iterator[str]:
    """An empty database of its own on the session's server; dropped after the test."""
    url = fresh_database(postgres_server)
    yield url
    drop_database(postgres_server, url)


@pytest.fixture
def no_walletd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the shell's WALLETD_* variables: a config test sets the ones it means to."""
    for name in list(os.environ):
        if name.startswith("WALLETD_"):
            monkeypatch.delenv(name)
