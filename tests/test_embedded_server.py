"""The temporary Prefect server of ``geodistil run`` stays on SQLite for the one-command demo, so it
runs without the telemetry heartbeat, whose writes beside the run's printed a ``database is
locked`` traceback into the demo's output (PostgreSQL is the setup for load: tests/test_postgres_server.py)."""

from __future__ import annotations

import os

import psutil
import pytest
from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

from flows.server import temporary_server


def server_process() -> psutil.Process:
    children = psutil.Process(os.getpid()).children(recursive=True)
    return next(c for c in children if "prefect.server.api.server:create_app" in " ".join(c.cmdline()))


@pytest.mark.slow  # a server start: a minute or two on a busy machine
def test_the_temporary_server_runs_without_analytics_when_the_user_has_not_asked_for_them(monkeypatch):
    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)  # tests/conftest.py sets it
    with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 300}), temporary_server():
        environ = server_process().environ()
    assert environ.get("PREFECT_SERVER_ANALYTICS_ENABLED") == "false"
