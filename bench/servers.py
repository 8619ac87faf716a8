"""The processes a bench run measures, each pinned to its cores with taskset:
a durable redis-server, `walletd serve`, and the bare baseline endpoint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from app import spawn
from app.redis_server import find_binary, free_port, server_args
from bench.fixtures import ADMIN_TOKEN, OPERATOR, SECRET

READY_TIMEOUT_S = 60.0
BENCH_DIR = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pinned(cpus: str | None, command: list[str]) -> list[str]:
    if cpus is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", cpus, *command]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its live children (uvicorn's workers)."""
    total = cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        for child in children.read_text().split():
            total += tree_cpu_seconds(int(child))
    return total


def wait_http(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} died:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own http:// URL
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready:\n{log.read_text()[-3000:]}")


class Process:
    def __init__(self, name: str, command: list[str], log: Path) -> None:
        self.name = name
        self.command = command
        self.log = log
        # The bench's own config file says everything: no WALLETD_* overrides. The `app`
        # the bench imports, wherever it was started from (app/spawn.py).
        env = spawn.environment({k: v for k, v in os.environ.items() if not k.startswith("WALLETD_")})
        with open(log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return tree_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_redis(directory: Path, cpus: str | None) -> tuple[Process, str]:
    """redis-server with AOF and appendfsync always, as walletd's embedded one runs."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    redis = Process("redis", pinned(cpus, server_args(find_binary(), directory, port)), directory / "stdout.log")
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not (directory / "redis.log").exists() or b"Ready to accept" not in (directory / "redis.log").read_bytes():
        if time.monotonic() > deadline or redis.process.poll() is not None:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return redis, url


# TOML appended to every walletd config the benchmark writes (a literal \n for a newline).
CONFIG_EXTRA_ENV = "WALLETD_BENCH_CONFIG_EXTRA"


def walletd_config(directory: Path, port: int, redis_url: str, workers: int, script_client: str,
                   metrics: bool = True, *, data_dir: Path | None = None, store_url: str = "",
                   flusher_consumer: str = "") -> Path:
    """data_dir, store_url: one of several instances sharing a Redis and a ledger store
    (bench/cluster.py), each in a data_dir of its own with its own flusher consumer name."""
    config = directory / f"walletd-{port}.toml"
    config.write_text(
        f'data_dir = "{data_dir or directory / "var"}"\n'
        f"[server]\nport = {port}\nworkers = {workers}\n"
        f'[redis]\nurl = "{redis_url}"\nscript_client = "{script_client}"\n'
        f'[storage]\nurl = "{store_url or "sqlite:///" + str(directory / "ledger.db")}"\n'
        + (f'[flusher]\nconsumer = "{flusher_consumer}"\n' if flusher_consumer else "") +
        f'[[oia.operators]]\nid = "{OPERATOR}"\nsecret_key = "{SECRET}"\n'
        f'[admin]\ntoken = "{ADMIN_TOKEN}"\n'
        f"[metrics]\nenabled = {'true' if metrics else 'false'}\n"
        # An experiment's settings (e.g. "[flusher]\nnice = 0"), compared against a run without.
        + os.environ.get(CONFIG_EXTRA_ENV, "").replace("\\n", "\n")
    )
    return config


def start_walletd(config: Path, port: int, cpus: str | None) -> Process:
    log = config.with_suffix(".log")
    walletd = Process("walletd", pinned(cpus, spawn.command("app.cli", "--config", str(config), "serve")), log)
    wait_http(f"http://127.0.0.1:{port}/healthz", walletd.process, log)
    return walletd


def start_bare(directory: Path, port: int, cpus: str | None) -> Process:
    log = directory / "bare.log"
    bare = Process("bare", pinned(cpus, [sys.executable, str(BENCH_DIR / "bare.py"), str(port)]), log)
    wait_http(f"http://127.0.0.1:{port}/ping", bare.process, log)
    return bare
