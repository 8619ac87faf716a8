"""`walletd info`: where walletd's partitions live (README "Scaling out").

A partition's keys all carry its hash tag, "{p<n>}", so the whole partition sits in one
hash slot (crc16 of "p<n>" % 16384) and so on the one primary that serves that slot.
This reads the topology from Redis itself, not from walletd's configuration:

- Redis Cluster: CLUSTER NODES of the node redis.url names (every node knows every
  other and who serves which slots; a slot being migrated counts as its source's, as
  Redis routes it until the migration ends), so a node that is down is listed with
  its state, and the partitions of slots no primary serves are listed as unserved;
- one Redis: that node holds every partition; its replicas from INFO replication.

Per partition it adds the ledger stream's backlog (XLEN: the entries the flusher has
not stored and trimmed yet, what wallet.backlog_max bounds), read per node in one
pipeline each; a node that cannot be read leaves its partitions' backlog unknown
instead of failing the whole report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec
from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from app.keys import META_PARTITIONS, Keys
from app.redis_client import RedisClient, optional_text, text

SLOTS = 16384
DEFAULT_PORT = 6379  # redis:// without a port
# Fields of one CLUSTER NODES line before its slot ranges (id, address, flags, primary,
# ping sent, pong received, config epoch, link state).
NODE_FIELDS = 8
# Partitions listed per line in the plain-text report: readable at 256 and at 16,384.
LINE_ITEMS = 16
# XLENs per pipelined round trip: Redis serves no other client while it works through one
# client's pipeline, so 16,384 partitions are read in slices (as the guard reads its counters).
BACKLOG_READ_CHUNK = 1000


class Node(msgspec.Struct):
    address: str  # host:port as the cluster announces it (or as redis.url names one Redis)
    role: str  # "primary" or "replica"
    state: str  # "ok", or what Redis says is wrong ("fail", "fail?", "handshake", "disconnected")
    primary: str = ""  # a replica's primary's address
    slots: list[tuple[int, int]] = msgspec.field(default_factory=list)  # served, inclusive; [] for one Redis
    partitions: list[int] = msgspec.field(default_factory=list)


class Partition(msgspec.Struct):
    partition: int
    slot: int
    node: str  # the primary's address; "" = no primary serves the slot
    backlog: int | None  # ledger entries not stored yet; None = its node could not be read


class Placement(msgspec.Struct):
    version: str
    mode: str  # "standalone" or "cluster"
    partitions: int  # wallet.partitions, as configured
    redis_partitions: int | None  # the count Redis's data was written with (None: none yet, or unreadable)
    nodes: list[Node]
    placement: list[Partition]

    def unserved(self) -> list[int]:
        return [p.partition for p in self.placement if not p.node]


def node_address(url: str) -> str:
    """How redis.url names its node: host:port, or the socket's path (no credentials)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or DEFAULT_PORT}"


def slot_of(keys: Keys, partition: int) -> int:
    return key_slot(keys.seq(partition).encode())


def parse_cluster_nodes(reply: str) -> list[Node]:
    """CLUSTER NODES' lines -> nodes: primaries in slot order (those serving none last), then replicas."""
    by_id: dict[str, tuple[Node, str]] = {}
    for line in reply.splitlines():
        fields = line.split()
        if len(fields) < NODE_FIELDS:
            continue
        node_id, address, flags = fields[0], fields[1].split("@")[0], fields[2].split(",")
        role = "primary" if "master" in flags else "replica"
        problems = [flag for flag in flags if flag in ("fail", "fail?", "handshake", "noaddr")]
        state = ",".join(problems) or ("ok" if fields[7] == "connected" else fields[7])
        slots = [slot_range(part) for part in fields[NODE_FIELDS:] if not part.startswith("[")]
        by_id[node_id] = (Node(address, role, state, slots=slots if role == "primary" else []), fields[3])
    for node, primary_id in by_id.values():
        if node.role == "replica" and primary_id in by_id:
            node.primary = by_id[primary_id][0].address
    nodes = [node for node, _ in by_id.values()]
    return sorted(nodes, key=lambda n: (n.role != "primary", n.slots[0][0] if n.slots else SLOTS, n.address))


def slot_range(part: str) -> tuple[int, int]:
    start, _, end = part.partition("-")
    return int(start), int(end or start)


def owners(nodes: list[Node]) -> list[str]:
    """Per hash slot, the address of the primary serving it ('' = none)."""
    owner = [""] * SLOTS
    for node in nodes:
        for start, end in node.slots:
            owner[start:end + 1] = [node.address] * (end - start + 1)
    return owner


