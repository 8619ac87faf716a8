"""The one `walletd flush` process beside serve's workers (server.workers > 1), supervised.

It moves every worker's bookings to the ledger store and runs the StarGame
reconciler. If it died and stayed dead, the workers would go on booking (their
/healthz cannot see it) until every partition's backlog is full, and writeBets
answered 'fail' whose booking landed would never be reversed. So serve restarts
it, with a logged reason and doubling delays (a crash loop is not a busy loop),
until serve stops it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

from app.redis_server import describe_exit, die_with_parent_preexec

log = logging.getLogger("walletd.serve")

# Restarts after it dies: doubling delays bound a crash loop's restart rate; a
# process that ran this long resets them.
RESTART_DELAY_MIN_S = 0.1
RESTART_DELAY_MAX_S = 30.0
RESTART_HEALTHY_S = 60.0
# It stops between flusher rounds; past this it is killed.
STOP_TIMEOUT_S = 30.0


class FlushProcess:
    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # between stop() and a restart
        self.supervisor: threading.Thread | None = None

    def start(self) -> None:
        assert self.process is None, "start() once"
        self.process = self.launch()
        self.supervisor = threading.Thread(target=self.watch, name="flush-supervisor", daemon=True)
        self.supervisor.start()

    @staticmethod
    def launch() -> subprocess.Popen:
        # Own session: serve stops it (SIGTERM) after the workers, not a Ctrl-C; and it
        # gets SIGTERM if serve itself dies, so no orphan flusher outlives it.
        return subprocess.Popen([sys.executable, "-m", "app.cli", "flush"], start_new_session=True,
                                preexec_fn=die_with_parent_preexec())  # noqa: PLW1509 - see redis_server

    def watch(self) -> None:
        delay_s = RESTART_DELAY_MIN_S
        while not self.stopping.is_set():
            process = self.process
            assert process is not None
            started_s = time.monotonic()
            code = process.wait()
            if self.stopping.is_set():
                return
            if time.monotonic() - started_s > RESTART_HEALTHY_S:
                delay_s = RESTART_DELAY_MIN_S
            log.error("the flusher process (pid %d) %s; restarting it in %.1f s",
                      process.pid, describe_exit(code), delay_s)
            if self.stopping.wait(delay_s):
                return
            delay_s = min(delay_s * 2, RESTART_DELAY_MAX_S)
            with self.lock:
                if self.stopping.is_set():
                    return
                try:
                    self.process = self.launch()
                except OSError as exc:  # the next wait() returns at once: retried with backoff
                    log.error("the flusher process did not restart: %s", exc)

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.supervisor is not None:
            self.supervisor.join(STOP_TIMEOUT_S)
