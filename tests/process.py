"""Run `walletd` as a real process, the way an operator does."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
from pathlib import Path

import httpx

from app import spawn
from app.redis_server import free_port
from tests.support import ADMIN_TOKEN, OPERATOR, SECRET

READY_TIMEOUT_S = 30.0
REFUSAL_TIMEOUT_S = 20.0  # a refused start takes a second; past this it did not refuse


def write_config(directory: Path, port: int, redis_url: str, budget_ms: int, redis_extra: str = "",
                 storage_url: str = "", data_dir: Path | None = None, extra: str = "", workers: int = 1,
                 server_extra: str = "", admin_extra: str = "", flusher_extra: str = "") -> Path:
    """extra: more TOML, appended (sections this function does not write); server_extra,
    admin_extra, flusher_extra: more keys of [server], [admin], [flusher]."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "walletd.toml"
    config.write_text(
        f'data_dir = "{data_dir or directory / "var"}"\n'
        f"[server]\nport = {port}\nworkers = {workers}\n{server_extra}"
        f'[redis]\nurl = "{redis_url}"\n{redis_extra}'
        f'[storage]\nurl = "{storage_url or "sqlite:///" + str(directory / "ledger.db")}"\n'
        f"[stargame]\nbudget_ms = {budget_ms}\n"
        f"[flusher]\ntick_ms = 20\n{flusher_extra}"
        f'[[oia.operators]]\nid = "{OPERATOR}"\nsecret_key = "{SECRET}"\n'
        f'[admin]\ntoken = "{ADMIN_TOKEN}"\n{admin_extra}{extra}'
    )
    return config


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Ours without WALLETD_ overrides (plus a test's own: extra), leading the child to the
    `app` these tests import."""
    ours = {k: v for k, v in os.environ.items() if not k.startswith("WALLETD_")}
    return spawn.environment({**ours, **(extra or {})})


def walletd(config: Path, *args: str, check: bool = True, timeout_s: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(spawn.command("app.cli", "--config", str(config), *args),
                          capture_output=True, text=True, timeout=timeout_s, check=check, env=environment(env))


class Server:
    """tls: (certificate, key) files: served over HTTPS, the certificate trusted by self.verify."""

    def __init__(self, directory: Path, redis_url: str = "embedded", budget_ms: int = 40, cwd: Path | None = None,
                 tls: tuple[Path, Path] | None = None, env: dict[str, str] | None = None,
                 **config: str | Path | int) -> None:
        self.cwd = cwd  # the folder serve is started from (default: ours)
        self.env = env  # WALLETD_* variables for serve (none of ours reach it)
        self.port = free_port()
        self.verify: ssl.SSLContext | bool = True
        if tls is not None:
            tls_keys = f'ssl_certfile = "{tls[0]}"\nssl_keyfile = "{tls[1]}"\n'
            config["server_extra"] = tls_keys + str(config.get("server_extra", ""))
            self.verify = ssl.create_default_context(cafile=tls[0])
        self.config = write_config(directory, self.port, redis_url, budget_ms, **config)  # type: ignore[arg-type]
        self.log = directory / "serve.log"
        self.process: subprocess.Popen | None = None
        self.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, ready_status: int = 200) -> Server:
        """Started once /healthz answers ready_status (503: serving refusals, tests/test_cold_start.py)."""
        with open(self.log, "ab") as log:
            # Own process group, like a shell job: interrupt() signals all of it.
            self.process = subprocess.Popen(
                spawn.command("app.cli", "--config", str(self.config), "serve"),
                stdout=log, stderr=subprocess.STDOUT, env=environment(self.env), start_new_session=True, cwd=self.cwd)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1, verify=self.verify).status_code == ready_status:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("walletd did not become ready:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)

    def interrupt(self) -> int:
        """Ctrl-C in the terminal: SIGINT to the whole process group; the exit code."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(30)

    def refused(self) -> subprocess.CompletedProcess:
        """Run `walletd serve` expecting it to refuse to start."""
        return walletd(self.config, "serve", check=False, timeout_s=REFUSAL_TIMEOUT_S, env=self.env)
