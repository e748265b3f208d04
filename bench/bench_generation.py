"""Generation throughput: the Prefect flow at several concurrencies against a thread-pool baseline.

Runs the simulated teacher in its own process (latency per request, a fixed number of tool
calls so every conversation has the same number of turns), then for each concurrency runs
``geodistil run`` in a fresh process and measures wall time, the CPU seconds of that process
(and its children), split into the tools' own work (measured by replaying the traces: decoding,
the tools, hashing) and orchestration (the rest: Prefect, the client, request bodies, storage),
the separate Prefect server's CPU, and peak memory. The baseline is the old design:
the same rollouts driven by ``ThreadPoolExecutor(max_workers=8)`` with ordered collection.
At the ``--plain`` concurrencies the same rollouts also run through ``geodistil.generate``
(plain asyncio, no Prefect), so the table shows what Prefect's task runs add.

    python bench/bench_generation.py                       # 1000 samples, 2 s latency, c=8,64,256,1024
    python bench/bench_generation.py --only-scale --scale-samples 100000 --tool-calls 0  # scale: throughput, memory, history

Ideal time = turns x latency x ceil(samples / concurrency). Figures are printed side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geodistil.sim import SimConfig, SimServer  # noqa: E402
from geodistil.sim.net import free_port, stop_process, wait_http  # noqa: E402


def make_dataset(path: Path, n: int, unique: int = 1000) -> str:
    """A demo dataset of ``n`` rows; beyond ``unique`` rows the scenes repeat (orchestration is what we measure)."""
    import datasets

    from geodistil.sim.demo_data import make_demo_dataset

    base = path.parent / f"{path.name}-base{min(n, unique)}"
    if not base.exists():
        make_demo_dataset(str(base), n=min(n, unique), seed=0)
    if n <= unique:
        return str(base)
    if not path.exists():
        ds = datasets.load_from_disk(str(base))
        repeats = math.ceil(n / len(ds))
        datasets.concatenate_datasets([ds] * repeats).select(range(n)).save_to_disk(str(path))
    return str(path)


def start_sim(latency: float, tool_calls: int) -> SimServer:
    """The simulated teacher in its own process, so its CPU is not the measured run's."""
    return SimServer(SimConfig(port=0, latency=latency, tool_calls=tool_calls, seed=0), subprocess=True).start()


class PrefectServer:
    """A separate Prefect server, as a deployment has, with the settings the README recommends."""

    def __init__(self, home: Path) -> None:
        from flows.generation import SERVER_SETTINGS

        self.port = free_port()
        self.env = {**os.environ, **SERVER_SETTINGS, "PREFECT_HOME": str(home),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        self.proc = subprocess.Popen(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}/api"
        wait_http(self.url + "/health", timeout=120, process=self.proc)

    def cpu_seconds(self) -> float:
        """User + system CPU so far of the server process and its reaped children (Linux ``/proc``)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)


def run_flow(dataset: str, out: Path, sim: SimServer, concurrency: int, samples: int, server: PrefectServer | None,
             home: Path) -> dict:
    """``geodistil run`` in a child process; with no ``server`` it starts Prefect's embedded one,
    whose CPU then counts as the run's (a reaped child)."""
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING"}
    if server:
        env["PREFECT_API_URL"] = server.url
    else:
        env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "geodistil.cli", "run", "--dataset", dataset, "--output", str(out),
           "--base-url", sim.base_url, "--num-samples", str(samples), "--max-concurrency", str(concurrency),
           "--max-turns", "6", "--timeout", "600"]
    server_cpu0 = server.cpu_seconds() if server else 0.0
    measured = measure(cmd, env, "geodistil run")
    if server:
        time.sleep(2)  # the server records the last events after the run has ended
        measured["server_cpu"] = server.cpu_seconds() - server_cpu0
    return {**measured, "summary": json.loads((out / "summary.json").read_text())}


def measure(cmd: list[str], env: dict[str, str] | None, what: str) -> dict:
    """Run ``cmd`` to the end: its wall time, the child's own CPU seconds, and its peak memory.

    ``peak_mb`` is the peak of the child's anonymous memory (heap, images), sampled; ``peak_rss_mb``
    also counts the pages of the memory-mapped dataset it has read, which the kernel reclaims
    at will, so it grows with the samples read and says little about what the run holds."""
    import threading

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_anon_kb = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_anon_kb
        while not done.wait(0.25):
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                return
            anon = next((line.split()[1] for line in status.splitlines() if line.startswith("RssAnon:")), "0")
            peak_anon_kb = max(peak_anon_kb, int(anon))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{what} exited {code}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_mb": peak_anon_kb / 1024,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def tools_cpu(out: Path, work: Path) -> float:
    """CPU seconds that rebuilding every image of the traces in ``out`` takes (decoding, the tools,
    hashing): the tools' own work, the same for any driver. A run's CPU beyond it is orchestration.

    ``geodistil replay`` of all traces, less a replay of one of them (the process's start-up)."""
    one = work / f"{out.name}-one"
    one.mkdir(exist_ok=True)
    traces = sorted(out.glob("trace_*.json"))
    # one that runs model code, if any does, so the sandbox's start-up is subtracted too
    shutil.copy(next((t for t in traces if "python_code_tool" in t.read_text()), traces[0]), one)
    replay = [sys.executable, "-m", "geodistil.cli", "replay"]
    return measure([*replay, str(out)], None, "geodistil replay")["cpu"] - measure(
        [*replay, str(one)], None, "geodistil replay")["cpu"]


