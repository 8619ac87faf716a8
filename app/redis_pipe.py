"""The hot path's Redis client: one connection, concurrent calls written in one batch.

redis-py checks a connection out of a pool, writes, and reads one reply per
call; at a few thousand calls a second that bookkeeping, not Redis, is what
costs CPU. Here every call appends its RESP command to a buffer that is
written once per event-loop turn, and replies are matched to callers in order
(Redis answers one connection's commands in the order they came). hiredis
parses the replies, in C.

The connection is published to callers only after its handshake (AUTH with
the URL's user and password, SELECT of its db, PING: Redis has loaded its data)
has been answered OK: calls
that arrive meanwhile wait for it, so none can overtake the handshake and run
unauthenticated or in db 0. A handshake that fails closes the connection and
raises WalletUnavailable naming the step (never the password).

The contract (callers map it to protocol answers; see app/errors.py):
- WalletUnavailable: the call's bytes were never handed to the transport.
  Connect or handshake failed, too many calls in flight, the connection was
  already lost before the batch was written, or Redis answered with an error
  that means the command was not run (LOADING, BUSY, NOAUTH, MASTERDOWN).
- OutcomeUnknown: the call was handed to the transport and no reply came: the
  connection was lost after the write, or no reply within the time-out. It may
  have run; it is never re-sent.
- ClusterRefusal (a WalletUnavailable): a Redis Cluster node did not run the call
  (MOVED, ASK: another node serves its slot; TRYAGAIN, CLUSTERDOWN). The cluster
  client (app/redis_cluster_pipe.py) follows or retries it; to this standalone
  client it means redis.url names a cluster node with [redis] cluster = false.
- redis.exceptions.NoScriptError: EVALSHA of a script Redis does not hold
  (nothing ran; app/scripts.Script falls back to EVAL).
- redis.exceptions.ResponseError: any other error reply (the command ran and
  answered an error, e.g. a Lua runtime error).

Replica acknowledgements (redis.replica_acks = N, README "Scaling out"): a call sent
with confirm=True (a script whose answer vouches for money or a record,
app/scripts.py) is followed, in the same batch on the same connection, by one
`WAIT N timeout_ms` for the whole batch. Redis runs a connection's commands in
order and WAIT waits for this connection's last write, so it covers every
confirmed call before it. Their replies are held until the WAIT answers: N or
more replicas -> the replies; fewer, a WAIT error, or no answer within
timeout_ms of the write (Redis times WAIT out only at its `hz` resolution, and
the platform's budget is spent meanwhile) -> OutcomeUnknown: the script ran on
the primary and a failover could still lose it, so it is never re-sent and the
protocol answers "outcome unknown". An error reply is never held (nothing to
confirm: the scripts refuse before their first write); other calls (reads) are
not held, but they queue behind a WAIT that blocks the connection.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import hiredis
from redis.connection import parse_url
from redis.exceptions import NoScriptError, ResponseError

from app.errors import OutcomeUnknown, WalletUnavailable
from app.logsafe import without_passwords
from app.redis_link import RedisLink, wait_left_s

# Calls in flight on the one connection. Past it callers get an error at once
# instead of queueing without bound behind a stalled Redis.
PENDING_MAX = 10_000
# How often calls past their time-out are failed: 50 ms late at most, cheap between.
WATCHDOG_INTERVAL_S = 0.05
# Error replies that Redis gives before running a command: nothing ran.
NOT_RUN_PREFIXES = ("LOADING ", "BUSY ", "NOAUTH ", "MASTERDOWN ", "ERR max number of clients reached")
# Redis Cluster's error replies to a command it did not run on this node (ClusterRefusal).
CLUSTER_REFUSALS = ("MOVED ", "ASK ", "TRYAGAIN ", "CLUSTERDOWN ")
# rediss:// ?ssl_cert_reqs= values, as redis-py reads them.
TLS_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class RedisPipeError(ResponseError):
    """An error reply from Redis (hiredis builds it; NOSCRIPT is told apart below)."""


def encode_parts(args: Iterable[Any]) -> bytes:
    """args as RESP bulk strings, without the array's header. Type checks by identity
    first and one bytearray: this runs for every script call (~30 arguments)."""
    out = bytearray()
    for arg in args:
        kind = type(arg)
        if kind is str:
            data = arg.encode()
        elif kind is int or isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = arg
            assert isinstance(data, bytes), f"Redis arguments are str, int or bytes, not {kind.__name__}"
        out += b"$%d\r\n%b\r\n" % (len(data), data)
    return bytes(out)


def encode_command(args: tuple[Any, ...]) -> bytes:
    return b"*%d\r\n" % len(args) + encode_parts(args)


def evalsha_head(sha: str, numkeys: int, arguments: int) -> bytes:
    """What every EVALSHA of this script with numkeys keys and `arguments` keys and
    ARGV together starts with: encoded once, not per call (app/scripts.Script)."""
    return b"*%d\r\n" % (3 + arguments) + encode_parts(("EVALSHA", sha, numkeys))


class ClusterRefusal(WalletUnavailable):
    """A cluster node did not run the call: MOVED or ASK (slot and "host:port" of the
    node to ask), TRYAGAIN or CLUSTERDOWN (slot -1, address '')."""

    def __init__(self, reply: str) -> None:
        self.kind, _, rest = reply.partition(" ")
        self.slot, self.address = -1, ""
        if self.kind in ("MOVED", "ASK"):
            slot, _, self.address = rest.partition(" ")
            self.slot = int(slot)
        super().__init__(f"Redis did not run the call ({reply}); with [redis] cluster = false walletd "
                         f"follows no cluster redirects: set [redis] cluster = true (or \"auto\")")


def error_of(reply: RedisPipeError) -> Exception:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith(CLUSTER_REFUSALS):
        return ClusterRefusal(message)
    if message.startswith(NOT_RUN_PREFIXES):
        return WalletUnavailable(f"Redis refused the call before running it: {message}")
    return ResponseError(message)


class Call:
    """A command written or to be written. future None: a batch's WAIT, awaited by nobody
    (it decides the replies held before it); confirm: its reply waits for that WAIT."""

    __slots__ = ("command", "confirm", "future", "written_at")

    def __init__(self, command: bytes, future: asyncio.Future[Any] | None, confirm: bool = False) -> None:
        self.command = command
        self.future = future
        self.confirm = confirm
        self.written_at = 0.0


class ReplicaWait:
    """redis.replica_acks: the WAIT that follows a batch of confirmed calls, and how many
    calls ended "outcome unknown" because it came short (app/metrics.py). One per client,
    shared by its successive connections."""

    def __init__(self, replicas: int, timeout_ms: int) -> None:
        assert 1 <= replicas and 1 <= timeout_ms, "replica_acks and its time-out must be positive"
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self.command = encode_command(("WAIT", replicas, timeout_ms))
        self.shortfalls = 0

    def shortfall(self, reply: Any) -> str | None:
        """Why the WAIT's reply does not confirm, or None when it does."""
        if isinstance(reply, int) and not isinstance(reply, bool) and reply >= self.replicas:
            return None
        if isinstance(reply, int):
            return f"{reply} of the {self.replicas} replicas asked for confirmed it within {self.timeout_ms} ms"
        return f"WAIT for {self.replicas} replicas failed ({reply})"

    def unknown(self, why: str) -> OutcomeUnknown:
        return OutcomeUnknown(f"ran on the primary, but {why} (redis.replica_acks): a failover could lose it")


