"""Is the Redis walletd books in durable? Checked by `walletd serve` at start.

An answered booking must survive a crash: that needs the AOF on, fsynced before
every reply, and no key ever evicted (an evicted account or ledger stream is
money lost). See README "Durability".
"""

from __future__ import annotations

import logging

from redis.exceptions import ResponseError

from app.redis_client import RedisClient

log = logging.getLogger("walletd.redis")

# CONFIG GET parameter -> the value durability needs.
REQUIRED = {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"}


class NotDurable(Exception):
    pass


async def problems(redis: RedisClient) -> list[str]:
    """What is wrong with the server's settings, in words (empty: durable)."""
    try:
        found = {name: await redis.config_get(name) for name in REQUIRED}
    except ResponseError as exc:  # CONFIG renamed away, or an ACL without +config|get
        refused = f"its settings cannot be read (CONFIG GET refused: {exc}); allow CONFIG GET for walletd's user"
        return [refused]
    wrong = []
    for name, wanted in REQUIRED.items():
        value = found[name].get(name)
        if value != wanted:
            wrong.append(f"{name} is {value!r}, needs {wanted!r}")
    return wrong


async def check(redis: RedisClient, require_durable: bool) -> None:
    """Raise NotDurable naming each wrong setting; with require_durable off, warn instead."""
    wrong = await problems(redis)
    if not wrong:
        return
    text = "; ".join(wrong)
    if require_durable:
        raise NotDurable(f"Redis is not durable: {text}. Fix Redis, or set [redis] require_durable = false "
                         f"to run without the durability guarantee")
    log.warning("[redis] require_durable = false: Redis is not durable (%s); an answered booking "
                "may be lost if Redis crashes", text)
