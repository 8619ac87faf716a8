"""Lua scripts: read once from lua/, run by EVALSHA (EVAL once more on NOSCRIPT).

A Script call ends in a reply or one of app/errors.py's kinds, whichever
client runs it (the protocols never see redis-py's exceptions):
- WalletRefused: an error reply (the script ran and raised, or Redis refused it).
- WalletUnavailable: the script was certainly not sent (or Redis refused it
  unrun: LOADING, NOAUTH...); nothing moved.
- OutcomeUnknown: it may have been sent and no reply came; it may have run.
The pipelined client (app/redis_pipe.py) raises these itself and knows exactly
whether its bytes were written. redis-py's errors are converted here, and
conservatively: redis-py cannot always tell a failure before the write from
one after it, so only errors that can only happen before anything is sent
(connecting, authenticating, no free pool connection) are WalletUnavailable;
every other connection error or time-out is OutcomeUnknown.

Each script's header declares how many KEYS and ARGV it takes ("-- KEYS: 8",
"-- ARGV: 22 | 27": one of these counts); every call is checked against it
before anything is sent, since a wrong count is a programmer error that Lua
would only notice as a nil deep inside the script.

Each header also says whether replicas must confirm the script's answer before it
is given ("-- WAIT: yes" or "-- WAIT: no"; redis.replica_acks, app/redis_pipe.py):
yes for every script whose answer vouches for money moved or a decision recorded
(bookings, cancels, settlements, admin changes, and oia_status, which a platform
uses to decide after an outcome-unknown answer); no for the reads and the session
scripts (a session refresh lost in a failover moves no money). A yes-script that
answers from an earlier decision (a retry, a settled note) rewrites one field of
that decision's record with the value it holds (lua/lib/ledger.lua reaffirm): the
WAIT after it then covers that decision, whichever connection wrote it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    MaxConnectionsError,
    NoScriptError,
    RedisError,
    ResponseError,
)

from app.errors import OutcomeUnknown, WalletCallError, WalletRefused, WalletUnavailable
from app.redis_cluster_pipe import ClusterPipelinedRedis
from app.redis_pipe import PipelinedRedis, evalsha_head

if TYPE_CHECKING:  # app/redis_client imports this module: the type only, for mypy
    from app.redis_client import RedisClient


def lua_dir() -> Traversable:
    """lua/ inside the installed package (pyproject.toml maps it to app/lua), else the
    source checkout's top-level lua/ (tests, an editable install)."""
    packaged = files("app") / "lua"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "lua"


# Located once at import; read() names a broken install instead of a missing file.
LUA_DIR = lua_dir()
# Shared Lua preludes (lua/lib/), prepended to the scripts that use them.
LEDGER = "lib/ledger.lua"
BOOK = "lib/book.lua"  # book(): needs LEDGER before it
OIA = "lib/oia.lua"
OWNER = "lib/owner.lua"
# Each script with the shared preludes it is built from (prepended, in order).
PRELUDES: dict[str, tuple[str, ...]] = {
    "balance": (),
    "set_blocked": (LEDGER,),
    "stargame_book": (LEDGER, BOOK),
    "stargame_reconcile": (LEDGER, BOOK),
    "admin_adjust": (LEDGER, BOOK),
    "create_player": (LEDGER,),
    "oia_change": (LEDGER, BOOK, OIA, OWNER),
    "oia_cancel": (LEDGER, BOOK, OIA, OWNER),
    "oia_status": (LEDGER, OIA, OWNER),
    "oia_finish": (LEDGER, OWNER),
    "oia_balance": (OWNER,),
    "oia_authenticate": (OWNER,),
    "oia_session": (OWNER,),
}

# A header line declaring a count, or alternative counts separated by " | ".
# Distinct (KEYS, ARGV) counts one script is called with (oia_change: 2); past it a
# caller builds its lists wrongly, and the pre-encoded heads would grow unbounded.
HEAD_SHAPES_MAX = 16
COUNT_LINE = re.compile(r"^-- (KEYS|ARGV): (\d+(?: \| \d+)*)(?:\s|$)", re.MULTILINE)
# Whether the script's answer waits for redis.replica_acks replicas (module docstring).
WAIT_LINE = re.compile(r"^-- WAIT: (yes|no)(?:\s|$)", re.MULTILINE)


@dataclass(frozen=True)
class Arity:
    """The KEYS and ARGV counts a script's header allows."""

    name: str
    keys: frozenset[int]
    args: frozenset[int]
    confirm: bool = False  # "-- WAIT: yes"


def read(path: str) -> str:
    if not LUA_DIR.is_dir():
        raise RuntimeError(f"Lua scripts not found in the package (app/lua) nor at {LUA_DIR}: a broken install")
    return (LUA_DIR / path).read_text()


def arity(name: str, header: str) -> Arity:
    lines = COUNT_LINE.findall(header)
    found = dict(lines)
    assert len(lines) == len(found) and found.keys() == {"KEYS", "ARGV"}, \
        f"lua/{name}.lua must declare '-- KEYS: n' and '-- ARGV: n' once each"
    keys, args = (frozenset(int(n) for n in found[what].split("|")) for what in ("KEYS", "ARGV"))
    waits = WAIT_LINE.findall(header)
    assert len(waits) == 1, f"lua/{name}.lua must declare '-- WAIT: yes' or '-- WAIT: no' once"
    return Arity(name, keys, args, waits[0] == "yes")


