"""walletd's tools on Redis Cluster (README "Scaling out"): verify, rebuild, `walletd info`
and the CLI's commands against the session's three primaries (AOF always), and a rebuild
cut off by a primary killed on a private cluster. Players are picked per primary
(tests/cluster_walletd.py), so every node holds accounts, aliases elsewhere, and
ledger entries; what a tool must find is checked on the node that holds it."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import anyio
import pytest
import redis

from app import cli
from app.keys import META_REBUILD_RUNNING, Keys
from app.ledger import LedgerEntry, open_store
from app.ledger.rebuild import READ_BATCH, RebuildRefused, rebuild
from app.ledger.sqlite import SqliteStore
from app.ledger.verify import verify
from app.protocols.stargame.wallet import book as stargame_book
from app.redis_client import connect
from app.runtime import Runtime
from app.settings import OperatorSettings, Settings
from tests.cluster_walletd import PARTITIONS, Placement, account_on, cluster_snapshot, keys_on
from tests.process import walletd, write_config
from tests.rebuild_calls import same_state
from tests.redis_cluster import ClusterNode, LocalCluster, local_cluster
from tests.support import ADMIN_TOKEN, OPERATOR, SECRET, drain

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

OPENING_MINOR = 10_000
PLAYERS_PER_NODE = 2


def cluster_settings(directory: Path, url: str) -> Settings:
    settings = Settings(data_dir=str(directory / "var"))
    settings.redis.url = url
    settings.storage.url = f"sqlite:///{directory / 'ledger.db'}"
    settings.flusher.enabled = False  # drained explicitly: counts are deterministic
    settings.flusher.claim_idle_ms = 0
    settings.oia.operators = [OperatorSettings(id=OPERATOR, secret_key=SECRET)]
    settings.admin.token = ADMIN_TOKEN
    return settings


def config_of(settings: Settings, directory: Path) -> Path:
    """The settings as a walletd.toml a CLI process reads."""
    return write_config(directory, 0, settings.redis.url, 40, storage_url=settings.storage.url,
                        data_dir=Path(settings.data_dir))


async def workload(settings: Settings, cluster: LocalCluster) -> dict[str, int]:
    """Players on every primary, each with a StarGame alias (a key in a slot of its own),
    an admin deposit and withdrawal, a StarGame bet and win; one blocked. Returns each
    player's balance."""
    placement = Placement(cluster)
    players = [p for found in placement.spread(PLAYERS_PER_NODE, "tool").values() for p in found]
    balances = {}
    async with Runtime(settings, settings.redis.url) as runtime:
        wallet = runtime.wallet
        for n, player in enumerate(players):
            await wallet.create_player(player, "EUR", OPENING_MINOR, "DE", "en", "", [f"stargame:9{n}"],
                                       operator_id=OPERATOR)
            assert (await wallet.adjust(player, "deposit", 500 + n, f"dep-{player}")).code == "OK"
            assert (await wallet.adjust(player, "withdraw", 200, f"wd-{player}")).code == "OK"
            assert (await stargame_book(wallet, player, 100, 250 + n, 0)).code == "OK"
            balances[player] = OPENING_MINOR + 500 + n - 200 - 100 + 250 + n
        await wallet.set_blocked(players[-1], True)
    return balances


async def run_cli(*args: str) -> int:
    return await anyio.to_thread.run_sync(cli.main, list(args))


async def test_verify_passes_after_a_workload_on_every_node_and_finds_a_balance_changed_on_another(
        tmp_path: Path, cluster_url: str, redis_cluster: LocalCluster) -> None:
    settings = cluster_settings(tmp_path, cluster_url)
    balances = await workload(settings, redis_cluster)
    placement = Placement(redis_cluster)
    assert {placement.node_of(p) for p in balances} == set(redis_cluster.primaries)
    async with Runtime(settings, cluster_url, ledger=True) as runtime:
        assert runtime.cluster and runtime.flusher is not None
        assert await verify(runtime.flusher) == []  # drains first: every entry stored
        assert runtime.store is not None
        assert runtime.store.player_sums() == balances
    # A balance changed behind walletd's back, on a primary other than the one redis.url names.
    player = next(p for p in balances if placement.node_of(p) is not redis_cluster.primaries[0])
    node = placement.node_of(player)
    with contextlib.closing(node.client()) as client:
        client.hincrby(Keys(PARTITIONS).account(player), "bal", -7)
    async with Runtime(settings, cluster_url, ledger=True) as runtime:
        assert runtime.flusher is not None
        problems = await verify(runtime.flusher)
    assert problems == [f"player {player}: balance {balances[player] - 7} in Redis, ledger says "
                        f"{balances[player]} (differs by -7)"]


