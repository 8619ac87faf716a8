"""Test helpers: a local Redis Cluster of redis-server processes (the binary the
embedded mode uses), each node with AOF `appendfsync always`, built with CLUSTER
commands (no redis-cli needed); a node can be killed with SIGKILL and started again
on its port and directory (nodes.conf + AOF), and a hash slot moved between
primaries step by step, so a test sees MOVED and ASK.

Slots are split evenly between the primaries in order; replicas follow the
primaries in order (replica i replicates primary i % primaries).
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import redis
from redis.crc import key_slot

from app.redis_server import find_binary, wait_ready
from tests.redis_servers import stop_process

SLOTS = 16384
# How long a cluster gets to agree on its slots (after start, a restart, a migration).
SETTLE_S = 30.0
# Keys moved per MIGRATE while a slot is resharded.
MIGRATE_BATCH = 100
MIGRATE_TIMEOUT_MS = 5000
# A node is declared failed after this long without answering (failover of a replica's
# primary); short so tests need not wait, long enough for a loaded 2-core machine.
NODE_TIMEOUT_MS = 3000


# Redis listens for its cluster bus on port + 10000: both must be free, port <= 55535.
BUS_OFFSET = 10000
PORT_RANGE = (20000, 55535)
PORT_TRIES_MAX = 200


def free_port_pair() -> int:
    """A port that is free, and free 10000 higher (its cluster bus)."""
    for _ in range(PORT_TRIES_MAX):
        port = random.randint(*PORT_RANGE)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + BUS_OFFSET))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def slot_of(key: str) -> int:
    return key_slot(key.encode())


class ClusterNode:
    def __init__(self, directory: Path, password: str) -> None:
        self.directory = directory
        self.password = password
        self.port = free_port_pair()
        self.process: subprocess.Popen[bytes] | None = None
        self.node_id = ""

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=10)

    def args(self) -> list[str]:
        args = [find_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
                "--daemonize", "no", "--logfile", str(self.directory / "redis.log"), "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-require-full-coverage", "no"]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        return args

    def start(self) -> ClusterNode:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(self.url, self.process, 30.0)
        with contextlib.closing(self.client()) as client:
            self.node_id = client.execute_command("CLUSTER", "MYID")
        return self

    def kill(self) -> None:
        """SIGKILL: what was acknowledged is in the AOF (fsync always), nothing else is saved."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        stop_process(self.process)


class LocalCluster:
    def __init__(self, directory: Path, primaries: int = 3, replicas: int = 0, password: str = "") -> None:
        assert primaries >= 1 and replicas >= 0
        self.password = password
        self.primaries = [ClusterNode(directory / f"primary{i}", password) for i in range(primaries)]
        self.replicas = [ClusterNode(directory / f"replica{i}", password) for i in range(replicas)]

    @property
    def nodes(self) -> list[ClusterNode]:
        return self.primaries + self.replicas

    @property
    def url(self) -> str:
        """walletd's redis.url: any node will do; the first primary."""
        return self.primaries[0].url

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            self.join()
        except BaseException:
            self.stop()
            raise
        return self

    def join(self) -> None:
        first = self.primaries[0]
        with contextlib.closing(first.client()) as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        share = SLOTS // len(self.primaries)
        for i, node in enumerate(self.primaries):
            start, end = i * share, SLOTS - 1 if i == len(self.primaries) - 1 else (i + 1) * share - 1
            with contextlib.closing(node.client()) as client:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(start, end + 1))
        self.wait_until(lambda: all(self.knows_all(node) for node in self.nodes), "every node to know every other")
        for i, replica in enumerate(self.replicas):
            primary = self.primaries[i % len(self.primaries)]
            with contextlib.closing(replica.client()) as client:
                client.execute_command("CLUSTER", "REPLICATE", primary.node_id)
        self.wait_settled()

    def knows_all(self, node: ClusterNode) -> bool:
        with contextlib.closing(node.client()) as client:
            known = client.execute_command("CLUSTER", "NODES")
        ids = {line.split()[0] for line in str(known).splitlines() if line and "handshake" not in line}
        return ids >= {n.node_id for n in self.nodes}

    def wait_settled(self) -> None:
        """Until every running node says cluster_state:ok and sees the same slot owners,
        and every replica has synced."""
        self.wait_until(self.settled, "the cluster to settle")

    def settled(self) -> bool:
        views = []
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            try:
                with contextlib.closing(node.client()) as client:
                    if "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                        return False
                    views.append(sorted((s[0], s[1], s[2][1]) for s in client.execute_command("CLUSTER", "SLOTS")))
                    if node in self.replicas and client.info("replication").get("master_link_status") != "up":
                        return False
            except redis.RedisError:
                return False
        return bool(views) and all(view == views[0] for view in views)

    @staticmethod
    def wait_until(condition: object, what: str) -> None:
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            if condition():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise RuntimeError(f"timed out waiting for {what}")

    def owner(self, slot: int) -> ClusterNode:
        """The primary that serves the slot now (as the first running primary sees it)."""
        for node in self.primaries:
            if node.process is not None and node.process.poll() is None:
                with contextlib.closing(node.client()) as client:
                    for start, end, *holders in client.execute_command("CLUSTER", "SLOTS"):
                        if start <= slot <= end:
                            port = int(holders[0][1])
                            return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no running node serves slot {slot}")

    def kill(self, node: ClusterNode) -> None:
        node.kill()

    def restart(self, node: ClusterNode) -> None:
        """Start a killed node again on its port and directory (nodes.conf, AOF); waits until
        the cluster has it back."""
        node.start()
        self.wait_settled()

    # Resharding, step by step (what `redis-cli --cluster reshard` does) ------------------

    def begin_migration(self, slot: int, source: ClusterNode, target: ClusterNode) -> None:
        """From here the source answers ASK for the slot's keys it no longer holds."""
        with contextlib.closing(target.client()) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        with contextlib.closing(source.client()) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)

    def move_keys(self, slot: int, source: ClusterNode, target: ClusterNode, count: int = MIGRATE_BATCH) -> int:
        """Moves up to count of the slot's keys (atomically per MIGRATE); returns how many."""
        with contextlib.closing(source.client()) as client:
            keys = client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, count)
            if keys:
                auth = ["AUTH", self.password] if self.password else []
                client.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, MIGRATE_TIMEOUT_MS,
                                       *auth, "KEYS", *keys)
        return len(keys)

    def finish_migration(self, slot: int, source: ClusterNode, target: ClusterNode) -> None:
        """The target owns the slot: every node is told (the source then answers MOVED)."""
        while self.move_keys(slot, source, target):
            pass
        for node in (target, source, *[n for n in self.primaries if n not in (source, target)]):
            if node.process is not None and node.process.poll() is None:
                with contextlib.closing(node.client()) as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        self.wait_settled()

    def migrate(self, slot: int, target: ClusterNode) -> None:
        source = self.owner(slot)
        if source is target:
            return
        self.begin_migration(slot, source, target)
        self.finish_migration(slot, source, target)

    def flush(self) -> None:
        """Empties every primary (replicas follow); scripts stay cached."""
        for node in self.primaries:
            with contextlib.closing(node.client()) as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def local_cluster(directory: Path, **options: int | str) -> Iterator[LocalCluster]:
    cluster = LocalCluster(directory, **options).start()  # type: ignore[arg-type]
    try:
        yield cluster
    finally:
        cluster.stop()