class Connection(asyncio.Protocol):
    """One socket to Redis: calls queued this loop turn, calls written and awaiting
    their reply (in order), and a watchdog that times the written ones out."""

    def __init__(self, timeout_s: float, replica_wait: ReplicaWait | None = None) -> None:
        self.timeout_s = timeout_s
        self.replica_wait = replica_wait  # None: replica_acks = 0, nothing is held
        # Replies of confirmed calls that came before the first WAIT still pending: that WAIT
        # decides them (replies come in order, so none of a later batch's can be here yet).
        self.held: list[tuple[asyncio.Future[Any], Any]] = []
        self.confirming = False  # a confirmed call is queued: this batch ends in a WAIT
        self.waits_written = 0  # WAITs written and answered: the n-th is pending while answered < n
        self.waits_answered = 0
        self.reader = hiredis.Reader(encoding="utf-8", replyError=RedisPipeError)
        self.transport: asyncio.Transport | None = None
        self.queued: list[Call] = []  # not yet handed to the transport
        self.written: collections.deque[Call] = collections.deque()
        self.gone: str | None = None  # why the connection is no longer usable
        self.watchdog: asyncio.TimerHandle | None = None
        # Told how calls fare once the handshake is done (a handshake reply proves nothing:
        # AUTH is answered while Redis is still loading its data).
        self.link: RedisLink | None = None
        self.proven = False  # a call of this connection was answered (not refused) since it was published

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        self.watchdog = asyncio.get_running_loop().call_later(WATCHDOG_INTERVAL_S, self.check_timeouts)

    def send(self, command: bytes, confirm: bool = False) -> asyncio.Future[Any]:
        if self.gone is not None:
            raise WalletUnavailable(f"Redis connection {self.gone}; the call was not sent")
        if len(self.queued) + len(self.written) >= PENDING_MAX:
            raise WalletUnavailable(f"{PENDING_MAX} Redis calls already in flight; the call was not sent")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self.queued:
            loop.call_soon(self.flush)
        confirm = confirm and self.replica_wait is not None
        self.confirming = self.confirming or confirm
        self.queued.append(Call(command, future, confirm))
        return future

    def flush(self) -> None:
        batch, self.queued = self.queued, []
        if not batch:
            return
        waits = self.confirming
        if waits:
            assert self.replica_wait is not None
            self.confirming = False
            batch.append(Call(self.replica_wait.command, None))
        if self.gone is not None or self.transport is None or self.transport.is_closing():
            fail(batch, WalletUnavailable(f"Redis connection {self.gone or 'closing'} before the call was written"))
            return
        now = time.monotonic()
        for call in batch:
            call.written_at = now
        self.written.extend(batch)
        try:
            self.transport.write(b"".join(call.command for call in batch))
        except Exception as exc:  # noqa: BLE001 - part may be on its way: outcome unknown, never "not sent"
            self.close(f"failed while writing ({exc})")
            return
        if waits:
            assert self.replica_wait is not None
            self.waits_written += 1
            asyncio.get_running_loop().call_later(self.replica_wait.timeout_ms / 1000, self.wait_expired,
                                                  self.waits_written)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        written = self.written
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            call = written.popleft()
            future = call.future
            if future is None:
                self.replicas_answered(reply)
                continue
            if future.done():
                continue  # timed out earlier; its late reply is dropped
            if isinstance(reply, RedisPipeError):
                error = error_of(reply)
                # LOADING, BUSY...; not a cluster's refusal: that node answers, it serves other slots.
                if isinstance(error, WalletUnavailable) and not isinstance(error, ClusterRefusal) \
                        and self.link is not None:
                    self.proven = False
                    self.link.unavailable(str(error))
                future.set_exception(error)
            else:
                if not self.proven and self.link is not None:
                    self.proven = True
                    self.link.answered()
                if call.confirm:
                    self.held.append((future, reply))
                else:
                    future.set_result(reply)

    def replicas_answered(self, reply: Any) -> None:
        """The batch's WAIT answered: the held replies are given, or fail if it came short."""
        assert self.replica_wait is not None
        self.waits_answered += 1
        held, self.held = self.held, []
        why = self.replica_wait.shortfall(reply)
        if why is None:
            for future, result in held:
                if not future.done():  # (failed by wait_expired, or the caller gave up)
                    future.set_result(result)
        else:
            self.replica_wait.shortfalls += fail_held(held, self.replica_wait.unknown(why))

    def wait_expired(self, number: int) -> None:
        """replica_ack_timeout_ms after the number-th WAIT was written: if it has not answered,
        the replies held (for it or an earlier one, expired too) fail now, inside the
        platform's budget; the WAIT's own reply, whenever it comes, decides nothing more."""
        if self.held and self.waits_answered < number:
            wait = self.replica_wait
            assert wait is not None
            wait.shortfalls += self.fail_held(wait.unknown(f"no WAIT answer within {wait.timeout_ms} ms"))

    def fail_held(self, error: OutcomeUnknown) -> int:
        """Fails the held replies' callers; returns how many were still waiting."""
        held, self.held = self.held, []
        return fail_held(held, error)

    def check_timeouts(self) -> None:
        """Fails written calls older than the time-out; their replies are dropped when they come."""
        expired = time.monotonic() - self.timeout_s
        for call in self.written:
            if call.written_at > expired:
                break
            if call.future is not None and not call.future.done():
                call.future.set_exception(OutcomeUnknown(f"no reply from Redis within {self.timeout_s:g} s"))
        self.watchdog = asyncio.get_running_loop().call_later(WATCHDOG_INTERVAL_S, self.check_timeouts)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(f"lost ({exc or 'closed by Redis'})")

    def close(self, why: str) -> None:
        if self.gone is None:
            self.gone = why
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        lost = OutcomeUnknown(f"Redis connection {self.gone} after the call was written")
        fail(list(self.written), lost)
        self.written.clear()
        if self.held:  # ran, and no WAIT will say whether replicas have them
            self.fail_held(lost)
        fail(self.queued, WalletUnavailable(f"Redis connection {self.gone} before the call was written"))
        self.queued = []
        if self.transport is not None:
            self.transport.close()