def run_child(function: str, *args: object) -> dict:
    """``function`` of this module with ``args`` in a fresh process, measured like ``geodistil run``."""
    driver = f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import bench_generation as b; b.{function}(*sys.argv[1:])"
    return measure([sys.executable, "-c", driver, *map(str, args)], None, function)


def plain(dataset: str, out: str, url: str, concurrency: str, samples: str) -> None:
    """The same rollouts through ``geodistil.generate`` (asyncio, no Prefect): what Prefect adds."""
    from geodistil.config import GenerationConfig, RolloutSettings, TeacherConfig
    from geodistil.data import DatasetSpec
    from geodistil.generate import generate
    from geodistil.store import SampleRange, StorageSpec

    settings = RolloutSettings(teacher=TeacherConfig(base_url=url, timeout_s=600),
                               generation=GenerationConfig(max_turns=6, max_concurrency=int(concurrency)))
    asyncio.run(generate(DatasetSpec(path=dataset), StorageSpec(url=out), settings,
                         SampleRange(num_samples=int(samples))))


def baseline(dataset: str, out: str, url: str, samples: str) -> None:
    """The old design: 8 threads, each with its own client and loop, results collected in order."""
    import threading

    from geodistil.config import GenerationConfig, RolloutSettings, TeacherConfig
    from geodistil.data import DatasetSpec, open_dataset
    from geodistil.generate import run_one
    from geodistil.rollout import RolloutContext
    from geodistil.store import TraceStore

    settings = RolloutSettings(teacher=TeacherConfig(base_url=url, timeout_s=600),
                               generation=GenerationConfig(max_turns=6, max_concurrency=8))
    ds = open_dataset(DatasetSpec(path=dataset))
    store = TraceStore(out)
    local = threading.local()
    opened: list[tuple[asyncio.AbstractEventLoop, RolloutContext]] = []

    def one(index: int):
        if not hasattr(local, "loop"):  # one client per thread, as the old design had
            local.loop = asyncio.new_event_loop()
            local.ctx = RolloutContext.create(settings, max_connections=1)
            opened.append((local.loop, local.ctx))
        return local.loop.run_until_complete(run_one(ds, index, 0, local.ctx, store))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(int(samples))))  # ordered collection
    for loop, ctx in opened:
        loop.run_until_complete(ctx.close())
        loop.close()


