"""Test helpers: a private PostgreSQL 16 from the `pgserver` wheel's binaries (initdb,
pg_ctl), which a test may stop and start again on the same port; and fresh empty
databases on whichever server the session uses.

The session's server is WALLETD_TEST_POSTGRES_URL when set (an operator's or CI's
PostgreSQL; its user must be allowed to CREATE DATABASE), else one PrivatePostgres
(tests/conftest.py's `postgres_server`). An outage test needs a server it may stop:
it uses `private_postgres(tmp_path)` whatever WALLETD_TEST_POSTGRES_URL says."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from app.redis_server import free_port

ENV_URL = "WALLETD_TEST_POSTGRES_URL"  # a server to use instead of a private one
# PostgreSQL refuses to run as root; pgserver's own convention for the unprivileged user.
SYSTEM_USER = "pgserver"
# pg_ctl -w waits at most this long for the server to start or stop.
PG_CTL_WAIT_S = 60
# Names of the databases tests create: walletd_test_<pid>_<n>, unique within a shared server.
DATABASES = itertools.count(1)


def binary(name: str) -> str:
    """A PostgreSQL program from the pgserver wheel (found, not imported: importing
    pgserver sets up its own server registry, which these helpers do not use)."""
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.origin is not None, "pip install -e '.[test]' installs pgserver"
    return str(Path(spec.origin).parent / "pginstall" / "bin" / name)


def open_parents(path: Path) -> None:
    """Every directory above path may be traversed by others (as pgserver does as root)."""
    traverse = stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
    for parent in path.resolve().parents:
        parent.chmod(parent.stat().st_mode | traverse)


def let_user_reach(directory: Path, user: str) -> None:
    """As root: the user exists, may reach the binaries and directory, and owns directory."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", user], check=True, capture_output=True)
        entry = pwd.getpwnam(user)
    open_parents(Path(binary("postgres")).parent)
    open_parents(directory)
    os.chown(directory, entry.pw_uid, entry.pw_gid)


class PrivatePostgres:
    """PostgreSQL on 127.0.0.1:port (trust auth, user postgres). ``start()`` runs initdb the
    first time; ``stop()`` is pg_ctl's fast shutdown (clients see their connections closed:
    an outage), or ``immediate=True`` (like kill -9: crash recovery at the next start). Both
    are idempotent; ``remove()`` stops it and deletes its data. ``pause()`` / ``resume()``
    SIGSTOP / SIGCONT it: a server that hangs without closing anything. ``url`` names the `postgres`
    database; ``admin_url`` is the same (the test's superuser).

    Its files (data, server.log, pg_ctl.log) are in directory/postgres, except as root:
    then the server runs as SYSTEM_USER from a directory of its own under the system's temp
    dir, because every pytest session that starts (anyone's, on a shared machine) sets the
    shared /tmp/pytest-of-root back to mode 0700, which would lock SYSTEM_USER out of a
    server under tmp_path while it runs."""

    def __init__(self, directory: Path) -> None:
        # as root, initdb and postgres run as SYSTEM_USER (they refuse to run as root)
        self.user = SYSTEM_USER if os.geteuid() == 0 else None
        if self.user is None:
            self.directory = directory / "postgres"
            self.directory.mkdir(parents=True, exist_ok=True)
        else:
            self.directory = Path(tempfile.mkdtemp(prefix="walletd-test-postgres-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    admin_url = url

    def run(self, args: list[str]) -> None:
        log = self.directory / "pg_ctl.log"
        with log.open("ab") as out:
            result = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, user=self.user,
                                    timeout=PG_CTL_WAIT_S + 10, check=False)
        if result.returncode != 0:
            server_log = (self.directory / "server.log")
            tail = server_log.read_text()[-3000:] if server_log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{log.read_text()[-3000:]}\n{tail}")

    def prepare(self) -> None:
        if self.user is not None:
            let_user_reach(self.directory, self.user)
        if not (self.data / "PG_VERSION").exists():
            self.run([binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--no-sync"])

    def start(self) -> PrivatePostgres:
        if self.running:
            return self
        self.prepare()
        # TCP on 127.0.0.1 only; the socket in the data directory (not /tmp: no clash with others)
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data}"
        self.run([binary("pg_ctl"), "-D", str(self.data), "-w", "-t", str(PG_CTL_WAIT_S), "-o", options,
                  "-l", str(self.directory / "server.log"), "start"])
        self.running = True
        return self

    def stop(self, immediate: bool = False) -> None:
        if not self.running:
            return
        self.run([binary("pg_ctl"), "-D", str(self.data), "-w", "-t", str(PG_CTL_WAIT_S),
                  "-m", "immediate" if immediate else "fast", "stop"])
        self.running = False

    def processes(self) -> list[int]:
        """The postmaster's pid and its children's (backends, checkpointer, ...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        return [postmaster, *map(int, children)]

    def pause(self) -> None:
        """SIGSTOP to every process of the server: it stops answering, while its host's
        kernel still accepts connections and acknowledges what clients send (a hung server)."""
        for pid in self.processes():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.processes():
            os.kill(pid, signal.SIGCONT)

    def remove(self) -> None:
        try:
            self.stop(immediate=True)  # its data goes next: nothing to shut down cleanly for
        finally:
            if self.user is not None:
                shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def private_postgres(directory: Path) -> Iterator[PrivatePostgres]:
    """A PrivatePostgres of the test's own (pass tmp_path), started; stopped and removed at
    the end. Use it for a test that stops or restarts PostgreSQL: `.stop()` (or
    `.stop(immediate=True)`, a crash), `.start()` (same port, same data), `.pause()` /
    `.resume()` (hung, then answering again), `.url`. It never
    uses WALLETD_TEST_POSTGRES_URL, which may be shared."""
    server = PrivatePostgres(directory)
    try:
        yield server.start()
    finally:
        server.remove()


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def fresh_database(server_url: str) -> str:
    """A new empty database on the server (walletd_test_<pid>_<n>): its URL. Left for the
    server's end (a private server goes with its directory; on a shared one they are small)."""
    name = f"walletd_test_{os.getpid()}_{next(DATABASES)}"
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}"')
        db.execute(f'CREATE DATABASE "{name}"')
    return with_database(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    name = urlsplit(url).path.strip("/")
    assert name.startswith("walletd_test_"), f"refusing to drop {name!r}: not a test database"
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