async def test_verify_scans_every_primary(tmp_path: Path, cluster_url: str, redis_cluster: LocalCluster) -> None:
    """redis-py's cluster SCAN is sent to every primary: an account on each node is read,
    and one missing on a node is reported (not silently skipped)."""
    settings = cluster_settings(tmp_path, cluster_url)
    balances = await workload(settings, redis_cluster)
    placement = Placement(redis_cluster)
    gone = next(p for p in balances if placement.node_of(p) is redis_cluster.primaries[2])
    with contextlib.closing(placement.node_of(gone).client()) as client:
        client.delete(Keys(PARTITIONS).account(gone))
    async with Runtime(settings, cluster_url, ledger=True) as runtime:
        assert runtime.flusher is not None
        problems = await verify(runtime.flusher)
    assert problems == [f"player {gone}: in the ledger store (sum {balances[gone]}) but not in Redis"]


async def test_rebuild_writes_each_partition_to_its_owner_after_every_primary_lost_its_data(
        tmp_path: Path, cluster_url: str, redis_cluster: LocalCluster) -> None:
    settings = cluster_settings(tmp_path, cluster_url)
    balances = await workload(settings, redis_cluster)
    assert await drain(settings) > 0
    before = cluster_snapshot(redis_cluster)
    redis_cluster.flush()  # a cold start of every primary: no AOF left
    config = config_of(settings, tmp_path / "cli")
    assert await run_cli("--config", str(config), "rebuild") == 0
    after = cluster_snapshot(redis_cluster)
    assert same_state(before, after) == []  # every key back, on the node that owned it
    placement = Placement(redis_cluster)
    for player, balance in balances.items():
        assert int(account_on(placement.node_of(player), player)["bal"]) == balance
    aliases = {key for node in redis_cluster.primaries for key in keys_on(node, "w:alias:*")}
    assert {f"w:alias:stargame:9{n}" for n in range(len(balances))} <= aliases
    with contextlib.closing(open_store(settings.storage_url)) as store:
        assert store.player_sums() == balances
    with contextlib.closing(redis.RedisCluster.from_url(cluster_url, decode_responses=True)) as client:
        assert not client.hexists(Keys.meta(), META_REBUILD_RUNNING)
    assert await run_cli("--config", str(config), "verify") == 0


class KillingStore(SqliteStore):
    """The real SQLite store, killing a primary when rebuild reads a given partition's
    entries to restore them (a read of READ_BATCH; not the misplaced-player check's short
    read before anything is written): a node lost half-way through a rebuild, at a known point."""

    def __init__(self, path: str, cluster: LocalCluster, victim: ClusterNode, partition: int) -> None:
        super().__init__(path)
        self.cluster, self.victim, self.partition = cluster, victim, partition

    def read(self, partition: int, after_seq: int, limit: int) -> list[LedgerEntry]:
        restoring = limit == READ_BATCH
        if restoring and partition == self.partition and self.victim.process is not None \
                and self.victim.process.poll() is None:
            self.cluster.kill(self.victim)
        return super().read(partition, after_seq, limit)


