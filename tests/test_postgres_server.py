"""The production setup of docs/deployment.md: a Prefect server on PostgreSQL, with the batched
recorders, running a deployment end to end (work pool, `prefect deploy`, a process worker, a run
created as the UI's Run button creates it); and a private cluster that leaves no process behind."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import StateType

from geodistil.store import TraceStore
from tests.helpers import free_port
from tests.postgres import postgres, processes_of, server_settings
from tests.prefect_server import prefect_cli, prefect_server, stop
from tests.test_deployments import POOL, REPO, demo_parameters, run_from_ui, sim_at, wait_final

pytestmark = pytest.mark.slow

N = 12


def test_a_deployment_run_from_the_ui_on_a_postgres_server_writes_ordered_traces_and_records_every_task_run(
        tmp_path):
    from geodistil.sim.demo_data import make_demo_dataset

    dataset = make_demo_dataset(str(tmp_path / "demo"), n=N, seed=5)
    out = tmp_path / "traces"
    home = tmp_path / "prefect-home"
    with postgres() as pg, prefect_server(home, server_env=server_settings(pg)) as env:
        pool = prefect_cli(env, "work-pool", "create", POOL, "--type", "process", "--overwrite", cwd=REPO)
        assert pool.returncode == 0, pool.stdout + pool.stderr
        deploy = prefect_cli(env, "--no-prompt", "deploy", "--name", "generate", cwd=REPO)
        assert deploy.returncode == 0, deploy.stdout[-5000:] + deploy.stderr[-5000:]
        worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
        with open(tmp_path / "worker.log", "wb") as log, sim_at(free_port()) as url:
            worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
                                      env=worker_env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            try:
                with SyncPrefectClient(env["PREFECT_API_URL"]) as client:
                    run = run_from_ui(client, "geodistil-generate/generate", demo_parameters(dataset, str(out), url, N))
                    final = wait_final(client, run.id)
                    assert final.state.type == StateType.COMPLETED, final.state
            finally:
                stop(worker)
        # every sample is its own task run, written to PostgreSQL by the batched recorder (within a flush)
        sample_runs = "SELECT count(*) FROM task_run WHERE name LIKE 'sample-%' AND state_type = 'COMPLETED'"
        deadline = time.monotonic() + 60
        while pg.query(sample_runs) != str(N) and time.monotonic() < deadline:
            time.sleep(1)
        assert pg.query(sample_runs) == str(N)
        assert pg.query(f"SELECT state_type FROM flow_run WHERE id = '{run.id}'") == "COMPLETED"
        assert not (home / "prefect.db").exists()  # the server never fell back to SQLite
    store = TraceStore(str(out))
    assert store.trace_names() == [f"trace_{i:05d}.json" for i in range(N)]
    assert store.read_json("summary.json")["total"] == N
    assert all(t.ok for _, t in store.iter_traces())
    assert processes_of(pg) == []


def test_the_cluster_stops_with_its_context_even_when_the_test_fails_inside_it():
    with pytest.raises(RuntimeError, match="inside"), postgres() as pg:
        assert pg.query("SELECT 1") == "1"
        assert pg.pid in processes_of(pg) and len(processes_of(pg)) > 1  # the postmaster and its helpers
        raise RuntimeError("a failure inside the context")
    assert processes_of(pg) == []
    assert not pg.data_dir.exists()