async def cluster_nodes(url: str, timeout_s: float) -> list[Node]:
    """The topology as the node redis.url names sees it."""
    seed = Redis.from_url(url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    execute: Callable[..., Awaitable[Any]] = seed.execute_command  # redis-py leaves it untyped
    try:
        return parse_cluster_nodes(text(await execute("CLUSTER", "NODES")))
    finally:
        await seed.aclose()


async def standalone_nodes(redis: RedisClient, address: str) -> list[Node]:
    """One Redis: itself (holding every partition) and the replicas it reports."""
    replication = await redis.info("replication")
    role = "primary" if replication.get("role") == "master" else "replica"
    nodes = [Node(address, role, "ok", primary=address_of(replication) if role == "replica" else "")]
    for name, replica in sorted(replication.items()):
        if name.startswith("slave") and isinstance(replica, dict):
            state = "ok" if replica.get("state") == "online" else str(replica.get("state"))
            nodes.append(Node(f"{replica.get('ip')}:{replica.get('port')}", "replica", state, primary=address))
    return nodes


def address_of(replication: dict[str, object]) -> str:
    return f"{replication.get('master_host')}:{replication.get('master_port')}"


async def backlogs(redis: RedisClient, keys: Keys, groups: dict[str, list[int]]) -> dict[int, int | None]:
    """XLEN of each partition's stream, pipelined per node (partitions grouped by owner),
    BACKLOG_READ_CHUNK at a time."""
    found: dict[int, int | None] = {}
    chunks = [group[start:start + BACKLOG_READ_CHUNK] for group in groups.values()
              for start in range(0, len(group), BACKLOG_READ_CHUNK)]
    for partitions in chunks:
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for partition in partitions:
                    pipe.xlen(keys.ledger(partition))
                lengths = await pipe.execute()
        except (RedisError, RedisClusterException):
            lengths = [None] * len(partitions)
        found.update(zip(partitions, lengths, strict=True))
    return found


async def placement(redis: RedisClient, url: str, cluster: bool, keys: Keys, version: str,
                    timeout_s: float) -> Placement:
    """What `walletd info` reports."""
    nodes = await cluster_nodes(url, timeout_s) if cluster else await standalone_nodes(redis, node_address(url))
    try:
        written = optional_text(await redis.hget(keys.meta(), META_PARTITIONS))
    except (RedisError, RedisClusterException):  # its node is down: the rest is still worth showing
        written = None
    slots = [slot_of(keys, partition) for partition in range(keys.partitions)]
    owner = owners(nodes) if cluster else [nodes[0].address] * SLOTS
    groups: dict[str, list[int]] = {}
    for partition, slot in enumerate(slots):
        groups.setdefault(owner[slot], []).append(partition)
    groups.pop("", None)  # unserved: no node to read them from
    for node in nodes:
        node.partitions = groups.get(node.address, []) if node.role == "primary" else []
    found = await backlogs(redis, keys, groups)
    rows = [Partition(partition, slot, owner[slot], found.get(partition)) for partition, slot in enumerate(slots)]
    return Placement(version, "cluster" if cluster else "standalone", keys.partitions,
                     None if written is None else int(written), nodes, rows)


def ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2 5 7-8'."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return " ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def render(found: Placement) -> str:
    """The plain-text report: nodes with their partitions, then one line per partition."""
    primaries = [n for n in found.nodes if n.role == "primary"]
    replicas = [n for n in found.nodes if n.role == "replica"]
    lines = [f"walletd {found.version}",
             f"Redis: {found.mode}, {len(primaries)} primar{'y' if len(primaries) == 1 else 'ies'}, "
             f"{len(replicas)} replica{'' if len(replicas) == 1 else 's'}",
             f"partitions: {found.partitions} (player -> crc32(player_id) % {found.partitions}; partition n -> "
             f"hash tag {{pn}} -> its slot -> the primary serving it)"]
    if found.redis_partitions not in (None, found.partitions):
        lines.append(f"WARNING: Redis holds data for {found.redis_partitions} partitions: walletd refuses to "
                     f"start until [wallet] partitions = {found.redis_partitions}; this map is for "
                     f"{found.partitions}")
    lines.append("")
    backlog = {row.partition: row.backlog for row in found.placement}
    for node in primaries:
        served = f", slots {ranges_of(node.slots)}" if found.mode == "cluster" else ""
        held = [backlog[p] for p in node.partitions]
        total = "unknown" if None in held else str(sum(b for b in held if b is not None))
        lines.append(f"primary {node.address} ({node.state}){served}: {len(node.partitions)} partitions, "
                     f"backlog {total}")
        for start in range(0, len(node.partitions), LINE_ITEMS):
            chunk = node.partitions[start:start + LINE_ITEMS]
            lines.append("    " + " ".join(f"{p}@{found.placement[p].slot}" for p in chunk))
        for replica in replicas:
            if replica.primary == node.address:
                lines.append(f"  replica {replica.address} ({replica.state})")
    orphans = [r for r in replicas if r.primary not in {n.address for n in primaries}]
    lines += [f"replica {r.address} ({r.state}) of {r.primary or 'an unknown primary'}" for r in orphans]
    unserved = found.unserved()
    if unserved:
        lines.append(f"UNSERVED: {len(unserved)} partitions in slots no primary serves: {ranges(unserved)}")
    lines += ["", "partition slot node backlog"]
    lines += [f"{row.partition} {row.slot} {row.node or '-'} {'?' if row.backlog is None else row.backlog}"
              for row in found.placement]
    return "\n".join(lines)


def ranges_of(slots: list[tuple[int, int]]) -> str:
    return " ".join(str(a) if a == b else f"{a}-{b}" for a, b in slots) or "none"