async def test_a_rebuild_cut_off_by_a_dead_primary_says_so_and_a_second_run_finishes_it(
        tmp_path: Path) -> None:
    with local_cluster(tmp_path / "cluster") as cluster:
        settings = cluster_settings(tmp_path, cluster.url)
        balances = await workload(settings, cluster)
        assert await drain(settings) > 0
        before = cluster_snapshot(cluster)
        cluster.flush()
        placement = Placement(cluster)
        victim = cluster.primaries[2]
        # The victim's last partition: others (its own earlier ones included) are done by then.
        last = max(Keys(PARTITIONS).partition(p) for p in balances if placement.node_of(p) is victim)
        store = KillingStore(settings.storage_url.removeprefix("sqlite:///"), cluster, victim, last)
        client = connect(cluster.url, settings.redis, cluster=True)
        try:
            with pytest.raises(RebuildRefused) as refused:
                await rebuild(client, store, settings, lambda line: None)
        finally:
            await client.aclose()
            store.close()
        assert f"while partition {last} was written" in str(refused.value)
        assert "run `walletd rebuild` again: it resumes" in str(refused.value)
        config = config_of(settings, tmp_path / "cli")
        # walletd info still answers, the dead primary's partitions' backlog unknown.
        shown = await anyio.to_thread.run_sync(lambda: walletd(config, "info", "--json", timeout_s=120))
        placement_shown = json.loads(shown.stdout)["placement"]
        down = f"127.0.0.1:{victim.port}"
        assert {row["partition"] for row in placement_shown if row["backlog"] is None} == {
            row["partition"] for row in placement_shown if row["node"] == down} != set()
        cluster.restart(victim)
        assert await run_cli("--config", str(config), "rebuild") == 0
        assert same_state(before, cluster_snapshot(cluster)) == []
        for player, balance in balances.items():
            assert int(account_on(placement.node_of(player), player)["bal"]) == balance


async def test_info_shows_every_primary_and_every_partition_once(
        tmp_path: Path, cluster_url: str, redis_cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    settings = cluster_settings(tmp_path, cluster_url)
    await workload(settings, redis_cluster)
    config = config_of(settings, tmp_path / "cli")
    capsys.readouterr()
    assert await run_cli("--config", str(config), "info", "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["mode"] == "cluster" and shown["partitions"] == PARTITIONS == shown["redis_partitions"]
    addresses = {f"127.0.0.1:{node.port}" for node in redis_cluster.primaries}
    primaries = [n for n in shown["nodes"] if n["role"] == "primary"]
    assert {n["address"] for n in primaries} == addresses and all(n["state"] == "ok" for n in primaries)
    held = sorted(p for n in primaries for p in n["partitions"])
    assert held == list(range(PARTITIONS))  # each exactly once
    assert all(n["partitions"] for n in primaries)  # spread over all three
    placement = Placement(redis_cluster)
    for row in shown["placement"]:
        assert row["node"] == f"127.0.0.1:{placement.node_of_slot(row['slot']).port}"
        assert row["backlog"] >= 0
    assert sum(row["backlog"] for row in shown["placement"]) > 0  # the workload's entries, not flushed
    assert await run_cli("--config", str(config), "info") == 0
    text = capsys.readouterr().out
    assert "Redis: cluster, 3 primaries, 0 replicas" in text
    for address in addresses:
        assert f"primary {address} (ok)" in text


async def test_the_cli_on_a_cluster(tmp_path: Path, cluster_url: str, redis_cluster: LocalCluster) -> None:
    """The operator's commands as processes, each player's keys on the node that owns it."""
    settings = cluster_settings(tmp_path, cluster_url)
    config = config_of(settings, tmp_path / "cli")
    placement = Placement(redis_cluster)
    players = [p for found in placement.spread(1, "cli").values() for p in found]

    def run(*args: str) -> str:
        return walletd(config, *args, timeout_s=120).stdout

    for n, player in enumerate(players):
        assert "created" in run("player", "create", player, "--currency", "EUR", "--balance", "10.00",
                                "--alias", f"stargame:7{n}")
        assert "booked" in run("player", "deposit", player, "2.50", "--ref", f"d{n}")
        assert "booked" in run("player", "withdraw", player, "1.00", "--ref", f"w{n}")
        assert "blocked" in run("player", "block", player)
        assert json.loads(run("player", "show", player))["balance"] == "11.50"
        assert account_on(placement.node_of(player), player)["bal"] == "1150"
    session = json.loads(run("session", "new", players[1], "--game", "200"))
    assert session["player_id"] == players[1] and session["token"]
    assert "valid" in walletd(config, "config", "check", timeout_s=120).stderr
    assert "migrate:" in run("migrate")  # the store alone: no Redis
    assert "verify: OK" in run("verify")  # drains through the flusher, then compares
    with contextlib.closing(open_store(settings.storage_url)) as store:
        assert store.player_sums() == dict.fromkeys(players, 1150)
