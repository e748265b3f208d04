"""Scale-out figures: the local runner against ``runner="workers"`` with 1, 2 and 4 Prefect
process workers, on the same CPU-bound workload, side by side in one run.

The workload: the simulated teacher in its own process with near-zero latency and no tool calls
(one request per sample), so what is measured is geodistil's and Prefect's own CPU. Every
configuration runs against one separate Prefect server (SQLite under this bench's own
PREFECT_HOME, with the batched recorder settings), into a fresh trace store on local disk.
For each configuration the table gives wall time, samples per second, and samples per
CPU-second, where CPU is the user + system time of every process involved: the parent flow
run, the workers and the chunk flow runs they start, and the Prefect server (the simulated
teacher, a stand-in for someone else's server, is shown apart).

    python bench/bench_scale.py                        # 2000 samples; local, 1, 2 and 4 workers
    python bench/bench_scale.py --samples 200 --workers 1,2

The parent runs in a child process of this script (``--parent PARAMS``); the workers are
``prefect worker start --pool geodistil --limit 1``, started fresh for each configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from geodistil.sim.net import free_port, wait_http  # noqa: E402  (after the path: this checkout's)
POOL = "geodistil"


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, its live descendants, and the children it reaped."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def database_cpu(url: str | None) -> float:
    """CPU seconds of the PostgreSQL processes on this machine (the server's database), 0 without one."""
    if not url or not url.startswith("postgresql"):
        return 0.0
    total = 0.0
    for p in psutil.process_iter(["name", "cpu_times"]):
        if (p.info["name"] or "").startswith("postgres") and p.info["cpu_times"] is not None:
            t = p.info["cpu_times"]
            total += t.user + t.system
    return total


class Proc:
    """A long-lived helper process in its own session (stopped with everything it started)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def cpu(self) -> float:
        return tree_cpu(self.proc.pid)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.log.close()


def run_parent(params: dict, env: dict[str, str], log: Path) -> tuple[float, float]:
    """The generation flow in a child process; (wall seconds, CPU seconds of it and its children)."""
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--parent", json.dumps(params)], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    if status != 0:
        raise RuntimeError(f"the parent run failed; see {log}:\n{log.read_text()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def parent_main(params_json: str) -> None:
    from flows.generation import collect_less_often, run_generation
    from geodistil.config import GenerationConfig, TeacherConfig
    from geodistil.data import DatasetSpec
    from geodistil.store import SampleRange, StorageSpec

    p = json.loads(params_json)
    collect_less_often()  # as `geodistil run` does
    summary, failed = run_generation(
        dataset=DatasetSpec(path=p["dataset"]), storage=StorageSpec(url=p["out"]),
        samples=SampleRange(num_samples=p["samples"]), teacher=TeacherConfig(base_url=p["url"], model="geodistil-sim"),
        generation=GenerationConfig(max_concurrency=p["concurrency"], max_turns=2), chunk_size=p["chunk_size"],
        runner=p["runner"], parallel_chunks=p.get("parallel_chunks", 4))
    if failed or summary["total"] != p["samples"]:
        sys.exit(f"run failed: {failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts to run, comma-separated")
    parser.add_argument("--concurrency", type=int, default=64, help="per-sample tasks in flight per chunk")
    parser.add_argument("--latency", type=float, default=0.001, help="the simulated teacher's seconds per request")
    parser.add_argument("--chunks-per-worker", type=int, default=1)
    parser.add_argument("--database-url", help="the Prefect server's database, e.g. postgresql+asyncpg://prefect@"
                        "127.0.0.1:5432/prefect (docs/deployment.md); its postgres processes' CPU is counted")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--parent", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parent:
        return parent_main(args.parent)

    from flows.generation import SERVER_SETTINGS
    from geodistil.sim.demo_data import make_demo_dataset

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    home = tmp / "prefect-home"
    home.mkdir()
    dataset = make_demo_dataset(str(tmp / "data"), n=args.samples, seed=0)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    base_env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_CLI_PROMPT": "false"}
    base_env.pop("PREFECT_API_KEY", None)
    database = {"PREFECT_API_DATABASE_CONNECTION_URL": args.database_url} if args.database_url else {}
    server = Proc(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui",
                   "--analytics-off"], {**base_env, **SERVER_SETTINGS, **database}, tmp / "server.log")
    sim_port = free_port()
    sim = Proc([sys.executable, "-m", "geodistil.cli", "sim", "--host", "127.0.0.1", "--port", str(sim_port),
                "--latency", str(args.latency), "--tool-calls", "0", "--seed", "0"], base_env, tmp / "sim.log")
    env = {**base_env, "PREFECT_API_URL": api}
    rows = []
    try:
        wait_http(f"{api}/health", timeout=600)  # minutes on a loaded machine
        wait_http(f"http://127.0.0.1:{sim_port}/v1/models", timeout=120)
        for cmd in (["work-pool", "create", POOL, "--type", "process", "--overwrite"],
                    ["--no-prompt", "deploy", "--name", "generate-chunk"]):
            done = subprocess.run(["prefect", *cmd], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
        configs = [("local", 0)] + [("workers", int(n)) for n in args.workers.split(",") if n]
        for runner, n in configs:
            label = f"{runner} runner" if runner != "workers" else f"{n} worker{'s' * (n > 1)}"
            chunk_size = 1000 if runner != "workers" else math.ceil(args.samples / (n * args.chunks_per_worker))
            workers = [Proc([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--limit", "1",
                             "--name", f"bench-{runner}-{n}-{i}"],
                            {**env, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "2"},
                            tmp / f"worker-{n}-{i}.log", cwd=tmp) for i in range(n)]
            time.sleep(8 if workers else 0)  # the workers are up and polling before the clock starts
            before = (server.cpu() + database_cpu(args.database_url), sim.cpu(), sum(w.cpu() for w in workers))
            params = dict(dataset=dataset, out=str(tmp / f"out-{runner}-{n}"), samples=args.samples, url=(
                f"http://127.0.0.1:{sim_port}/v1"), concurrency=args.concurrency, chunk_size=chunk_size,
                runner=runner, parallel_chunks=max(1, n * args.chunks_per_worker))
            wall, parent_cpu = run_parent(params, env, tmp / f"parent-{runner}-{n}.log")
            time.sleep(2)  # the server records the last events after the run has ended
            server_cpu = server.cpu() + database_cpu(args.database_url) - before[0]
            sim_cpu = sim.cpu() - before[1]
            worker_cpu = sum(w.cpu() for w in workers) - before[2]
            for w in workers:
                w.stop()
            cpu = parent_cpu + worker_cpu + server_cpu
            rows.append((label, wall, args.samples / wall, args.samples / cpu, parent_cpu, worker_cpu, server_cpu,
                         sim_cpu))
            print(f"  {label}: {wall:.1f} s", file=sys.stderr, flush=True)
    finally:
        sim.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    where = "PostgreSQL" if args.database_url else "SQLite"
    print(f"\nPrefect server on {where} (its CPU counted with the server's); "
          f"{args.samples} samples, one request each (simulated teacher, {args.latency * 1000:g} ms latency), "
          f"{args.concurrency} tasks in flight per chunk, {os.cpu_count()} CPUs (load average "
          f"{os.getloadavg()[0]:.1f})")
    print(f"{'configuration':<14} {'wall s':>7} {'samples/s':>10} {'samples/CPU-s':>14} {'x local':>8} "
          f"{'parent CPU':>11} {'workers CPU':>12} {'server CPU':>11} {'(teacher CPU)':>14}")
    base = rows[0][2]
    for label, wall, rate, per_cpu, parent, workers, srv, sim_cpu in rows:
        print(f"{label:<14} {wall:>7.1f} {rate:>10.1f} {per_cpu:>14.2f} {rate / base:>8.2f} {parent:>11.1f} "
              f"{workers:>12.1f} {srv:>11.1f} {sim_cpu:>14.1f}")
    print("\nper-sample CPU ms: " + ", ".join(
        f"{label}: {1000 * (parent + workers) / args.samples:.1f} geodistil + {1000 * srv / args.samples:.1f} server"
        for label, _, _, _, parent, workers, srv, _ in rows))


if __name__ == "__main__":
    main()