def source(name: str) -> tuple[str, Arity]:
    """The script's text (its preludes prepended) and the counts its header declares."""
    assert name in PRELUDES, name
    own = read(f"{name}.lua")
    parts = [read(prelude) for prelude in PRELUDES[name]]
    return "\n".join([*parts, own]), arity(name, own)


class ScriptClient(Protocol):
    """redis-py's asyncio client, or the hot path's PipelinedRedis (ClusterPipelinedRedis)."""

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Awaitable[Any]: ...

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Awaitable[Any]: ...

    async def aclose(self) -> None: ...


class Script:
    """arity None: counts unchecked and no replica confirmation (an ad-hoc script without
    a header, in tests)."""

    def __init__(self, client: ScriptClient, text: str, arity: Arity | None = None) -> None:
        self.client = client
        self.script = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - Redis names scripts so
        self.arity = arity
        self.confirm = arity is not None and arity.confirm  # replicas confirm its answer (replica_acks)
        # The pipelined client takes each call's EVALSHA start encoded once per
        # (KEYS, ARGV) count: a script has one or a few such shapes.
        self.pipelined = client if isinstance(client, (PipelinedRedis, ClusterPipelinedRedis)) else None
        self.heads: dict[tuple[int, int], bytes] = {}
        # Awaited before a script is sent again after NOSCRIPT (app/ledger/guard.py ColdStart.confirm).
        self.before_reload: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        declared = self.arity
        if declared is not None:
            assert len(keys) in declared.keys and len(args) in declared.args, \
                (f"{declared.name}: called with {len(keys)} KEYS and {len(args)} ARGV, its header declares "
                 f"KEYS {sorted(declared.keys)} and ARGV {sorted(declared.args)}")
        try:
            try:
                if self.pipelined is not None:
                    return await self.pipelined.evalsha_encoded(self.head(len(keys), len(args)), (*keys, *args),
                                                                confirm=self.confirm)
                return await self.client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                # Redis restarted without its script cache, maybe without its data too (its
                # AOF lost or cut): the cold-start guard compares it with the ledger store
                # again before anything is written (it raises if walletd must refuse),
                # instead of at its next check, which could follow bookings whose entry ids
                # the store already holds. Then EVAL also caches the script again.
                if self.before_reload is not None:
                    await self.before_reload()
                if self.pipelined is not None:
                    return await self.pipelined.eval(self.script, len(keys), *keys, *args, confirm=self.confirm)
                return await self.client.eval(self.script, len(keys), *keys, *args)
        except WalletCallError:
            raise
        except ResponseError as exc:
            raise WalletRefused(str(exc)) from exc
        except (RedisError, OSError) as exc:
            raise wallet_error(exc) from exc

    def head(self, numkeys: int, numargs: int) -> bytes:
        head = self.heads.get((numkeys, numargs))
        if head is None:
            assert len(self.heads) < HEAD_SHAPES_MAX, f"{self.sha}: called with too many KEYS/ARGV counts"
            head = self.heads[(numkeys, numargs)] = evalsha_head(self.sha, numkeys, numkeys + numargs)
        return head


# redis-py error texts that only its connect step produces (redis/asyncio/connection.py),
# plus the pool's "no free connection"; before any of them nothing was written.
BEFORE_SEND_TEXTS = ("connecting to", "Timeout connecting to server", "No connection available",
                     "max number of clients reached", "Invalid Database", "Invalid Username or Password")


def wallet_error(exc: Exception) -> WalletCallError:
    """A redis-py connection error or time-out as app/errors.py's kind (see module docstring)."""
    before_send = isinstance(exc, (AuthenticationError, AuthorizationError, BusyLoadingError, MaxConnectionsError))
    if before_send or any(text in str(exc) for text in BEFORE_SEND_TEXTS):
        return WalletUnavailable(f"Redis unavailable, the script was not sent: {exc}")
    return OutcomeUnknown(f"no reply from Redis, the script may have run: {exc}")


class Scripts:
    """One script per name in PRELUDES, as attributes (scripts.oia_change)."""

    balance: Script
    set_blocked: Script
    stargame_book: Script
    stargame_reconcile: Script
    admin_adjust: Script
    create_player: Script
    oia_change: Script
    oia_cancel: Script
    oia_status: Script
    oia_finish: Script
    oia_balance: Script
    oia_authenticate: Script
    oia_session: Script

    def __init__(self, client: ScriptClient) -> None:
        self.client = client
        for name in PRELUDES:
            setattr(self, name, Script(client, *source(name)))

    def check_before_reload(self, check: Callable[[], Awaitable[None]]) -> None:
        for script in self.all():
            script.before_reload = check

    def all(self) -> list[Script]:
        return [getattr(self, name) for name in PRELUDES]

    async def load(self, redis: RedisClient) -> None:
        """On Redis Cluster through the cluster client, on every primary (and each one
        that joins later), since every script goes through it there."""
        if isinstance(self.client, ClusterPipelinedRedis):
            await self.client.load_scripts([script.script for script in self.all()])
            return
        for script in self.all():
            sha = await redis.script_load(script.script)
            assert sha == script.sha

    async def reload_missing(self, redis: RedisClient) -> int:
        """Loads the scripts Redis lost (a restart, SCRIPT FLUSH); returns how many.
        Not needed for correctness (Script falls back to EVAL), it spares bookings that."""
        if isinstance(self.client, ClusterPipelinedRedis):
            return await self.client.load_scripts([script.script for script in self.all()], only_missing=True)
        present = await redis.script_exists(*[s.sha for s in self.all()])
        missing = [script for script, there in zip(self.all(), present, strict=True) if not there]
        for script in missing:
            await redis.script_load(script.script)
        return len(missing)
