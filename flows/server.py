"""The temporary Prefect server ``geodistil run`` starts for itself, and that dies with it.

Without ``PREFECT_API_URL``, Prefect starts a temporary server as a plain child process and
stops it at exit; a run killed with SIGKILL never gets there, and the server lives on,
holding its port and the database. This starts the same server app (uvicorn over Prefect's
``create_app``, configured as Prefect's temporary server is) with a parent-death signal
(Linux ``prctl(PR_SET_PDEATHSIG)``): the kernel kills it when the thread that started it
ends, however that ends. Each run takes a free port, so nothing an earlier run left behind
is in its way. Elsewhere than Linux the server is stopped at exit only, as Prefect's is.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
from prefect.settings import (
    PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings,
)

from geodistil.errors import ConfigError

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child die with this thread, or None where there is no prctl.

    libc is looked up here, in the parent: between fork and exec the child may only make the call.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def temporary_server() -> Iterator[str]:
    """Start the server, point this process's Prefect settings at it, yield its API URL, stop it.

    Start it from the thread that runs the flow to the end (the CLI's main thread): the
    parent-death signal fires when the *thread* that started the server ends.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    # the telemetry heartbeat writes to SQLite beside the run's own writes and prints a
    # "database is locked" traceback into the user's terminal; a throwaway server needs none
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
        env=env, preexec_fn=_die_with_parent())
    try:
        _wait_healthy(server, url, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        with temporary_settings({PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                drain_services()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def drain_services() -> None:
    """Send the logs and events this process still queues while the server is there to take them
    (else Prefect prints "Error logging to API" after the run). Call it where the settings point
    at that server: outside, it would start an ephemeral one."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):  # the log worker never started
        APILogWorker.instance().drain()
    EventsWorker.drain_all()


def _wait_healthy(server: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ConfigError(f"the temporary Prefect server exited with code {server.returncode}; check that "
                              f"PREFECT_HOME ({PREFECT_HOME.value()}) is writable, or set PREFECT_API_URL")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ConfigError(f"the temporary Prefect server did not answer at {url} within {timeout_s:.0f} s")
