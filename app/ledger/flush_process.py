"""The one `walletd flush` process beside serve's HTTP worker(s), supervised.

It moves every worker's bookings to the ledger store and runs the StarGame
reconciler. If it died and stayed dead, the workers would go on booking (with
several workers their /healthz cannot see it; with one, /healthz is 503 while it
is down) until every partition's backlog is full, and writeBets
answered 'fail' whose booking landed would never be reversed. So serve restarts
it, with a logged reason and doubling delays (a crash loop is not a busy loop),
until serve stops it.
"""

from __future__ import annotations

import logging
import subprocess
import threading

from app import spawn
from app.redis_server import die_with_parent_preexec
from app.supervision import end, keep_running

log = logging.getLogger("walletd.serve")

# It stops between flusher rounds; past this it is killed.
STOP_TIMEOUT_S = 30.0


class FlushProcess:
    def __init__(self, reconcile_only: bool = False) -> None:
        # flusher.enabled = false: the child runs the StarGame reconciler alone.
        self.reconcile_only = reconcile_only
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # between stop() and a restart
        self.supervisor: threading.Thread | None = None

    def start(self) -> None:
        assert self.process is None, "start() once"
        self.process = self.launch()
        self.supervisor = threading.Thread(target=self.watch, name="flush-supervisor", daemon=True)
        self.supervisor.start()

    def launch(self) -> subprocess.Popen[bytes]:
        # Own session: serve stops it (SIGTERM) after the workers, not a Ctrl-C; and it
        # gets SIGTERM if serve itself dies, so no orphan flusher outlives it. The same
        # `app` as serve's, whatever folder serve was started from (app/spawn.py).
        options = ["--reconcile-only"] if self.reconcile_only else []
        return subprocess.Popen(spawn.command("app.cli", "flush", *options), env=spawn.environment(),
                                start_new_session=True,
                                preexec_fn=die_with_parent_preexec())  # noqa: PLW1509 - see redis_server

    def watch(self) -> None:
        keep_running(log, "the flusher process", "restarting it", self.running, self.relaunch, self.stopping)

    def alive(self) -> bool:
        """False while it is dead and not yet restarted (or serve is stopping)."""
        process = self.process
        return process is not None and process.poll() is None and not self.stopping.is_set()

    def running(self) -> subprocess.Popen[bytes]:
        assert self.process is not None
        return self.process

    def relaunch(self) -> None:
        with self.lock:
            if not self.stopping.is_set():
                self.process = self.launch()

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            process = self.process
        end(process, STOP_TIMEOUT_S)
        if self.supervisor is not None:
            self.supervisor.join(STOP_TIMEOUT_S)
