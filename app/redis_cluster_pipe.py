"""The hot path's script client on Redis Cluster: one PipelinedRedis per primary.

Every key of a booking carries its partition's hash tag (app/keys.py), so a script's
keys live in one hash slot and one node runs it atomically, as on one Redis. This
client sends each call to the primary that owns the slot of its first key (a script's
KEYS[1], a command's first argument) over that primary's pipelined connection
(app/redis_pipe.py: one batch per loop turn, replies in order, hiredis).

The slot map (which primary "host:port" owns each of the 16384 slots) is read with
CLUSTER SLOTS from any reachable node before the first call, and again when the
cluster says it changed: a MOVED reply updates its slot at once and starts one full
re-read (one at a time, at most one per REFRESH_INTERVAL_S); a primary that cannot be
reached, or a call without a reply in time (a hung node's connection stays open), starts
one too (a replica may have been promoted in its place).

What a call may meet, and what it does (app/redis_pipe.py's contract otherwise):
- MOVED: the slot is served elsewhere and the script did not run: sent again to the
  named node. ASK (the slot is being migrated and this key has gone): sent to the
  named node preceded by ASKING, both queued on its connection in the same loop turn,
  so they are written together and in order. At most REDIRECTS_MAX of these per call
  and never past its deadline (app/redis_link.CALL_DEADLINE_MS); then
  WalletUnavailable: it ran nowhere.
- TRYAGAIN (a multi-key call during a migration, its keys split between two nodes)
  and CLUSTERDOWN: not run; tried again after RETRY_PAUSE_S, within the same bounds.
- A time-out or a connection lost after the write: OutcomeUnknown, never re-sent, as
  with one Redis. Only a reply that says "not run here" is ever followed.

Scripts are loaded on every primary at start (load_scripts) and on each primary the
map names for the first time (a node that joined, a promoted replica); a node that
lost them answers NOSCRIPT and app/scripts.Script's EVAL fallback (after the
cold-start guard's comparison) covers the gap while they are loaded there again.

With redis.replica_acks, each node's client follows its confirmed calls with its own
WAIT (app/redis_pipe.py): a booking waits for replicas of the primary that ran it.

Each node's client keeps its own run_id check (on_restart: a primary restarted may
have lost data; the same callback for all, app/ledger/guard.py), and a primary new in
the map (a promoted replica may lack acknowledged writes) calls it too; each keeps its own outage
log lines (RedisLink, one line per node). The protocols read one `link.down`: down
while any primary's link is down (they then log no line per refused call, and the
node's own line says which one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from binascii import crc_hqx
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.connection import parse_url
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import NoScriptError

from app.errors import OutcomeUnknown, WalletUnavailable
from app.redis_link import RedisLink, wait_left_s
from app.redis_pipe import ClusterRefusal, PipelinedRedis, redacted, retrieve

log = logging.getLogger("walletd.redis")

SLOTS = REDIS_CLUSTER_HASH_SLOTS
# MOVED/ASK followed per call: a migration needs one or two; more means the nodes
# disagree (a map in flux), and the call is refused unrun rather than bounced on.
REDIRECTS_MAX = 5
# A call refused with TRYAGAIN (its keys split by a migration: the slot's keys move in
# batches of milliseconds each) or CLUSTERDOWN is sent again after RETRY_PAUSE_S, at
# most RETRIES_MAX times (~0.2 s in all), within its deadline; a failover takes seconds,
# and is refused rather than waited for.
RETRY_PAUSE_S = 0.02
RETRIES_MAX = 10
# At most one full slot-map read per this long: a reshard answers MOVED for every
# call of the moved slots, and each MOVED already fixed its own slot.
REFRESH_INTERVAL_S = 0.1
# Node clients kept (Redis Cluster's own recommended maximum): the map names them, and a
# client is kept once made, so that its run_id check still sees that node's restarts.
NODES_MAX = 1000
# Asked before a call that an ASK redirected (RESP, encoded once).
ASKING = b"*1\r\n$6\r\nASKING\r\n"
# The commands that name their keys after the script and the key count.
SCRIPT_COMMANDS = ("EVALSHA", "EVAL", "evalsha", "eval")


def slot_of(key: Any) -> int:
    """redis.crc.key_slot on the text itself (once per call: no bytes copy of the whole
    key). UTF-8 never encodes other characters with the bytes of { and }, so the tag
    between the first { and the next } is the same in the text and in its bytes."""
    if type(key) is not str:
        return key_slot(bytes(key))
    start = key.find("{")
    if start > -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return crc_hqx(key.encode(), 0) % SLOTS


def split_address(address: str) -> tuple[str, int]:
    """ "host:port" (an IPv6 host unbracketed, as Redis writes it) as (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def node_url(url: str, address: str) -> str:
    """url with its host and port replaced by the node's: same scheme, user, password,
    TLS options (its query)."""
    parts = urlsplit(url)
    host, port = split_address(address)
    userinfo, at, _ = parts.netloc.rpartition("@")
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{hostport}"))


class ClusterLink(RedisLink):
    """What the protocols read of the outage state (`down`): any primary's link down.
    The node clients' own links log and back off; this one only aggregates."""

    def __init__(self, where: str, nodes: dict[str, PipelinedRedis]) -> None:
        super().__init__(where)
        self.nodes = nodes

    @property
    def down(self) -> bool:
        return any(node.link.down for node in self.nodes.values())


class ClusterPipelinedRedis:
    """PipelinedRedis's calls (evalsha_encoded, evalsha, eval, execute, pending,
    connects, link, on_restart, aclose) routed by hash slot over Redis Cluster."""

    def __init__(self, url: str, timeout_s: float, connect_timeout_s: float, *, replica_acks: int = 0,
                 replica_ack_timeout_ms: int = 0) -> None:
        options = parse_url(url)
        if options.get("path"):
            raise ValueError("Redis Cluster nodes are reached over TCP: a redis:// or rediss:// URL, not unix://")
        if options.get("db"):
            raise ValueError(f"Redis Cluster has only db 0; the URL names db {options['db']}")
        self.url = url
        self.seed = f"{options.get('host', '127.0.0.1')}:{options.get('port', 6379)}"
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        # Passed only when set, so that this client builds on a PipelinedRedis without them.
        self.node_options: dict[str, int] = (
            {"replica_acks": replica_acks, "replica_ack_timeout_ms": replica_ack_timeout_ms} if replica_acks else {})
        self.nodes: dict[str, PipelinedRedis] = {}  # "host:port" -> its client, made on first use
        self.owners: list[str] = []  # per slot, the primary serving it; [] until the first map
        self.primaries: set[str] = set()  # the owners, as of the last full map
        self.mapping: asyncio.Future[None] | None = None  # the full map read in progress
        self.next_refresh = 0.0  # no full re-read before this (time.monotonic())
        self.refresh_timer: asyncio.TimerHandle | None = None  # a re-read waiting for next_refresh
        self.refresh_again = False  # the cluster changed while the running read was under way
        self.script_texts: list[str] = []  # load_scripts' scripts, loaded on each new primary too
        self.loading: dict[str, asyncio.Future[int]] = {}  # per node, a load in progress
        self._on_restart: Callable[[], None] | None = None
        self.link = ClusterLink(redacted(url), self.nodes)
        # Replies followed: MOVED and ASK redirects, TRYAGAIN/CLUSTERDOWN retries (app/metrics.py).
        self.redirects = {"moved": 0, "ask": 0, "retry": 0}
        self.closed = False

    # The calls ---------------------------------------------------------------------

    # confirm=True: the reply waits for redis.replica_acks replicas of the node that ran it
    # (app/redis_pipe.py: its WAIT goes on that node's connection, after the call).
    async def evalsha_encoded(self, head: bytes, keys_and_args: Sequence[Any], *, confirm: bool = False) -> Any:
        """EVALSHA with its constant start encoded (app/redis_pipe.evalsha_head); routed by
        KEYS[1], the first of keys_and_args (every walletd script has at least one key)."""
        slot = slot_of(keys_and_args[0])
        owners = self.owners
        if not owners:
            return await self.call(slot, lambda node: node.evalsha_encoded(head, keys_and_args, confirm=confirm))
        # The common case inline (one coroutine frame less per call than call()'s).
        address = owners[slot]
        node = self.nodes.get(address) or self.node(address)
        try:
            return await node.evalsha_encoded(head, keys_and_args, confirm=confirm)
        except ClusterRefusal as refusal:
            return await self.call(slot, lambda node: node.evalsha_encoded(head, keys_and_args, confirm=confirm),
                                   address, refusal)
        except (NoScriptError, WalletUnavailable, OutcomeUnknown) as exc:
            self.failed(address, node, exc)
            raise

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any, confirm: bool = False) -> Any:
        return await self.execute("EVALSHA", sha, numkeys, *keys_and_args, confirm=confirm)

    async def eval(self, script: str, numkeys: int, *keys_and_args: Any, confirm: bool = False) -> Any:
        return await self.execute("EVAL", script, numkeys, *keys_and_args, confirm=confirm)

    async def execute(self, *args: Any, confirm: bool = False) -> Any:
        """A command with a key: routed by it (a script's KEYS[1]; any other's first argument)."""
        if args[0] in SCRIPT_COMMANDS:
            assert int(args[2]) > 0, "a script without keys has no slot in a cluster"
            key = args[3]
        else:
            assert len(args) > 1, f"{args[0]} names no key: it has no slot (on_every_primary runs it on all)"
            key = args[1]
        return await self.call(slot_of(key), lambda node: node.execute(*args, confirm=confirm))

    async def call(self, slot: int, send: Callable[[PipelinedRedis], Awaitable[Any]], address: str = "",
                   refused: ClusterRefusal | None = None) -> Any:
        """send(node) on the slot's primary, following what says it did not run there
        (refused: the first attempt, on address, was refused so)."""
        if not self.owners:
            await self.first_map()
        address, asking = address or self.owners[slot], False
        deadline = time.monotonic() + wait_left_s(self.timeout_s)
        redirects = retries = 0
        while True:
            if refused is not None:
                redirected = refused.kind in ("MOVED", "ASK")
                redirects, retries = redirects + redirected, retries + (not redirected)
                if redirects > REDIRECTS_MAX or retries > RETRIES_MAX or time.monotonic() >= deadline:
                    raise WalletUnavailable(f"Redis Cluster did not run the call on slot {slot} ({refused.kind} "
                                            f"{refused.address}, {redirects} redirects, {retries} retries: too many "
                                            "or past the call's deadline); it was not sent again") from refused
                address, asking = await self.follow(slot, address, refused, deadline)
            node = self.node(address)
            try:
                if asking:
                    # No await between ASKING and the call's own send (PipelinedRedis sends
                    # synchronously when connected): adjacent in the same batch.
                    node_connection = await node.connected()
                    node_connection.send(ASKING).add_done_callback(retrieve)  # its OK is not awaited
                return await send(node)
            except ClusterRefusal as refusal:
                refused = refusal
            except (NoScriptError, WalletUnavailable, OutcomeUnknown) as exc:
                self.failed(address, node, exc)
                raise

    def failed(self, address: str, node: PipelinedRedis, exc: Exception) -> None:
        """What a call's failure other than a cluster's refusal starts (the caller re-raises it)."""
        if isinstance(exc, NoScriptError):
            self.load_soon(address)  # this node lost its scripts (restarted); the caller EVALs
        elif isinstance(exc, WalletUnavailable) and node.link.down:
            self.refresh_soon()  # unreachable: a replica may have taken its slots
        elif isinstance(exc, OutcomeUnknown):
            # No reply in time (the call is never re-sent): the node may hang (a frozen host,
            # a network partition) with its connection open, so its link never goes down,
            # while the cluster promotes its replica; the map says where its slots went.
            self.refresh_soon()

    async def follow(self, slot: int, address: str, refusal: ClusterRefusal, deadline: float) -> tuple[str, bool]:
        """Where to send a refused call next, and whether ASKING must precede it."""
        if refusal.kind in ("MOVED", "ASK"):
            target = refusal.address
            if target.startswith(":"):  # the node does not know its own host: the one asked
                target = split_address(address)[0] + target
            if refusal.kind == "MOVED":
                self.redirects["moved"] += 1
                self.owners[slot] = target
                self.refresh_soon()
                return target, False
            self.redirects["ask"] += 1
            return target, True
        self.redirects["retry"] += 1  # TRYAGAIN, CLUSTERDOWN: nothing ran; a moment later, to the owner
        await asyncio.sleep(max(0.0, min(RETRY_PAUSE_S, deadline - time.monotonic())))
        return self.owners[slot], False

    def node(self, address: str) -> PipelinedRedis:
        node = self.nodes.get(address)
        if node is None:
            assert len(self.nodes) < NODES_MAX, f"more than {NODES_MAX} Redis Cluster nodes"
            node = self.nodes[address] = PipelinedRedis(node_url(self.url, address), self.timeout_s,
                                                        self.connect_timeout_s, **self.node_options)
            node.on_restart = self._on_restart
        return node

    # The slot map ------------------------------------------------------------------

    async def first_map(self) -> None:
        """Waits (within the call's deadline) for the first map, read once for all callers."""
        if self.mapping is None:
            self.start_mapping()
        assert self.mapping is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.mapping), wait_left_s(self.connect_timeout_s * 2))
        except TimeoutError:
            raise WalletUnavailable("no Redis Cluster slot map before the call's deadline; "
                                    "the call was not sent") from None
        if not self.owners:
            raise WalletUnavailable(f"no Redis Cluster slot map ({self.link.last_failure}); the call was not sent")

    def refresh_soon(self) -> None:
        """One full map read in the background: now, or when the last one is
        REFRESH_INTERVAL_S old; after the one running if it may have read the cluster
        before the change that asks for this one."""
        if self.closed or self.refresh_timer is not None:
            return
        if self.mapping is not None:
            self.refresh_again = True
            return
        delay = self.next_refresh - time.monotonic()
        if delay > 0:
            self.refresh_timer = asyncio.get_running_loop().call_later(delay, self.refresh_due)
        else:
            self.start_mapping()

    def refresh_due(self) -> None:
        self.refresh_timer = None
        self.refresh_soon()

    def start_mapping(self) -> None:
        self.next_refresh = time.monotonic() + REFRESH_INTERVAL_S
        self.refresh_again = False
        mapping = self.mapping = asyncio.ensure_future(self.read_map())

        def done(future: asyncio.Future[None]) -> None:
            if self.mapping is future:
                self.mapping = None
            if not future.cancelled() and future.exception() is not None:
                self.link.last_failure = str(future.exception())
                log.warning("Redis Cluster slot map not read again: %s", future.exception())
            if self.refresh_again:
                self.refresh_soon()

        mapping.add_done_callback(done)

    async def read_map(self) -> None:
        """CLUSTER SLOTS from the first node that answers: the known primaries, then redis.url's."""
        failures = []
        for address in sorted(self.primaries) + ([] if self.seed in self.primaries else [self.seed]):
            try:
                reply = await self.node(address).execute("CLUSTER", "SLOTS")
            except Exception as exc:  # noqa: BLE001 - any failure: ask the next node
                failures.append(f"{address}: {exc}")
                continue
            self.apply_map(reply, split_address(address)[0])
            return
        raise WalletUnavailable(f"no Redis Cluster node answered CLUSTER SLOTS ({'; '.join(failures)})")

    def apply_map(self, reply: list[Any], asked_host: str) -> None:
        owners = list(self.owners) if self.owners else [""] * SLOTS
        for start, end, primary, *_replicas in reply:
            host, port = str(primary[0]), int(primary[1])
            if host in ("", "?"):  # the node has no address to announce: the one asked
                host = asked_host
            address = f"{host}:{port}"
            owners[int(start):int(end) + 1] = [address] * (int(end) - int(start) + 1)
        if "" in owners:
            served = {address for address in owners if address}
            if not served:
                raise WalletUnavailable("the Redis Cluster serves no slot")
            owners = [address or self.seed for address in owners]  # unserved: CLUSTERDOWN answers them
        primaries = set(owners)
        joined = primaries - self.primaries if self.owners else set()  # since the last map
        for address in primaries:
            self.node(address)
        if joined and self._on_restart is not None:
            # A promoted replica may lack the last writes its primary acknowledged (replication
            # is asynchronous): as after a restart, the guard compares Redis with the store
            # before the next booking (a node that joined by a reshard costs one comparison).
            self._on_restart()
        self.owners, self.primaries = owners, primaries
        for address in joined:
            self.load_soon(address)

    def owner(self, slot: int) -> str:
        """The primary "host:port" serving the slot, as this client last saw ('' before the first map)."""
        return self.owners[slot] if self.owners else ""

    async def slot_ranges(self) -> list[tuple[int, int, str]]:
        """The map read now, as (first slot, last slot, primary) ranges (`walletd info`)."""
        if self.mapping is None:
            self.start_mapping()
        assert self.mapping is not None
        await asyncio.shield(self.mapping)
        ranges: list[tuple[int, int, str]] = []
        for slot, address in enumerate(self.owners):
            if ranges and ranges[-1][2] == address:
                ranges[-1] = (ranges[-1][0], slot, address)
            else:
                ranges.append((slot, slot, address))
        return ranges

    # Every primary -----------------------------------------------------------------

    async def on_every_primary(self, *command: Any) -> dict[str, Any]:
        """The command's reply from each primary of the map, by "host:port"."""
        if not self.owners:
            await self.first_map()
        addresses = sorted(self.primaries)
        replies = await asyncio.gather(*(self.node(address).execute(*command) for address in addresses))
        return dict(zip(addresses, replies, strict=True))

    async def answering_primaries(self) -> tuple[list[str], dict[str, str]]:
        """Which primaries answer a PING on the connection calls use, and why the others
        do not (/healthz: one primary down leaves the other partitions serving)."""
        if not self.owners:
            await self.first_map()
        addresses = sorted(self.primaries)
        replies = await asyncio.gather(*(self.node(address).execute("PING") for address in addresses),
                                       return_exceptions=True)
        down = {address: f"{type(reply).__name__}: {reply}" for address, reply in zip(addresses, replies, strict=True)
                if isinstance(reply, BaseException)}
        for reply in replies:
            if isinstance(reply, BaseException) and not isinstance(reply, Exception):
                raise reply  # a cancellation, not a node's answer
        return [address for address in addresses if address not in down], down

    async def load_scripts(self, texts: Sequence[str], only_missing: bool = False) -> int:
        """Loads the scripts on every primary (and remembers them for primaries that come
        later); only_missing: those a primary lacks. Returns how many were loaded."""
        self.script_texts = list(texts)
        if not self.owners:
            await self.first_map()
        loaded = await asyncio.gather(*(self.load_on(address, only_missing) for address in sorted(self.primaries)))
        return sum(loaded)

    async def load_on(self, address: str, only_missing: bool) -> int:
        node, texts = self.node(address), self.script_texts
        if only_missing:
            shas = [hashlib.sha1(text.encode()).hexdigest() for text in texts]  # noqa: S324 - Redis names scripts so
            present = await node.execute("SCRIPT", "EXISTS", *shas)
            texts = [text for text, there in zip(texts, present, strict=True) if not there]
        for text in texts:
            await node.execute("SCRIPT", "LOAD", text)
        return len(texts)

    def load_soon(self, address: str) -> None:
        """The scripts loaded on one node in the background, one load per node at a time."""
        if address in self.loading or not self.script_texts or self.closed:
            return
        loading = self.loading[address] = asyncio.ensure_future(self.load_on(address, only_missing=True))

        def done(future: asyncio.Future[int]) -> None:
            self.loading.pop(address, None)
            if not future.cancelled() and future.exception() is not None:
                log.debug("scripts not loaded on %s: %s", address, future.exception())

        loading.add_done_callback(done)

    # What walletd reads of PipelinedRedis -------------------------------------------

    @property
    def on_restart(self) -> Callable[[], None] | None:
        return self._on_restart

    @on_restart.setter
    def on_restart(self, callback: Callable[[], None] | None) -> None:
        self._on_restart = callback
        for node in self.nodes.values():
            node.on_restart = callback

    @property
    def connects(self) -> int:
        """As PipelinedRedis's (app/metrics.py counts all but the first as reconnects): the
        first connection of each node counts once in all, every later one of any node counts."""
        connects = [node.connects for node in self.nodes.values() if node.connects]
        return 1 + sum(connects) - len(connects) if connects else 0

    def pending(self) -> int:
        return sum(node.pending() for node in self.nodes.values())

    def replica_ack_shortfalls(self) -> int:
        return sum(node.replica_ack_shortfalls() for node in self.nodes.values())

    async def aclose(self) -> None:
        self.closed = True
        if self.refresh_timer is not None:
            self.refresh_timer.cancel()
        for task in [self.mapping, *self.loading.values()]:
            if task is not None:
                task.cancel()
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                await node.aclose()
