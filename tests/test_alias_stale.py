"""A StarGame uid's alias read fails (on Redis Cluster its key lives in a slot of its own,
often on another primary than the player's account, which may be down): the last answer
cached for it still resolves the uid, up to ALIAS_STALE_MAX_S past its expiry; a uid never
resolved fails as before. Aliases never change once their player exists, so the stale
answer is the answer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.errors import WalletCallError
from app.runtime import Runtime
from app.settings import Settings
from app.wallet import ALIAS_STALE_MAX_S
from tests.redis_servers import private_redis
from tests.support import OPERATOR

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


async def test_an_alias_read_that_fails_answers_from_the_expired_cache(tmp_path: Path) -> None:
    with private_redis(tmp_path / "redis") as server:
        settings = Settings(data_dir=str(tmp_path / "var"))
        settings.redis.url = server.admin_url
        settings.storage.url = f"sqlite:///{tmp_path / 'ledger.db'}"
        settings.flusher.enabled = False
        settings.metrics.enabled = False
        async with Runtime(settings, server.admin_url, serving=True) as runtime:
            wallet = runtime.wallet
            await wallet.create_player("p1", "EUR", 100, "", "en", "", ["stargame:117"], operator_id=OPERATOR)
            assert await wallet.resolve("stargame", "117") == "p1"
            assert await wallet.resolve("stargame", "p1") == "p1"  # a miss: the uid is the player id
            expired = time.monotonic() - 1
            wallet.aliases.entries = {key: (player, expired) for key, (player, _) in wallet.aliases.entries.items()}
            server.stop()
            assert await wallet.resolve("stargame", "117") == "p1"
            assert await wallet.resolve("stargame", "p1") == "p1"
            with pytest.raises(WalletCallError):  # never resolved: nothing to answer from
                await wallet.resolve("stargame", "118")
            too_old = time.monotonic() - ALIAS_STALE_MAX_S - 1
            wallet.aliases.entries = {key: (player, too_old) for key, (player, _) in wallet.aliases.entries.items()}
            with pytest.raises(WalletCallError):
                await wallet.resolve("stargame", "117")