def retrieve(future: asyncio.Future[Any]) -> None:
    """Fetches the outcome of a reply no one awaits, so that asyncio logs nothing."""
    if not future.cancelled():
        future.exception()


def fail_held(held: list[tuple[asyncio.Future[Any], Any]], error: OutcomeUnknown) -> int:
    """Fails these held replies' callers; returns how many were still waiting. (A
    shortfall's held list is taken before it is failed: failing self.held then found it
    empty and left its callers waiting forever.)"""
    failed = 0
    for future, _ in held:
        if not future.done():
            future.set_exception(error)
            failed += 1
    return failed


def fail(calls: list[Call], error: Exception) -> None:
    for call in calls:
        if call.future is not None and not call.future.done():
            call.future.set_exception(error)


class PipelinedRedis:
    """evalsha/eval/execute with the same call shape as redis-py's asyncio client,
    and the errors listed in the module docstring."""

    def __init__(self, url: str, timeout_s: float, connect_timeout_s: float, *, replica_acks: int = 0,
                 replica_ack_timeout_ms: int = 0) -> None:
        options = parse_url(url)
        self.path = options.get("path")  # unix:// URLs
        self.host = options.get("host", "127.0.0.1")
        self.port = options.get("port", 6379)
        self.where = self.path or f"{self.host}:{self.port}"
        self.tls = tls_context(url, options)
        self.handshake_commands = handshake(options)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.connection: Connection | None = None  # only ever a handshaken one
        self.connecting: asyncio.Future[Connection] | None = None
        self.closed = False
        self.link = RedisLink(self.where)  # outage log lines and the connect backoff
        # Called when a new connection reaches another Redis process than the last one did
        # (a restart: its data may be gone, app/ledger/guard.py); the calls waiting for that
        # connect fail unsent. None: the run_id is not asked for at all.
        self.on_restart: Callable[[], None] | None = None
        self.run_id: str | None = None  # INFO server's run_id at the last connect ('' = not allowed)
        self.connects = 0  # connections published; all but the first are reconnects (app/metrics.py)
        # redis.replica_acks: confirmed calls wait for this many replicas (module docstring).
        self.replica_wait = ReplicaWait(replica_acks, replica_ack_timeout_ms) if replica_acks else None

    # confirm=True: the reply waits for redis.replica_acks replicas (module docstring).
    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any, confirm: bool = False) -> Any:
        return await self.execute("EVALSHA", sha, numkeys, *keys_and_args, confirm=confirm)

    async def eval(self, script: str, numkeys: int, *keys_and_args: Any, confirm: bool = False) -> Any:
        return await self.execute("EVAL", script, numkeys, *keys_and_args, confirm=confirm)

    async def evalsha_encoded(self, head: bytes, keys_and_args: Sequence[Any], *, confirm: bool = False) -> Any:
        """EVALSHA whose constant start (evalsha_head) is encoded already."""
        connection = self.connection
        if connection is None or connection.gone is not None:
            connection = await self.connect()
        return await connection.send(head + encode_parts(keys_and_args), confirm)

    async def execute(self, *args: Any, confirm: bool = False) -> Any:
        connection = self.connection
        if connection is None or connection.gone is not None:
            connection = await self.connect()
        return await connection.send(encode_command(args), confirm)

    async def connected(self) -> Connection:
        """The published connection, connecting first if there is none (the cluster client
        writes ASKING on it right before the call: app/redis_cluster_pipe.py)."""
        connection = self.connection
        if connection is None or connection.gone is not None:
            connection = await self.connect()
        return connection

    async def connect(self) -> Connection:
        """One connect at a time; every caller that arrives meanwhile waits for it. After
        a failed one, callers fail at once until the backoff allows the next attempt."""
        if self.connecting is None:
            if not self.link.may_connect():
                self.link.count_refusal()
                raise WalletUnavailable(f"{self.link.last_failure}; next connect attempt in "
                                        f"{self.link.wait_s() * 1000:.0f} ms; the call was not sent")
            self.connecting = asyncio.ensure_future(self._connect_counted())
            self.connecting.add_done_callback(self._connect_done)
        connecting = self.connecting
        try:
            # The connect goes on for later calls; this one stops waiting at its deadline.
            return await asyncio.wait_for(asyncio.shield(connecting), wait_left_s(self.connect_timeout_s * 2))
        except TimeoutError:
            self.link.count_refusal()
            raise WalletUnavailable(f"no connection to Redis at {self.where} before the call's deadline; "
                                    "the call was not sent") from None

    def _connect_done(self, connecting: asyncio.Future[Connection]) -> None:
        """The next call starts a new connect; the outcome is retrieved here, since every
        caller may have stopped waiting (at its deadline) before it came."""
        if self.connecting is connecting:
            self.connecting = None
        if not connecting.cancelled():
            connecting.exception()

    async def _connect_counted(self) -> Connection:
        try:
            return await self._connect()
        except WalletUnavailable as exc:
            if not self.closed:
                self.link.connect_failed(str(exc))
            raise

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        connection = Connection(self.timeout_s, self.replica_wait)
        if self.path:
            opening = loop.create_unix_connection(lambda: connection, self.path)
        else:
            opening = loop.create_connection(lambda: connection, self.host, self.port, ssl=self.tls,
                                             server_hostname=self.host if self.tls else None)
        try:
            await asyncio.wait_for(opening, self.connect_timeout_s)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise WalletUnavailable(f"cannot connect to Redis at {self.where}: {exc or type(exc).__name__}") from exc
        if connection.gone is not None:
            raise WalletUnavailable(f"Redis connection to {self.where} {connection.gone} while opening")
        try:
            await asyncio.wait_for(self._handshake(connection), self.connect_timeout_s)
        except BaseException as exc:
            connection.close("closed: handshake failed")
            if isinstance(exc, TimeoutError):
                raise WalletUnavailable(f"Redis at {self.where}: no reply to the handshake") from exc
            raise
        if self.closed:
            connection.close("closed by walletd")
            raise WalletUnavailable("the Redis client was closed while connecting")
        restarted = self.on_restart is not None and await self._restarted(connection)
        connection.link = self.link
        if restarted:
            assert self.on_restart is not None
            self.on_restart()  # callbacks are refused before this connection can take one
        self.connection = connection
        self.connects += 1
        if restarted:
            raise WalletUnavailable(f"Redis at {self.where} restarted; it is compared with the ledger store "
                                    f"before calls are sent; the call was not sent")
        return connection

    async def _restarted(self, connection: Connection) -> bool:
        """Whether this connection reaches another Redis process than the last one (its
        run_id changed). A Redis that refuses INFO (an ACL) cannot tell: never."""
        try:
            info = await asyncio.wait_for(connection.send(encode_command(("INFO", "server"))),
                                          self.connect_timeout_s)
        except ResponseError:
            info = ""
        except (TimeoutError, WalletUnavailable, OutcomeUnknown) as exc:
            connection.close("closed: INFO server failed")
            raise WalletUnavailable(f"Redis at {self.where}: INFO server failed ({exc})") from exc
        run_id = next((line[7:].strip() for line in str(info).splitlines() if line.startswith("run_id:")), "")
        previous, self.run_id = self.run_id, run_id
        return previous is not None and run_id != previous

    async def _handshake(self, connection: Connection) -> None:
        """AUTH and SELECT, written together, each reply checked before the connection is used."""
        sent = [(name, connection.send(encode_command(command))) for name, command in self.handshake_commands]
        for _, reply in sent:  # after a refused AUTH the rest are not awaited (PING: NOAUTH)
            reply.add_done_callback(retrieve)
        for name, reply in sent:
            try:
                await reply
            except (ResponseError, WalletUnavailable, OutcomeUnknown) as exc:
                raise WalletUnavailable(f"Redis at {self.where} refused {name}: {exc}") from exc

    def replica_ack_shortfalls(self) -> int:
        """Confirmed calls that ended "outcome unknown" because too few replicas confirmed (metrics)."""
        return 0 if self.replica_wait is None else self.replica_wait.shortfalls

    def pending(self) -> int:
        """Calls queued or written and awaiting their reply (the metrics' pending depth)."""
        connection = self.connection
        return 0 if connection is None else len(connection.queued) + len(connection.written)

    async def aclose(self) -> None:
        self.closed = True
        if self.connection is not None:
            self.connection.close("closed by walletd")
            self.connection = None


