"""Cost per request, side by side: geodistil against a plain asyncio floor and curator (issue 16).

Every side runs the same workload in a fresh process against the same simulated teacher, which
runs in its own process (a fresh one per side, so its counters and first-request time are that
side's): the demo dataset, one image request per sample (no tool calls: ``--max-turns 1``, tools
off), ``--in-flight`` requests in flight.

- ``plain``: ``openai.AsyncOpenAI`` + asyncio, the dataset's JPEG sent as it is, one JSON line per
  answer: the floor any driver pays;
- ``prefect`` (with ``--sides ...,prefect``): the plain driver's request as one Prefect task run
  each (cache key, persisted JSON result, retries), on the same temporary server geodistil
  starts: the straightforward Prefect version of the plain driver (Prefect's bare cost per task
  run, without a request, is ``bench/bench_task_floor.py``'s);
- ``geodistil``: ``geodistil run`` with its default temporary (embedded) Prefect server;
- ``geodistil+server``: ``geodistil run`` against a separate ``prefect server start``;
- ``curator`` (with ``--curator``): bespokelabs-curator 0.1.31 in a virtual environment of its own
  under ``bench/.cache`` (pip installs it the first time; it is no dependency of geodistil).

Printed per side: wall time, wall/ideal (ideal = latency x ceil(samples / in flight)), requests/s,
CPU ms per request of every process of the side's process tree (the command and its children,
e.g. the embedded server; a separate server apart), and the time from the command's start to the
teacher's first request. The simulated teacher's own CPU is not counted.

    python bench/bench_cost.py --samples 200 --in-flight 64 --latency 2,0.05   # quick
    python bench/bench_cost.py --curator                                      # issue 16's 1000 x 256, both modes
    python bench/bench_cost.py --latency 0.05 --sides geodistil --profile     # where geodistil's time goes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's geodistil, flows and tasks
from geodistil.sim.net import free_port, wait_http  # noqa: E402  (after the path: this checkout's)
CACHE = ROOT / "bench" / ".cache"
CURATOR_VERSION = "0.1.31"
TICK = os.sysconf("SC_CLK_TCK")
PROMPT = "Where was this photo taken? Answer with \\boxed{latitude, longitude}."


def demo_dataset(n: int) -> str:
    from geodistil.sim.demo_data import make_demo_dataset

    path = CACHE / f"cost-demo{n}"
    if not path.exists():
        make_demo_dataset(str(path), n=n, seed=0)
    return str(path)


# ----- process CPU, from /proc -----

def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU s, CPU s of reaped children) of ``pid``, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, (int(fields[13]) + int(fields[14])) / TICK


def _name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    for key, label in (("uvicorn", "prefect server"), ("prefect server", "prefect server"),
                       ("geodistil.sandbox", "sandbox"), ("geodistil.cli", "geodistil process")):
        if key in text:
            return label
    return Path(argv[0].decode(errors="replace")).name if argv and argv[0] else "?"


def tree(root: int) -> list[int]:
    """``root`` and its live descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parents.setdefault(st[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


class TreeCPU:
    """CPU seconds of a process tree by process, sampled until ``stop`` (a process's last sample
    stands for it once it is gone; the root's total comes from ``wait4``, exact)."""

    def __init__(self, root: int, period: float = 0.2) -> None:
        self.root, self.period = root, period
        self.seen: dict[int, tuple[str, float]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.period):
            self.sample()

    def sample(self) -> None:
        for pid in tree(self.root):
            if (st := _stat(pid)) is not None:
                name = self.seen.get(pid, (None,))[0] or _name(pid)
                self.seen[pid] = (name, st[1] + st[2])

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def by_name(self, root_total: float, root_name: str) -> dict[str, float]:
        """CPU seconds by process kind; the root gets its exact total less its children's samples."""
        out: dict[str, float] = {}
        children = 0.0
        for pid, (name, cpu) in self.seen.items():
            if pid != self.root:
                out[name] = out.get(name, 0.0) + cpu
                children += cpu
        out[root_name] = max(0.0, root_total - children)
        return out


def tree_cpu_now(root: int) -> float:
    return sum(st[1] + st[2] for pid in tree(root) if (st := _stat(pid)) is not None)


# ----- the teacher and a separate Prefect server -----

def migrated_home(home: Path) -> Path:
    """``home`` as a PREFECT_HOME whose database is migrated already: a fresh database's migrations
    take many seconds, once per PREFECT_HOME, and no side should pay them (a user pays them once)."""
    import prefect

    template = CACHE / f"prefect-{prefect.__version__}-home"
    if not (template / "prefect.db").exists():
        env = {**os.environ, "PREFECT_HOME": str(template)}
        env.pop("PREFECT_API_URL", None)
        subprocess.run(["prefect", "server", "database", "upgrade", "-y"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(template / "prefect.db", home / "prefect.db")
    return home

class Sim:
    def __init__(self, latency: float) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "geodistil.cli", "sim", "--port", str(self.port), "--latency", str(latency),
             "--tool-calls", "0", "--seed", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        self.url = f"http://127.0.0.1:{self.port}/v1"
        wait_http(self.url + "/models", timeout=60)

    def stats(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/sim/stats", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class PrefectServer:
    """``prefect server start`` in a process group of its own, with geodistil's recommended settings."""

    def __init__(self, home: Path) -> None:
        from flows.generation import SERVER_SETTINGS

        self.port = free_port()
        env = {**os.environ, **SERVER_SETTINGS, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_UI_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        self.proc = subprocess.Popen(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}/api"
        try:
            wait_http(self.url + "/health", timeout=300)
        except BaseException:
            self.stop()  # none left running behind a failed benchmark
            raise

    def cpu(self) -> float:
        return tree_cpu_now(self.proc.pid)

    def stop(self) -> None:
        os.killpg(self.proc.pid, 15)
        self.proc.wait(30)


# ----- the sides -----

def _client(url: str, limit: int):
    """The openai client both drivers use: ``limit`` connections, the sim's settings."""
    import openai

    return openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=2, timeout=600,
                              http_client=openai.DefaultAsyncHttpxClient(
                                  limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit)))


async def _ask(client, i: int, row: dict) -> dict:
    """One sample's request, the JPEG file as a data URL; its answer as a JSON-able line."""
    import base64

    image = base64.b64encode(row["image"]["bytes"]).decode()
    reply = await client.chat.completions.create(model="geodistil-sim", max_tokens=512, messages=[
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{image}"}},
            {"type": "text", "text": PROMPT}]}])
    return {"index": i, "answer": reply.choices[0].message.content, "usage": reply.usage.model_dump()}


def _file_bytes(dataset: str):
    import datasets

    return datasets.load_from_disk(dataset).cast_column("image", datasets.Image(decode=False))  # the file's bytes


def plain_driver(dataset: str, out: str, url: str, in_flight: str, samples: str) -> None:
    """The floor: AsyncOpenAI + a semaphore, the JPEG as a data URL, one JSON line per answer."""
    import asyncio

    ds = _file_bytes(dataset)
    n, limit = int(samples), int(in_flight)

    async def main() -> list[dict]:
        client = _client(url, limit)
        semaphore = asyncio.Semaphore(limit)

        async def one(i: int) -> dict:
            async with semaphore:
                return await _ask(client, i, ds[i])

        records = await asyncio.gather(*(one(i) for i in range(n)))
        await client.close()
        return records

    records = asyncio.run(main())
    Path(out).write_text("".join(json.dumps(record) + "\n" for record in records))


def prefect_driver(dataset: str, out: str, url: str, in_flight: str, samples: str) -> None:
    """The plain driver's request, each one a Prefect task run in a flow, as geodistil makes it
    (cache key, persisted JSON result, retries, the parameters quoted), on the same temporary
    server with the same settings: the straightforward Prefect version of the plain driver."""
    import asyncio
    import contextlib

    from prefect import flow, task
    from prefect.serializers import JSONSerializer
    from prefect.utilities.annotations import quote

    from flows.generation import quiet_completed_task_runs, use_server_settings
    from flows.server import temporary_server
    from geodistil.store import StorageSpec
    from tasks.results import result_storage_for

    ds = _file_bytes(dataset)
    n, limit = int(samples), int(in_flight)
    client = None

    @task(name="request", task_run_name="request-{i}", retries=2, persist_result=True, cache_result_in_memory=False,
          cache_key_fn=lambda _, parameters: f"prefect-floor-{parameters['i']:06d}", result_serializer=JSONSerializer())
    async def request(i: int, row: dict) -> dict:
        return await _ask(client, i, row)

    @flow(name="prefect-floor", log_prints=False)
    async def main() -> list[dict]:
        nonlocal client
        client = _client(url, limit)
        semaphore = asyncio.Semaphore(limit)
        # the result storage a geodistil run saves: a block, results beside the output
        stored = request.with_options(result_storage=await result_storage_for(StorageSpec(url=out + ".store")))

        async def one(i: int) -> dict:
            async with semaphore:
                return await stored(i, quote(ds[i]))

        records = await asyncio.gather(*(one(i) for i in range(n)))
        await client.close()
        return records

    use_server_settings()
    quiet_completed_task_runs()
    with temporary_server() if not os.environ.get("PREFECT_API_URL") else contextlib.nullcontext():
        records = asyncio.run(main())
    Path(out).write_text("".join(json.dumps(record) + "\n" for record in records))


CURATOR_SCRIPT = r'''
import os, sys, base64
dataset, url, in_flight, samples = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import datasets
from bespokelabs import curator

PROMPT = sys.argv[5]
ds = datasets.load_from_disk(dataset).select(range(samples)).cast_column("image", datasets.Image(decode=False))
ds = ds.map(lambda row, i: {"index": i}, with_indices=True)

class Geo(curator.LLM):
    def prompt(self, row):
        image = row["image"]
        data = image["bytes"] if isinstance(image, dict) else image
        return [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(data).decode()}},
            {"type": "text", "text": PROMPT}]}]

    def parse(self, row, response):
        return {"index": row["index"], "answer": response}

llm = Geo(model_name="geodistil-sim", backend="openai", generation_params={"max_tokens": 512},
          backend_params={"base_url": url, "api_key": "none", "max_requests_per_minute": 10_000_000,
                          "max_tokens_per_minute": 10_000_000_000, "max_retries": 2, "request_timeout": 600,
                          "require_all_responses": False, "max_concurrent_requests": in_flight})
out = llm(ds.remove_columns([c for c in ds.column_names if c not in ("image", "index")]))
print("curator rows:", len(out.dataset if hasattr(out, "dataset") else out))
'''


def curator_python() -> Path:
    """The curator venv's python, made (and curator installed with pip) on first use."""
    venv = CACHE / f"curator-{CURATOR_VERSION}-venv"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"bespokelabs-curator=={CURATOR_VERSION}"],
                       check=True)
        (venv / ".installed").touch()
    return python