def latency_runs(args: argparse.Namespace, dataset: str, turns: int, server: PrefectServer | None,
                 work: Path) -> None:
    """Baseline, then the flow at each concurrency, against a teacher with ``--latency``."""
    rows = []
    plain = {int(x) for x in args.plain.split(",") if x}
    sim = start_sim(args.latency, args.tool_calls)
    try:
        base_n = args.baseline_samples or args.samples
        requests0 = sim.stats()["requests"]
        base = run_child("baseline", dataset, work / "baseline", sim.base_url, base_n)
        # per-sample baseline time, scaled to --samples if the baseline ran fewer
        base_wall = base["wall"] * args.samples / base_n
        rows.append(dict(name="baseline threads=8", **base, ideal=turns * args.latency * math.ceil(base_n / 8),
                         sample_turns=sim.stats()["requests"] - requests0,
                         tools_cpu=tools_cpu(work / "baseline", work)))
        for c in (int(x) for x in args.concurrency.split(",")):
            ideal = turns * args.latency * math.ceil(args.samples / c)
            requests0 = sim.stats()["requests"]
            r = run_flow(dataset, work / f"flow-c{c}", sim, c, args.samples, server, work / "prefect-home")
            sample_turns = sim.stats()["requests"] - requests0
            tools = tools_cpu(work / f"flow-c{c}", work)
            rows.append(dict(name=f"flow c={c}", **r, ideal=ideal, sample_turns=sample_turns, tools_cpu=tools,
                             speedup=base_wall / r["wall"]))
            if c in plain:
                p = run_child("plain", dataset, work / f"plain-c{c}", sim.base_url, c, args.samples)
                rows.append(dict(name=f"  no Prefect c={c}", **p, ideal=ideal, sample_turns=sample_turns,
                                 tools_cpu=tools, speedup=base_wall / p["wall"]))
    finally:
        sim.stop()
    api = "separate server" if server else "embedded server (its CPU is counted in the run's)"
    print(f"\n{args.samples} samples, {turns} turns each, latency {args.latency}s, Prefect API: {api}")
    print("CPU ms per sample-turn: run = the generating process (and its children), of which tools = the "
          "tools' own work (a replay's), orch = the rest; server = the separate Prefect server")
    print("peak MB: the generating process's anonymous memory (heap, images in flight)")
    print(f"{'run':22} {'wall s':>7} {'ideal s':>7} {'wall/ideal':>10} {'run':>7} {'tools':>7} {'orch':>7} "
          f"{'server':>7} {'peak MB':>8} {'x baseline':>10}")
    for row in rows:
        per_turn = 1000 / row["sample_turns"]
        server_cpu = f"{row['server_cpu'] * per_turn:.2f}" if "server_cpu" in row else "-"
        peak = f"{row['peak_mb']:.0f}" if "peak_mb" in row else "-"
        speedup = f"{row['speedup']:.1f}" if "speedup" in row else "-"
        print(f"{row['name']:22} {row['wall']:7.1f} {row['ideal']:7.1f} {row['wall'] / row['ideal']:10.2f} "
              f"{row['cpu'] * per_turn:7.2f} {row['tools_cpu'] * per_turn:7.2f} "
              f"{(row['cpu'] - row['tools_cpu']) * per_turn:7.2f} {server_cpu:>7} {peak:>8} {speedup:>10}")


def scale_run(args: argparse.Namespace, cache: Path, server: PrefectServer | None, work: Path) -> None:
    """Many samples at near-zero latency: orchestration throughput, memory, and the run's history."""
    dataset = make_dataset(cache / f"demo{args.scale_samples}", args.scale_samples)
    sim = start_sim(0.0, args.tool_calls)
    history0 = history(server)
    try:
        r = run_flow(dataset, work / "scale", sim, 256, args.scale_samples, server, work / "prefect-home")
    finally:
        sim.stop()
    server_cpu = f", server CPU {r['server_cpu']:.0f}s" if "server_cpu" in r else ""
    print(f"\nscale: {args.scale_samples} samples x {args.tool_calls + 1} turns at ~0 latency: {r['wall']:.0f}s, "
          f"{args.scale_samples / r['wall']:.1f} samples/s, CPU {r['cpu']:.0f}s{server_cpu}, "
          f"peak anonymous memory {r['peak_mb']:.0f} MB (peak RSS with the dataset's mapped pages "
          f"{r['peak_rss_mb']:.0f} MB), {r['summary']['total']} traces, {r['summary']['success']} ok")
    if server:
        flow_runs, task_runs, completed = (after - before for after, before in zip(history(server), history0))
        print(f"history in the UI: {flow_runs} flow runs, {task_runs} task runs, {completed} of them Completed")


def history(server: PrefectServer | None) -> tuple[int, int, int]:
    """Flow runs, task runs and Completed task runs the server holds."""
    if server is None:
        return 0, 0, 0
    count = lambda what, body: httpx.post(f"{server.url}/{what}/count", json=body, timeout=60).json()  # noqa: E731
    return (count("flow_runs", {}), count("task_runs", {}),
            count("task_runs", {"task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--tool-calls", type=int, default=2, help="tool calls per conversation (turns = this + 1)")
    parser.add_argument("--concurrency", default="8,64,256,1024")
    parser.add_argument("--baseline-samples", type=int, default=None, help="default: --samples")
    parser.add_argument("--plain", default="256",
                        help="concurrencies at which to also run the plain asyncio driver (no Prefect), e.g. 256")
    parser.add_argument("--scale-samples", type=int, default=0, help="also run this many at near-zero latency")
    parser.add_argument("--only-scale", action="store_true", help="skip the latency runs and the baseline")
    parser.add_argument("--ephemeral", action="store_true",
                        help="no separate server: each run starts Prefect's embedded one, as `geodistil run` does")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="geodistil-bench-"))
    cache = ROOT / "bench" / ".cache"
    cache.mkdir(exist_ok=True)
    server = None if args.ephemeral else PrefectServer(work / "prefect-home")
    try:
        if not args.only_scale:
            dataset = make_dataset(cache / f"demo{args.samples}", args.samples)
            latency_runs(args, dataset, args.tool_calls + 1, server, work)
        if args.scale_samples:
            scale_run(args, cache, server, work)
    finally:
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
