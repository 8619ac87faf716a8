"""Each Lua script declares its KEYS and ARGV counts in its header; app/scripts.py
refuses a call with other counts before anything reaches Redis. Every other test
that books also checks its calls against the headers (the check runs on each call);
here: every script has a header, the header matches what the script's code reads,
and a wrong count is refused with Redis untouched."""

from __future__ import annotations

import re

import pytest
import redis

from app.scripts import LUA_DIR, PRELUDES, Scripts, source
from app.wallet import Wallet

pytestmark = pytest.mark.anyio

INDEX = {what: re.compile(what + r"\[(\d+)\]") for what in ("KEYS", "ARGV")}


def code_of(text: str) -> str:
    """The script without its comments (the header's own KEYS[n] notes)."""
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def test_every_script_file_is_built_and_has_a_header() -> None:
    files = {path.name.removesuffix(".lua") for path in LUA_DIR.iterdir() if path.name.endswith(".lua")}
    assert files == set(PRELUDES)
    for name in PRELUDES:
        _, arity = source(name)
        assert arity.keys and arity.args, name


@pytest.mark.parametrize("name", list(PRELUDES))
def test_the_header_matches_what_the_script_reads(name: str) -> None:
    own = (LUA_DIR / f"{name}.lua").read_text()
    _, arity = source(name)
    for what, declared in (("KEYS", arity.keys), ("ARGV", arity.args)):
        used = {int(n) for n in INDEX[what].findall(code_of(own))}
        # The largest count is what the script reads in full; a smaller one is a mode reading fewer.
        assert max(used, default=0) == max(declared), (name, what, sorted(used), sorted(declared))


def test_the_preludes_declare_no_counts() -> None:
    """A count line in a prelude would make the scripts built from it ambiguous."""
    for prelude in {p for preludes in PRELUDES.values() for p in preludes}:
        assert not re.search(r"^-- (KEYS|ARGV):", (LUA_DIR / prelude).read_text(), re.MULTILINE), prelude


async def test_a_wrong_count_is_refused_before_redis(wallet: Wallet, sync_redis: redis.Redis) -> None:
    calls_before, keys_before = sync_redis.info("commandstats"), sync_redis.keys()
    scripts: Scripts = wallet.scripts
    oia_keys = [f"k{i}" for i in range(8)]
    with pytest.raises(AssertionError, match="oia_change: called with 8 KEYS and 17 ARGV"):
        await scripts.oia_change(keys=oia_keys, args=["1"] * 17)
    with pytest.raises(AssertionError, match="oia_change: called with 7 KEYS and 22 ARGV"):
        await scripts.oia_change(keys=oia_keys[:7], args=["1"] * 22)
    with pytest.raises(AssertionError, match="balance: called with 1 KEYS and 1 ARGV"):
        await scripts.balance(keys=["k"], args=["x"])
    calls = sync_redis.info("commandstats")
    for command in ("cmdstat_evalsha", "cmdstat_eval"):
        assert calls.get(command) == calls_before.get(command), command
    assert sync_redis.keys() == keys_before