def run_side(name: str, cmd_of_url: Callable[[str], list[str]], env: dict[str, str], latency: float,
             samples: int, in_flight: int, server: PrefectServer | None = None, cwd: Path = ROOT) -> dict:
    """Start a fresh sim, run the side's command (given the sim's URL) to the end, measure it."""
    sim = Sim(latency)
    try:
        cmd = cmd_of_url(sim.url)
        server_cpu0 = server.cpu() if server else 0.0
        start_unix, start = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cpu = TreeCPU(proc.pid)
        stderr = proc.stderr.read() if proc.stderr else b""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        cpu.stop()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{name} exited {os.waitstatus_to_exitcode(status)}: {stderr.decode()[-2000:]}")
        stats = sim.stats()
        row = {"name": name, "wall": wall, "requests": stats["requests"], "ok": stats["ok"],
               "first": (stats["first_request_at"] or start_unix) - start_unix,
               "cpu": cpu.by_name(usage.ru_utime + usage.ru_stime, "main process")}
        if server:
            time.sleep(2)  # the server records the run's last events after it ended
            row["cpu"]["separate prefect server"] = server.cpu() - server_cpu0
        return row
    finally:
        sim.stop()


def run_mode(args: argparse.Namespace, latency: float, dataset: str, work: Path,
             server: PrefectServer | None, curator: Path | None) -> list[dict]:
    n, c = args.samples, args.in_flight
    rows = []
    sides = [s for s in args.sides.split(",") if s]
    for side in sides:
        out = work / f"{side}-{latency}"
        # Prefect's defaults, as a user meets them (logging level included)
        env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PYTHONPATH": str(ROOT),
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600"}  # a loaded machine starts it slowly
        if not (work / "prefect-home").exists():
            migrated_home(work / "prefect-home")
        env.pop("PREFECT_API_URL", None)
        geodistil = [sys.executable, "-m", "geodistil.cli", "run", "--dataset", dataset, "--output", str(out),
                     "--model", "geodistil-sim", "--num-samples", str(n), "--max-concurrency", str(c),
                     "--max-turns", "1", "--tools", "", "--timeout", "600", "--base-url"]
        if side == "plain":
            driver = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import bench_cost as b; "
                      "b.plain_driver(*sys.argv[1:])")
            cmd = lambda url, driver=driver, out=out: [sys.executable, "-c", driver, dataset, str(out), url, str(c), str(n)]
            rows.append(run_side("plain asyncio floor", cmd, env, latency, n, c))
        elif side == "prefect":
            driver = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import bench_cost as b; "
                      "b.prefect_driver(*sys.argv[1:])")
            cmd = lambda url, driver=driver, out=out: [sys.executable, "-c", driver, dataset, str(out), url, str(c), str(n)]
            rows.append(run_side("prefect tasks (embedded)", cmd, env, latency, n, c))
        elif side == "geodistil":
            profiled = geodistil
            if args.profile:  # the command's main thread under cProfile (slower; read its shares)
                profile = work / f"geodistil-{latency}.prof"
                profiled = [sys.executable, "-m", "cProfile", "-o", str(profile), *geodistil[1:]]
            rows.append(run_side("geodistil (embedded server)", lambda url, cmd=profiled: [*cmd, url], env, latency, n, c))
            if args.profile:
                rows[-1]["profile"] = profile_by_package(profile)
        elif side == "geodistil@baseline" and args.baseline:
            # the same command from another checkout (e.g. main): before/after in one run
            rows.append(run_side(f"geodistil @ {args.baseline.name}", lambda url, geodistil=geodistil: [*geodistil, url],
                                 {**env, "PYTHONPATH": str(args.baseline)}, latency, n, c, cwd=args.baseline))
        elif side == "geodistil+server" and server:
            rows.append(run_side("geodistil (separate server)", lambda url, geodistil=geodistil: [*geodistil, url],
                                     {**env, "PREFECT_API_URL": server.url}, latency, n, c, server))
        elif side == "curator" and curator:
            cache = work / "curator-cache"
            # tiktoken's encodings as litellm (a dependency of curator) ships them: no download needed
            tokenizers = next(curator.parent.parent.glob("lib/python*/site-packages/litellm/litellm_core_utils/tokenizers"))
            cenv = {"PATH": os.environ["PATH"], "TIKTOKEN_CACHE_DIR": str(tokenizers), "HOME": os.environ.get("HOME", "/tmp"),
                    "CURATOR_CACHE_DIR": str(cache), "HF_DATASETS_CACHE": str(cache / "hf"),
                    "CURATOR_DISABLE_CACHE": "1", "CURATOR_VIEWER": "0", "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
            script = work / "curator_side.py"
            script.write_text(CURATOR_SCRIPT)
            cmd = lambda url, script=script: [str(curator), str(script), dataset, url, str(c), str(n), PROMPT]
            rows.append(run_side("curator " + CURATOR_VERSION, cmd, cenv, latency, n, c))
    return rows


def profile_by_package(path: Path, top: int = 14) -> tuple[float, list[tuple[str, float, float]]]:
    """Where a profiled process's main thread spent its time: ``(what, seconds, ms per call)`` by
    package (own time of its functions), and system calls by name, largest first. cProfile slows
    Python calls several times and system calls not at all: read shares, not milliseconds."""
    import pstats
    import re

    def package(file: str) -> str:
        if m := re.search(r"site-packages/([^/]+)", file):
            return m.group(1).removesuffix(".py")
        if file.startswith(str(ROOT)):
            return "geodistil (" + file.removeprefix(str(ROOT) + "/").split("/")[0] + "/)"
        if m := re.search(r"/python3\.\d+/([^/]+)", file):
            return "standard library: " + m.group(1).removesuffix(".py")
        return "imports" if "<frozen" in file else "other"

    totals: dict[str, float] = {}
    calls: dict[str, int] = {}

    def add(key: str, seconds: float, ncalls: int) -> None:
        totals[key] = totals.get(key, 0.0) + seconds
        calls[key] = calls.get(key, 0) + ncalls

    for (file, _, name), (_, ncalls, own, _, callers) in pstats.Stats(str(path)).stats.items():  # type: ignore[attr-defined]
        syscall = re.search(r"posix\.(\w+)|select\.(\w+)|'(send|recv|connect)' of '_socket", name) \
            if file == "~" else None
        if syscall:
            call = next(g for g in syscall.groups() if g)
            add("waiting for I/O (epoll)" if call == "poll" else f"system call {call}", own, ncalls)
        elif file == "~":  # other C code (pydantic-core, json, ...): the package that called it
            for (caller_file, _, _), edge in callers.items():
                add(package(caller_file), edge[2], edge[1])
        else:
            add(package(file), own, ncalls)
    rows = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return sum(totals.values()), [(key, seconds, seconds * 1000 / max(1, calls[key])) for key, seconds in rows]


def print_profile(name: str, profile: tuple[float, list[tuple[str, float, float]]]) -> None:
    total, rows = profile
    print(f"\n{name}, main thread under cProfile ({total:.1f} s): own time by package, and system calls "
          f"(top {len(rows)})")
    for key, seconds, per_call in rows:
        note = f"  ({per_call:.3f} ms per call)" if key.startswith("system call") else ""
        print(f"  {seconds:7.2f} s {100 * seconds / total:5.1f} %  {key}{note}")


def print_table(rows: list[dict], latency: float, n: int, c: int) -> None:
    ideal = latency * math.ceil(n / c)
    floor = next((r for r in rows if r["name"].startswith("plain")), None)
    cur = next((r for r in rows if r["name"].startswith("curator")), None)
    print(f"\n{n} samples, {c} in flight, {latency:g} s per request (ideal {ideal:.1f} s); "
          "CPU ms per request by process (the sim's excluded)")
    print(f"{'side':30} {'wall s':>7} {'w/ideal':>7} {'req/s':>7} {'first s':>7} {'CPU ms/req':>10} "
          f"{'x curator':>9} {'x floor':>7}  by process")
    for r in rows:
        total = sum(r["cpu"].values()) * 1000 / n
        parts = ", ".join(f"{k} {v * 1000 / n:.1f}" for k, v in sorted(r["cpu"].items(), key=lambda kv: -kv[1])
                          if v * 1000 / n >= 0.05)
        vs_cur = f"{r['wall'] / cur['wall']:.2f}w {total / (sum(cur['cpu'].values()) * 1000 / n):.2f}c" if cur else "-"
        vs_floor = f"{r['wall'] / floor['wall']:.2f}" if floor else "-"
        print(f"{r['name']:30} {r['wall']:7.1f} {r['wall'] / ideal:7.2f} {n / r['wall']:7.1f} {r['first']:7.1f} "
              f"{total:10.1f} {vs_cur:>9} {vs_floor:>7}  {parts}  [{r['requests']} requests, {r['ok']} ok]")
    print("x curator: wall time (w) and CPU per request (c) as multiples of curator's; x floor: wall time")
    for r in rows:
        if "profile" in r:
            print_profile(r["name"], r["profile"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--latency", default="2,0.05", help="seconds per request, one mode each (comma-separated)")
    parser.add_argument("--sides", default="plain,curator,geodistil,geodistil+server")
    parser.add_argument("--curator", action="store_true",
                        help=f"also run curator {CURATOR_VERSION} (pip-installed into bench/.cache the first time)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--profile", action="store_true",
                        help="run the geodistil side under cProfile and print where its main thread's time goes")
    parser.add_argument("--baseline", type=Path,
                        help="a checkout of another version (git worktree add): side geodistil@baseline runs "
                             "geodistil from it, e.g. --sides geodistil@baseline,geodistil --baseline ../main")
    args = parser.parse_args()

    CACHE.mkdir(parents=True, exist_ok=True)
    dataset = demo_dataset(args.samples)
    curator = curator_python() if args.curator and "curator" in args.sides else None
    work = Path(tempfile.mkdtemp(prefix="geodistil-cost-"))
    server = PrefectServer(migrated_home(work / "server-home")) if "geodistil+server" in args.sides else None
    results = {}
    try:
        for latency in (float(x) for x in args.latency.split(",")):
            rows = run_mode(args, latency, dataset, work, server, curator)
            print_table(rows, latency, args.samples, args.in_flight)
            results[str(latency)] = rows
    finally:
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
