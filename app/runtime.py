"""What one walletd process holds, built from settings in one place and closed in reverse.

Every process (the HTTP server, a CLI command, `walletd flush`, verify, serve's
preflight, the bench's player set-up, the test fixtures) builds a Runtime and asks
only for the parts it uses:

    always        the redis-py client, the Wallet (its keys and scripts), the OIA
                  wallet, a read-only ledger store reader (opened on first lookup),
                  the cold-start guard (app/ledger/guard.py)
    serving       the hot path's script client (redis.script_client), the StarGame
                  journal, the OIA late-retry filter's start
    ledger        the ledger store, the flusher and the StarGame reconciler

Building opens no connection (redis-py and the pipelined client connect on first
use, the store reader on first lookup) except the ledger store's file; `start()`
compares Redis with the ledger store and, unless Redis is behind, prepares it (the
meta hash, the scripts; `prepare()`, run again by the guard once Redis has caught
up); `close()` undoes everything built, in reverse, whether or not
`start()` ran or succeeded; a construction that fails half-way closes what it had
built before it raises.

    metrics       (metrics.enabled) what the process exports (app/metrics.py): a
                  server's script client and store lookups (app/web.py adds its
                  callbacks), the flush process's flusher when serve started it
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from pathlib import Path
from types import TracebackType

from redis.exceptions import RedisError

from app import metrics, settings as config
from app.ledger import LedgerStore, open_store
from app.ledger.consumers import Lease, consumer_name
from app.ledger.flusher import Flusher
from app.ledger.guard import ColdStart
from app.protocols.oia.wallet import OiaWallet, StoreReader
from app.protocols.stargame.journal import Journal, directory_of
from app.protocols.stargame.reconciler import Reconciler
from app.redis_client import connect, script_client
from app.redis_cluster_pipe import ClusterPipelinedRedis
from app.redis_link import RedisLink
from app.redis_pipe import PipelinedRedis, redacted
from app.redis_topology import cluster_mode
from app.settings import Settings
from app.wallet import Wallet

# The pipelined script clients (one Redis, Redis Cluster): what they report is read alike.
PIPELINED = (PipelinedRedis, ClusterPipelinedRedis)
# A background task asked to stop gets this long to finish its round (serve's shutdown).
BACKGROUND_STOP_S = 10


def rebuild_command(config_path: str | None) -> str:
    """What the operator runs to restore Redis from the ledger store (the guard logs it)."""
    path = Path(config_path) if config_path else config.config_file(None)
    return f"walletd rebuild --config {path.resolve()}" if path else "walletd rebuild"


class Runtime:
    def __init__(self, settings: Settings, redis_url: str, *, serving: bool = False, ledger: bool = False,
                 config_path: str | None = None) -> None:
        self.settings = settings
        self.serving = serving
        self.config_path = config_path  # named in the rebuild command the guard logs
        self.exit = contextlib.AsyncExitStack()  # every closer, pushed as its part is built
        # The parts' closers that need no event loop, so that a construction that fails
        # half-way closes what it built before raising (a caller gets no Runtime to close).
        self.parts = contextlib.ExitStack()
        self.journal: Journal | None = None
        self.store: LedgerStore | None = None
        self.flusher: Flusher | None = None
        self.reconciler: Reconciler | None = None
        self.flusher_task: asyncio.Task[None] | None = None
        self.guard_task: asyncio.Task[None] | None = None
        self.metrics: metrics.ProcessMetrics | None = None
        try:
            self.build(redis_url, ledger)
        except BaseException:
            self.parts.close()
            raise

    def build(self, redis_url: str, ledger: bool) -> None:
        settings = self.settings
        # Redis Cluster or one Redis (README "Scaling out"); asked once, here, unless said.
        self.cluster = cluster_mode(redis_url, settings.redis)
        # The Redis clients' closers are async: building them opens no connection (they
        # connect on first use), so a construction that fails leaves none behind.
        self.redis = connect(redis_url, settings.redis, self.cluster)
        self.exit.push_async_callback(self.redis.aclose)
        # Only the HTTP server's bookings take redis.script_client; a command's few go through
        # redis-py, except on Redis Cluster: there every script goes through the cluster client
        # (redis-py's cluster client re-sends calls whose outcome is unknown); and except when
        # replicas must confirm them (redis.replica_acks): only the pipelined clients WAIT (so
        # the reconciler's settlements and the CLI's deposits are confirmed like bookings).
        pipelined = self.serving or self.cluster or settings.redis.replica_acks > 0
        self.script_client = (script_client(redis_url, settings.redis, self.redis, self.cluster)
                              if pipelined else self.redis)
        if self.script_client is not self.redis:
            self.exit.push_async_callback(self.script_client.aclose)
        # The pipelined client reports outages to its link; with redis-py's no one does
        # (never down), and the protocols log each kind of failure once a minute instead.
        self.redis_link = (self.script_client.link if isinstance(self.script_client, PIPELINED)
                           else RedisLink(redacted(redis_url)))
        self.exit.enter_context(self.parts)  # closed before the clients, after what start_background adds
        self.wallet = Wallet(self.redis, settings.wallet, self.script_client)
        self.store_reader = StoreReader(settings.storage_url)
        self.parts.callback(self.store_reader.close)
        self.oia_wallet = OiaWallet(self.wallet, settings.oia, self.store_reader)
        self.guard = ColdStart(self.redis, self.wallet.keys, self.store_reader.seq_maxes, self.prepare,
                               rebuild_command(self.config_path))
        if isinstance(self.script_client, PIPELINED):
            # A Redis restarted under the server may have lost its data: nothing is booked
            # on it before the guard has compared it with the store (redis-py's client
            # reconnects unseen: its window is the guard's re-check, README "Cold start").
            self.script_client.on_restart = self.guard.suspect
        if self.serving:
            sg = settings.stargame
            self.journal = Journal(directory_of(settings.data_path), sg.journal_notes_per_file, sg.journal_files_max)
            self.parts.callback(self.journal.close)
        if ledger:
            self.build_ledger()
        # Whatever the client, a script Redis no longer holds (NOSCRIPT: it restarted, maybe
        # without its data) waits for the guard's comparison before it is sent again.
        self.wallet.scripts.check_before_reload(self.guard.confirm)
        # A server's, and the flush process's under serve (its metrics directory is set):
        # not a command's, whose counts no scrape would see.
        if settings.metrics.enabled and (self.serving or (ledger and metrics.multiprocess())):
            self.build_metrics()

    def build_ledger(self) -> None:
        store = self.store = open_store(self.settings.storage_url)
        self.parts.callback(store.close)
        # This instance's consumer name, held by a lease while its flusher runs (README "Scaling out").
        consumer = consumer_name(self.settings)
        flusher = self.flusher = Flusher(self.redis, store, self.wallet.keys, self.settings.flusher, self.guard,
                                         consumer=consumer, lease=Lease(self.redis, consumer, self.settings.data_path))
        self.parts.callback(flusher.close)
        # The reconciler lives with the flusher: one per deployment's data_dir.
        self.reconciler = Reconciler(self.wallet.scripts, self.wallet.keys, self.settings.stargame,
                                     directory_of(self.settings.data_path), self.guard)

    def build_metrics(self) -> None:
        exported = self.metrics = metrics.ProcessMetrics()
        defined = exported.defined
        if isinstance(self.script_client, PIPELINED):
            client = self.script_client
            exported.gauge(defined.pending, client.pending)
            exported.total(defined.reconnects, lambda: max(0, client.connects - 1))
            exported.total(defined.replica_ack_failures, client.replica_ack_shortfalls)
        if isinstance(self.script_client, ClusterPipelinedRedis):
            redirects = self.script_client.redirects
            for kind in redirects:
                exported.total(defined.redirects.labels(kind), functools.partial(redirects.__getitem__, kind))
        if self.serving:
            exported.total(defined.store_errors.labels(metrics.LOOKUP), lambda: self.store_reader.errors)
        if self.flusher is not None:
            flusher = self.flusher
            exported.total(defined.store_errors.labels(metrics.FLUSHER), lambda: flusher.store_errors)
            exported.total(defined.stored, lambda: flusher.entries_stored)

    def start_metrics(self) -> None:
        """Fold the metrics every interval until close(), and once more then."""
        if self.metrics is not None:
            self.metrics.start()
            self.exit.push_async_callback(self.metrics.stop)

    async def start(self) -> None:
        """Compare Redis with the ledger store (the guard), then prepare Redis, unless it
        is behind: then only a partition count it holds is checked, nothing written."""
        await self.guard.check()
        if self.guard.reason:
            await self.wallet.check_partitions(write=False)

    async def prepare(self) -> None:
        """The partition count, the scripts, and when serving since when every booking is
        in the OIA late-retry filter: written to Redis only once it is not behind."""
        await self.wallet.start()
        if self.serving:
            await self.oia_wallet.start()

    def start_guard(self, role: str) -> None:
        """Compare Redis with the ledger store again and again until close(), logging
        changes as `role` (app/ledger/guard.py)."""
        assert self.guard_task is None, "start_guard() once"
        guard = self.guard
        task = self.guard_task = asyncio.create_task(guard.watch(role), name="cold-start-guard")

        async def stop_guard() -> None:
            guard.stop()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=BACKGROUND_STOP_S)

        self.exit.push_async_callback(stop_guard)

    def start_background(self) -> None:
        """Run the flusher and the reconciler as tasks of this event loop until close()."""
        assert self.flusher is not None and self.reconciler is not None, "built with ledger=True"
        assert self.flusher_task is None, "start_background() once"
        flusher, reconciler = self.flusher, self.reconciler
        flusher_task = self.flusher_task = asyncio.create_task(flusher.run(), name="flusher")
        reconciler_task = asyncio.create_task(reconciler.run(), name="reconciler")

        async def stop_flusher() -> None:
            flusher.request_exit()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await asyncio.wait_for(flusher_task, timeout=BACKGROUND_STOP_S)

        async def stop_reconciler() -> None:
            reconciler.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(reconciler_task, timeout=BACKGROUND_STOP_S)

        self.exit.push_async_callback(stop_flusher)
        self.exit.push_async_callback(stop_reconciler)  # stopped first: it books reversals

    async def close(self) -> None:
        await self.exit.aclose()

    async def __aenter__(self) -> Runtime:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
