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

from geodistil.errors import ConfigError

# Prefect's server records task runs from their state events one event per database write by
# default; a run of thousands of task runs then costs the server more CPU than the rollouts
# cost the flow. Batched writes (visible in the UI within a second) cut that by about half.
# Applied to the temporary server ``geodistil run`` starts; a separate server takes the same
# environment variables (README, "Large runs").
SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "500",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
}

# The temporary server serves one run and no UI: of the services an ephemeral server runs, the
# automations' triggers have nothing to act on (the environment may still turn them on).
TEMPORARY_SERVER_SETTINGS = {
    **SERVER_SETTINGS,
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    # nor has the event feed a reader: the server goes with the run. Task and flow runs, their
    # states and logs are recorded as ever (the task run recorder reads the same events); only
    # the events' own rows are not written, about a third of the server's work per task run
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    # the telemetry heartbeat writes to SQLite beside the run's own writes and prints a
    # "database is locked" traceback into the user's terminal; a throwaway server needs none
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}

_PR_SET_PDEATHSIG = 1
DRAIN_TIMEOUT_S = 30.0


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


class _Started:
    """A server process started and the API URL it will answer at."""

    def __init__(self) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        for name, value in TEMPORARY_SERVER_SETTINGS.items():
            env.setdefault(name, value)
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"],
            env=env, preexec_fn=_die_with_parent())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_early: _Started | None = None


def start_early() -> None:
    """Start the temporary server now, without importing Prefect, unless ``PREFECT_API_URL`` is in
    the environment: it then starts while the command imports, reads the dataset and asks the
    teacher, and ``temporary_server`` takes it over (two cores, each busy, instead of one after
    the other). Call it from the thread that will run the flow; ``discard_early`` when the run
    will not need it after all (a Prefect profile names an API)."""
    global _early
    if _early is None and not os.environ.get("PREFECT_API_URL"):
        _early = _Started()


def discard_early() -> None:
    global _early
    if _early is not None:
        _early.stop()
        _early = None


@contextlib.contextmanager
def temporary_server() -> Iterator[str]:
    """Start the server (or take over the one ``start_early`` started), point this process's
    Prefect settings at it, yield its API URL, stop it.

    Start it from the thread that runs the flow to the end (the CLI's main thread): the
    parent-death signal fires when the *thread* that started the server ends.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    global _early
    server, _early = (_early if _early is not None and _early.process.poll() is None else None) or _Started(), None
    try:
        _wait_healthy(server.process, server.url, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        with temporary_settings({PREFECT_API_URL: server.url}):
            try:
                yield server.url
            finally:
                drain_services()
    finally:
        server.stop()


def drain_services() -> None:
    """Send the logs and events this process still queues while the server is there to take them
    (else Prefect prints "Error logging to API" after the run). Call it where the settings point
    at that server: outside, it would start an ephemeral one. Events still unsent after
    ``DRAIN_TIMEOUT_S`` are given up (an events worker left pointing at a server that is gone
    would otherwise hold this process forever)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):  # the log worker never started
        APILogWorker.instance().drain()
    EventsWorker.drain_all(timeout=DRAIN_TIMEOUT_S)


def _wait_healthy(server: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    # one client for every poll: each new one builds an SSL context (CA certificates and all), which
    # cost the run more CPU than anything else while the server starts, and took it from the server
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                from prefect.settings import PREFECT_HOME

                raise ConfigError(f"the temporary Prefect server exited with code {server.returncode}; check that "
                                  f"PREFECT_HOME ({PREFECT_HOME.value()}) is writable, or set PREFECT_API_URL")
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise ConfigError(f"the temporary Prefect server did not answer at {url} within {timeout_s:.0f} s")
