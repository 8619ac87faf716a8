"""Keeping a child process of serve alive (the embedded redis-server, the flush
process) and stopping it: one restart loop and one stop, shared by both."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable

# Restarts after a child dies: doubling delays bound a crash loop's restart rate
# (a crash loop is not a busy loop); a child that ran this long resets them.
RESTART_DELAY_MIN_S = 0.1
RESTART_DELAY_MAX_S = 30.0
RESTART_HEALTHY_S = 60.0


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def keep_running(log: logging.Logger, what: str, restarting: str, current: Callable[[], subprocess.Popen[bytes]],
                 relaunch: Callable[[], None], stopping: threading.Event) -> None:
    """Wait for the current child; when it dies (and stopping is not set), log why and
    relaunch it after a backoff delay. Returns once stopping is set."""
    delay_s = RESTART_DELAY_MIN_S
    while not stopping.is_set():
        process = current()
        started_s = time.monotonic()
        code = process.wait()
        if stopping.is_set():
            return
        if time.monotonic() - started_s > RESTART_HEALTHY_S:
            delay_s = RESTART_DELAY_MIN_S  # it had run fine: not a crash loop
        log.error("%s (pid %d) %s; %s in %.1f s", what, process.pid, describe_exit(code), restarting, delay_s)
        if stopping.wait(delay_s):
            return
        delay_s = min(delay_s * 2, RESTART_DELAY_MAX_S)
        try:
            relaunch()
        except (OSError, RuntimeError) as exc:  # the next wait() returns at once: retried with backoff
            if not stopping.is_set():  # (stop() ends a restart in progress: no news)
                log.error("%s did not restart: %s", what, exc)


def end(process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if it is still there after timeout_s."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
