"""Lua scripts: read once from lua/, registered with redis-py (reloads on NOSCRIPT)."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"
PRELUDE = "lib/ledger.lua"
# Scripts that book money get the shared ledger prelude.
BOOKING = ("stargame_book", "admin_adjust", "create_player")
PLAIN = ("balance",)


def source(name: str) -> str:
    assert name in BOOKING or name in PLAIN, name
    if not LUA_DIR.is_dir():
        raise RuntimeError(f"Lua scripts not found at {LUA_DIR}: install walletd with 'pip install -e .'")
    body = (LUA_DIR / f"{name}.lua").read_text()
    if name in BOOKING:
        return (LUA_DIR / PRELUDE).read_text() + "\n" + body
    return body


class Scripts:
    def __init__(self, redis: Redis) -> None:
        self.balance = redis.register_script(source("balance"))
        self.stargame_book = redis.register_script(source("stargame_book"))
        self.admin_adjust = redis.register_script(source("admin_adjust"))
        self.create_player = redis.register_script(source("create_player"))

    def all(self) -> list:
        return [self.balance, self.stargame_book, self.admin_adjust, self.create_player]

    async def load(self, redis: Redis) -> None:
        for script in self.all():
            sha = await redis.script_load(script.script)
            assert sha == script.sha

    async def loaded(self, redis: Redis) -> bool:
        present = await redis.script_exists(*[s.sha for s in self.all()])
        return all(present)
