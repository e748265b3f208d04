"""Living with the teacher's limits: the client before the admission controller and after it, side by side.

    python bench/bench_limits.py [--samples 100] [--rpm 600] [--concurrency 16] [--baseline fdcecad]

Two scenarios against the simulated teacher (its own process, this tree's code), each run by
both clients in turn, one after the other:

- ``announced``: the sim takes ``--rpm`` requests a minute and says so in OpenAI's headers;
- ``storm``: the same limit, unannounced, so an unpaced client is refused most of the time.

The old client is ``--baseline`` (default: the last commit before the controller), checked
out in a temporary git worktree and run with that tree first on the path; the new one is
this tree. Printed per scenario and client: requests sent per useful reply (the sim's count
of requests over its 200 answers), the share answered 429, wall time, and the time the
limit allows (useful replies at ``--rpm``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from geodistil.sim.demo_data import make_demo_dataset
from geodistil.sim.server import SIM_MODEL, SimConfig, SimServer

ROOT = Path(__file__).resolve().parent.parent

# run in a child process whose path starts with the client's tree; prints the wall time
CLIENT = """
import asyncio, json, sys, time
from geodistil.config import GenerationConfig, RolloutSettings, TeacherConfig
from geodistil.data import DatasetSpec
from geodistil.generate import generate
from geodistil.store import SampleRange, StorageSpec
base_url, data, out, n, concurrency = sys.argv[1:6]
settings = RolloutSettings(
    teacher=TeacherConfig(base_url=base_url, model="%s", timeout_s=30, backoff_base_s=0.5, backoff_max_s=10),
    generation=GenerationConfig(max_concurrency=int(concurrency)))
start = time.monotonic()
summary = asyncio.run(generate(DatasetSpec(path=data), StorageSpec(url=out), settings, SampleRange(num_samples=int(n))))
print(json.dumps({"wall_s": time.monotonic() - start, "failed": summary["failed"]}))
""" % SIM_MODEL


def run_client(tree: Path, base_url: str, data: str, samples: int, concurrency: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", CLIENT, base_url, data, out, str(samples), str(concurrency)],
                              capture_output=True, text=True, env=env, cwd=tree, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def scenario(name: str, config: SimConfig, trees: dict[str, Path], data: str, args: argparse.Namespace) -> None:
    for label, tree in trees.items():
        with SimServer(config, subprocess=True) as sim:
            result = run_client(tree, sim.base_url, data, args.samples, args.concurrency)
            stats = sim.stats()
        allowed_s = stats["ok"] / (args.rpm / 60)
        print(f"{name:10} {label:4} requests/useful {stats['requests'] / max(1, stats['ok']):5.2f}  "
              f"429 {stats['429'] / max(1, stats['requests']):6.1%}  wall {result['wall_s']:6.1f} s  "
              f"limit allows {allowed_s:6.1f} s  failed {result['failed']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--rpm", type=float, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--baseline", default="fdcecad", help="git revision of the old client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "data")
        make_demo_dataset(data, n=args.samples, seed=0)
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.baseline],
                       check=True, capture_output=True)
        try:
            trees = {"old": old, "new": ROOT}
            common = dict(port=0, tool_calls=1, latency=0.05, rpm_limit=args.rpm)
            scenario("announced", SimConfig(**common), trees, data, args)
            scenario("storm", SimConfig(**common, announce_limits=False), trees, data, args)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"bench done in {time.monotonic() - start:.0f} s")
