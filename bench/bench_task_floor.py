"""Prefect's own cost per task run, measured here: what one task run per sample cannot go below.

Runs ``--tasks`` async task runs in one flow, 256 at a time, on the temporary server ``geodistil
run`` starts (``flows.server``, its settings), and prints the CPU per task run in the flow process
and on the server, counted from the flow's start to its end (the server's own start and the
imports are fixed costs, printed apart: divide them by a run's samples). The task bodies do
nothing but sleep ``--latency``; the sides differ only in what Prefect does around them:

- ``no-op``: no cache, no persisted result (Prefect's floor as the issue tracker quotes it);
- ``as geodistil``: what geodistil's sample task asks of Prefect (a cache key, a persisted JSON
  result in a local folder, retries, a run name from the parameters), with a small record as result.

    python bench/bench_task_floor.py                # 2000 task runs per side
    python bench/bench_task_floor.py --latency 2    # 256 sleeping at a time, as at 2 s per request
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("no-op", "as geodistil")


def side(name: str, tasks: int, latency: float, in_flight: int) -> None:
    """One side in this process: prints one JSON line."""
    sys.path.insert(0, str(ROOT))
    import psutil

    from flows.generation import quiet_completed_task_runs, use_server_settings
    from flows.server import temporary_server

    use_server_settings()
    quiet_completed_task_runs()
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.filesystems import LocalFileSystem
    from prefect.serializers import JSONSerializer

    async def body(i: int) -> dict:
        await asyncio.sleep(latency)
        return {"name": f"trace_{i:05d}.json", "sample_index": i, "ok": True, "distance_km": 12.5}

    @flow(name="bench-task-floor")
    async def run(results: str) -> tuple[float, float]:
        if name == "no-op":
            sample = task(body, cache_policy=NO_CACHE, persist_result=False)
        else:
            storage = LocalFileSystem(basepath=results)
            await storage.save("bench-task-floor", overwrite=True)
            sample = task(body, name="sample", task_run_name="sample-{i}", retries=2, retry_delay_seconds=[2, 10],
                          cache_key_fn=lambda _, p: f"bench-{p['i']:06d}", persist_result=True,
                          result_storage=storage, result_serializer=JSONSerializer(), cache_result_in_memory=False)
        limit = asyncio.Semaphore(in_flight)

        async def one(i: int) -> None:
            async with limit:
                await (await sample(i, return_state=True)).result()

        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.gather(*(one(i) for i in range(tasks)))
        return time.process_time() - cpu, time.monotonic() - wall

    with tempfile.TemporaryDirectory() as results, temporary_server():
        server = psutil.Process().children()[0]
        server_start = sum(server.cpu_times()[:2])
        flow_start = time.process_time()  # this process so far: imports, the server's start-up wait
        flow_cpu, wall = asyncio.run(run(results))
        time.sleep(2)  # the server records the last events after the flow has ended
        server_cpu = sum(server.cpu_times()[:2]) - server_start
    print(json.dumps({"side": name, "flow_ms": flow_cpu * 1000 / tasks, "server_ms": server_cpu * 1000 / tasks,
                      "wall": wall, "fixed_flow_s": flow_start, "fixed_server_s": server_start}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each task body sleeps")
    parser.add_argument("--in-flight", type=int, default=256)
    args = parser.parse_args()
    from bench_cost import migrated_home  # this folder's; imported here, not in the sides it measures

    rows = []
    with tempfile.TemporaryDirectory(prefix="geodistil-floor-") as home:
        migrated_home(Path(home))  # a fresh database's migrations are paid once per PREFECT_HOME, by no side
        env = {**os.environ, "PREFECT_HOME": home, "PREFECT_LOGGING_LEVEL": "WARNING"}
        env.pop("PREFECT_API_URL", None)
        for name in SIDES:
            out = subprocess.run([sys.executable, __file__, "--side", name, str(args.tasks), str(args.latency),
                                  str(args.in_flight)], env=env, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"\n{args.tasks} task runs, {args.in_flight} in flight, bodies sleep {args.latency:g} s; "
          "CPU ms per task run, from the flow's start to its end")
    print(f"{'side':14} {'flow':>6} {'server':>7} {'total':>6} {'wall s':>7}   fixed: flow process start, server start")
    for r in rows:
        print(f"{r['side']:14} {r['flow_ms']:6.2f} {r['server_ms']:7.2f} {r['flow_ms'] + r['server_ms']:6.2f} "
              f"{r['wall']:7.1f}   {r['fixed_flow_s']:.1f} CPU-s, {r['fixed_server_s']:.1f} CPU-s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        side(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
