"""A real PostgreSQL for tests (Debian's ``postgresql`` package), and a Prefect server on it.

The cluster is private to the test: ``initdb`` into a fresh temporary directory, ``trust`` auth on
loopback only, a free TCP port and the unix socket inside that directory. PostgreSQL refuses to run
as root, so when the tests run as root every PostgreSQL command runs as the ``postgres`` system user
(``runuser``). The server runs in its own process group, stopped with a fast shutdown at the end
and killed if it does not stop; nothing of it outlives the context.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.prefect_server import prefect_server

DATABASE = "prefect"
ROLE = "prefect"

# Prefect's batched recorders (settings of prefect 3.9.1; see docs/deployment.md): the task-run
# recorder and the event persister read and insert up to 100 rows per transaction instead of one,
# flushing at least every 5 s. Prefect reads the flush interval as whole seconds.
BATCHED_SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "5",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "5",
}


def postgres_bin() -> Path | None:
    """The directory of ``initdb`` and ``postgres``: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


def skip_without_postgres() -> Path:
    """The binary directory, or skip the test with the reason (CI installs the package, so it runs there)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run installs it)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no `postgres` system user to run PostgreSQL as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root without `runuser` to run PostgreSQL as the `postgres` user")
    return bindir


@dataclasses.dataclass(frozen=True)
class Postgres:
    port: int
    socket_dir: Path
    data_dir: Path
    pid: int  # the postmaster's
    bindir: Path

    def url(self, user: str = ROLE, database: str = DATABASE, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{user}@127.0.0.1:{self.port}/{database}"

    def query(self, sql: str, user: str = ROLE, database: str = DATABASE) -> str:
        """One SQL statement through psql over loopback TCP; its rows, unaligned."""
        result = subprocess.run([str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", user,
                                 "-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
                                check=False, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"psql: {result.stderr.strip()}")
        return result.stdout.strip()


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(_as_postgres(argv), check=False, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}")


def _private_dir() -> Path:
    """A fresh directory the user PostgreSQL runs as can write (pytest's tmp_path is root's, mode 0700)."""
    base = Path(tempfile.mkdtemp(prefix="geodistil-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
        if subprocess.run(_as_postgres(["test", "-w", str(base)]), check=False).returncode != 0:
            shutil.rmtree(base, ignore_errors=True)
            raise RuntimeError(f"the postgres user cannot reach {base}: set TMPDIR to a directory it can traverse")
    return base


@contextlib.contextmanager
def postgres(startup_timeout: float = 60.0) -> Iterator[Postgres]:
    """Start a private cluster with a ``prefect`` role owning a ``prefect`` database; stop and delete it after."""
    bindir = skip_without_postgres()
    base = _private_dir()
    data, sockets = base / "data", base / "sockets"
    port = free_port()
    try:
        _run(["mkdir", str(sockets)], "mkdir")
        _run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=trust",
              "-E", "UTF8", "--locale=C.UTF-8"], "initdb")
        with open(base / "postgres.log", "wb") as log:
            proc = subprocess.Popen(
                _as_postgres([str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
                              "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_ready(bindir, proc, sockets, port, base / "postgres.log", startup_timeout)
            psql = [str(bindir / "psql"), "-h", str(sockets), "-p", str(port), "-U", "postgres",
                    "-v", "ON_ERROR_STOP=1"]
            # the statements of docs/deployment.md: a plain role (no superuser) owning its database
            _run([*psql, "-c", f"CREATE ROLE {ROLE} LOGIN"], "create role")
            _run([*psql, "-c", f"CREATE DATABASE {DATABASE} OWNER {ROLE}"], "create database")
            pid = int((data / "postmaster.pid").read_text().split()[0])
            yield Postgres(port=port, socket_dir=sockets, data_dir=data, pid=pid, bindir=bindir)
        finally:
            _stop(proc)
            _reap(data)
    finally:
        # the cluster's files belong to the postgres user; root may delete them
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(bindir: Path, proc: subprocess.Popen, sockets: Path, port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited ({proc.returncode}): {log.read_text(errors='replace')[-3000:]}")
        ready = subprocess.run([str(bindir / "pg_isready"), "-q", "-h", str(sockets), "-p", str(port)], check=False)
        if ready.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"postgres did not start: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Fast shutdown (SIGINT: roll back open transactions, disconnect clients), then SIGKILL to the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def processes_of(pg: Postgres) -> list[int]:
    """Ids of the cluster's running processes."""
    return _processes_in(pg.data_dir)


def _processes_in(data_dir: Path) -> list[int]:
    """PostgreSQL runs every process of a cluster in its data directory, and puts each backend in a
    session of its own: the working directory tells them, not the process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(entry / "cwd").removesuffix(" (deleted)")) == data_dir:
                    found.append(int(entry.name))
    return found


def _reap(data_dir: Path, timeout: float = 30) -> None:
    """Wait for the backends to notice that the postmaster is gone; kill any that do not."""
    deadline = time.monotonic() + timeout
    while _processes_in(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _processes_in(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def server_settings(pg: Postgres) -> dict[str, str]:
    """The Prefect server's environment for this database: its connection URL and the batched recorders."""
    return {"PREFECT_API_DATABASE_CONNECTION_URL": pg.url(), **BATCHED_SERVER_SETTINGS}


@contextlib.contextmanager
def postgres_prefect_server(home: Path, **settings: str) -> Iterator[dict[str, str]]:
    """A Prefect server on a private PostgreSQL, with the batched recorder settings; yields a client env.

    ``settings`` are extra server environment variables (PREFECT_... = value), e.g. for a benchmark.
    """
    with postgres() as pg, prefect_server(home, server_env={**server_settings(pg), **settings}) as env:
        yield env
