"""The README's "Two commands" (run walletd) and "First OIA call", run as written, in a copy
of this checkout: the venv and install, `walletd serve`, the StarGame calls, Ctrl-C, `walletd
init` and serve again, a player and a session, and the signed changebalance from Python and
from curl, each of which must print what the README says it prints.

The only changes to the README's text: the port (8080 is not ours to take on a shared
machine; WALLETD_PORT moves serve, and the blocks' URLs follow), and the tests command is
not run (it would run this suite inside itself): .ci/run must run it verbatim instead."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from app.redis_server import free_port
from tests.readme_blocks import Block, blocks, unmatched

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("## Two commands", "## First OIA call")
# A fresh clone holds none of these: a checkout's venv, data, config and build leftovers.
NOT_CLONED = (".git", ".venv", "var", "build", "__pycache__", "*.egg-info", ".pytest_cache", "walletd.toml",
              "*.tmp")
INSTALL_AND_START_S = 600  # the first serve block creates the venv and installs walletd (downloads)
STOP_S = 30
CLIENT_S = 120


def checkout_copy(target: Path) -> Path:
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(*NOT_CLONED))
    return target


def environment(port: int) -> dict[str, str]:
    """A new operator's shell: none of our WALLETD_* settings, no venv of ours, walletd's port moved."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WALLETD_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return env | {"WALLETD_PORT": str(port)}


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


class Terminal:
    """The terminal `walletd serve` runs in: started as a job of its own, stopped with Ctrl-C."""

    def __init__(self, cwd: Path, env: dict[str, str], code: str, log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(["bash", "-c", code], cwd=cwd, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, port: int) -> None:
        deadline = time.monotonic() + INSTALL_AND_START_S
        while not healthy(port):
            assert self.process.poll() is None, f"serve block exited {self.process.returncode}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"not healthy after {INSTALL_AND_START_S} s:\n{self.tail()}"
            time.sleep(0.5)

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the job's process group; serve exits 0."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return -1

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def run_client(cwd: Path, env: dict[str, str], group: list[Block]) -> None:
    """The other terminal: its blocks in one shell (TOKEN carries over), each checked for what
    the README says it prints; -e and pipefail make any failing command fail the test."""
    markers = [f"@@ block {n} done" for n in range(len(group))]
    steps = (f"{block.code}\necho; echo '{marker}'\n" for block, marker in zip(group, markers, strict=True))
    script = "set -euo pipefail\n" + "".join(steps)
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=CLIENT_S, check=False)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    outputs = done.stdout.split("\n")
    start = 0
    for block, marker in zip(group, markers, strict=True):
        end = outputs.index(marker, start)
        output = "\n".join(outputs[start:end])
        assert unmatched(output, block.expected()) == [], f"README block:\n{block.code}\nprinted:\n{output}"
        start = end + 1


@pytest.mark.slow
def test_the_readme_first_run_works_as_written(tmp_path: Path) -> None:
    port = free_port()
    readme = (ROOT / "README.md").read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    steps = [b for b in blocks(readme, SECTIONS) if "-m pytest" not in b.code]  # not this suite, again
    assert sum(b.serves for b in steps) == 2 and any(b.saved_as for b in steps), "the sections' shape changed"
    clone = checkout_copy(tmp_path / "walletd")
    env = environment(port)
    terminal: Terminal | None = None
    pending: list[Block] = []
    try:
        for block in steps:
            if block.saved_as:
                (clone / block.saved_as).write_text(block.code)
            elif block.serves:
                if pending:
                    run_client(clone, env, pending)
                    pending = []
                if terminal is not None:
                    assert terminal.interrupt() == 0, terminal.tail()
                terminal = Terminal(clone, env, block.code, tmp_path / "serve.log")
                terminal.wait_healthy(port)
            else:
                pending.append(block)
        assert pending, "no calls after the last serve"
        run_client(clone, env, pending)
    finally:
        stopped = terminal.interrupt() if terminal is not None else 0
    assert stopped == 0, f"serve did not stop cleanly on Ctrl-C:\n{terminal.tail() if terminal else ''}"
    written = clone / "walletd.toml"
    assert written.stat().st_mode & 0o777 == 0o600


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    (command,) = [b.code.strip() for b in blocks((ROOT / "README.md").read_text(), SECTIONS) if "-m pytest" in b.code]
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
