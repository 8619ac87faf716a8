"""Lua scripts: read once from lua/, registered with redis-py (reloads on NOSCRIPT)."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"
LEDGER = "lib/ledger.lua"
OIA = "lib/oia.lua"
# Each script with the shared preludes it is built from (prepended, in order).
PRELUDES: dict[str, tuple[str, ...]] = {
    "balance": (),
    "set_blocked": (),
    "stargame_book": (LEDGER,),
    "admin_adjust": (LEDGER,),
    "create_player": (LEDGER,),
    "oia_change": (LEDGER, OIA),
    "oia_cancel": (LEDGER, OIA),
    "oia_status": (),
    "oia_finish": (),
    "oia_balance": (),
    "oia_authenticate": (),
    "oia_session": (),
}


def source(name: str) -> str:
    assert name in PRELUDES, name
    if not LUA_DIR.is_dir():
        raise RuntimeError(f"Lua scripts not found at {LUA_DIR}: install walletd with 'pip install -e .'")
    parts = [(LUA_DIR / prelude).read_text() for prelude in PRELUDES[name]]
    return "\n".join([*parts, (LUA_DIR / f"{name}.lua").read_text()])


class Scripts:
    """One registered script per name in PRELUDES, as attributes (scripts.oia_change)."""

    balance: AsyncScript
    set_blocked: AsyncScript
    stargame_book: AsyncScript
    admin_adjust: AsyncScript
    create_player: AsyncScript
    oia_change: AsyncScript
    oia_cancel: AsyncScript
    oia_status: AsyncScript
    oia_finish: AsyncScript
    oia_balance: AsyncScript
    oia_authenticate: AsyncScript
    oia_session: AsyncScript

    def __init__(self, redis: Redis) -> None:
        for name in PRELUDES:
            setattr(self, name, redis.register_script(source(name)))

    def all(self) -> list[AsyncScript]:
        return [getattr(self, name) for name in PRELUDES]

    async def load(self, redis: Redis) -> None:
        for script in self.all():
            sha = await redis.script_load(script.script)
            assert sha == script.sha

    async def loaded(self, redis: Redis) -> bool:
        present = await redis.script_exists(*[s.sha for s in self.all()])
        return all(present)