def handshake(options: dict[str, Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """(what it is, for error messages; the command) in the order they are sent."""
    commands: list[tuple[str, tuple[Any, ...]]] = []
    password, username = options.get("password"), options.get("username")
    if password:
        auth = ("AUTH", username, password) if username else ("AUTH", password)
        commands.append((f"AUTH as {username!r}" if username else "AUTH", auth))
    elif username:
        raise ValueError(f"Redis URL names user {username!r} but no password")
    if options.get("db"):
        commands.append((f"SELECT {options['db']}", ("SELECT", options["db"])))
    # A restarted Redis accepts connections while it loads its AOF, and answers nothing
    # (or LOADING) until it is done: a call written meanwhile would wait past its budget
    # for that reply. PING waits there instead, in the connect, which a call leaves unsent
    # at its deadline.
    commands.append(("PING", ("PING",)))
    return commands


def tls_context(url: str, options: dict[str, Any]) -> ssl.SSLContext | None:
    """rediss://: the same query options as redis-py (ssl_ca_certs, ssl_cert_reqs,
    ssl_certfile, ssl_keyfile, ssl_check_hostname); by default the server's
    certificate and host name are verified against ssl_ca_certs or the system CAs."""
    if urlsplit(url).scheme != "rediss":
        return None
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    if str(options.get("ssl_check_hostname", "true")).lower() in ("false", "0", "no"):
        context.check_hostname = False
    requirement = str(options.get("ssl_cert_reqs", "required")).lower()
    if requirement not in TLS_CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(TLS_CERT_REQS)}")
    if TLS_CERT_REQS[requirement] == ssl.CERT_NONE:
        context.check_hostname = False
    context.verify_mode = TLS_CERT_REQS[requirement]
    return context


def redacted(url: str) -> str:
    """The URL as it may be logged: no password, neither in the user part nor as a
    ?password= parameter (unix:// URLs), and no parsing that a bad port could fail."""
    return without_passwords(url)
