"""The ``geodistil`` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

# Prefect's ephemeral API starts a server process on first use; 20 s is too short on a busy 2-core box
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
if not os.environ.get("PREFECT_API_URL"):
    # the temporary server is stopped while its event recorder still flushes, and prints a
    # CancelledError traceback after every successful run; the run's own logs are unaffected
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Distil think-with-images geolocation traces from a teacher VLM.")
console = Console()


@app.command("demo-data")
def demo_data(
    out_dir: Path = typer.Argument(..., help="folder to write the dataset to (datasets save_to_disk)"),
    n: int = typer.Option(20, "--n", min=1, help="number of samples"),
    seed: int = typer.Option(0, help="random seed; the same seed gives the same dataset"),
) -> None:
    """Write a synthetic geolocation dataset of real places (for demos and tests)."""
    from geodistil.sim.demo_data import make_demo_dataset

    start = time.perf_counter()
    path = make_demo_dataset(str(out_dir), n=n, seed=seed)
    console.print(f"wrote {n} samples to {path} in {time.perf_counter() - start:.1f}s")


@app.command("sim")
def sim(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    latency: float = typer.Option(0.0, help="seconds per request"),
    latency_spread: float = typer.Option(0.0, help="random extra seconds, uniform in [0, spread]"),
    rate_429: float = typer.Option(0.0, help="share of requests answered 429 with Retry-After"),
    rate_500: float = typer.Option(0.0, help="share of requests answered 500"),
    rate_hang: float = typer.Option(0.0, help="share of requests never answered"),
    rate_malformed: float = typer.Option(0.0, help="share of tool calls with broken JSON"),
    rate_no_box: float = typer.Option(0.0, help="share of answers without \\boxed{}"),
    tool_style: str = typer.Option("text", help="text (<tool_call> JSON) or native (OpenAI tool_calls)"),
    tool_calls: Optional[int] = typer.Option(None, min=0, help="fixed tool calls per conversation (benchmarks)"),
    seed: int = typer.Option(0),
) -> None:
    """Serve the SIMULATED teacher, an OpenAI-compatible test and demo fixture (not a model)."""
    from geodistil.sim.server import SimConfig, serve

    serve(SimConfig(host=host, port=port, latency=latency, latency_spread=latency_spread, rate_429=rate_429,
                    rate_500=rate_500, rate_hang=rate_hang, rate_malformed=rate_malformed,
                    rate_no_box=rate_no_box, tool_style=tool_style, tool_calls=tool_calls, seed=seed))


@app.command("run")
def run(
    dataset: Optional[str] = typer.Option(None, help="save_to_disk folder, s3:// folder or hub id"),
    output: str = typer.Option("out/traces", help="trace folder or s3://bucket/prefix"),
    base_url: Optional[str] = typer.Option(None, help="teacher base URL (default $OPENAI_BASE_URL)"),
    model: str = typer.Option("teacher", help="teacher model name"),
    num_samples: Optional[int] = typer.Option(None, min=1, help="samples to run (default: all)"),
    start: int = typer.Option(0, min=0, help="first sample index"),
    max_concurrency: int = typer.Option(64, min=1, help="conversations in flight"),
    max_turns: int = typer.Option(6, min=1),
    temperature: float = typer.Option(0.7, min=0.0),
    rollouts: int = typer.Option(1, min=1, help="rollouts per sample"),
    tool_style: str = typer.Option("text", help="text (<tool_call> JSON) or native (OpenAI tool calls)"),
    tools: str = typer.Option("image_zoom_in_tool,image_rotate_tool,python_code_tool",
                              help="comma-separated tool names"),
    box_convention: str = typer.Option("absolute", help="absolute | relative_1000 | relative_1"),
    timeout: float = typer.Option(120.0, help="per-request timeout, seconds"),
    chunk_size: int = typer.Option(1000, min=1, help="samples per Prefect subflow"),
    refresh: bool = typer.Option(False, help="ignore cached results and generate again"),
    demo: bool = typer.Option(False, help="demo: make the synthetic dataset if missing and start the simulated teacher"),
) -> None:
    """Generate traces with the Prefect generation flow (local ephemeral API unless PREFECT_API_URL is set)."""
    from geodistil.config import BoxConvention, GenerationConfig, TeacherConfig, ToolsConfig
    from geodistil.data import DatasetSpec
    from geodistil.generate import SampleRange, StorageSpec

    with _demo_teacher(demo, dataset) as (dataset_path, sim_url):
        if dataset_path is None:
            raise typer.BadParameter("--dataset is required (or use --demo)")
        teacher = TeacherConfig(base_url=sim_url or base_url, model=model, tool_style=tool_style, timeout_s=timeout)
        params = dict(
            dataset=DatasetSpec(path=dataset_path),
            storage=StorageSpec(url=output, storage_options=_storage_options_from_env(output)),
            samples=SampleRange(start=start, num_samples=num_samples),
            teacher=teacher,
            generation=GenerationConfig(max_turns=max_turns, temperature=temperature, rollouts_per_sample=rollouts,
                                        max_concurrency=max_concurrency),
            tools=ToolsConfig(enabled=tuple(t.strip() for t in tools.split(",") if t.strip()),
                              box_convention=BoxConvention(box_convention)),
            chunk_size=chunk_size,
            refresh=refresh,
        )
        summary, failure = _run_with_progress(params)
    _print_summary(summary)
    if failure:  # samples failed after retries; the flow wrote every trace and the summary
        console.print(f"[red]{failure}[/red]\nrun the same command again to generate only the failed samples")
        raise typer.Exit(1)
    console.print(f"traces in {output}")


def _storage_options_from_env(url: str) -> dict | None:
    """S3 endpoint from the environment (credentials stay there, never in parameters)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if url.startswith("s3://") and endpoint:
        return {"endpoint_url": endpoint}
    return None


class _demo_teacher:
    """Context manager: for --demo, a demo dataset and a running simulated teacher."""

    def __init__(self, demo: bool, dataset: str | None) -> None:
        self.demo, self.dataset, self.server = demo, dataset, None

    def __enter__(self) -> tuple[str | None, str | None]:
        if not self.demo:
            return self.dataset, None
        from geodistil.sim.demo_data import make_demo_dataset
        from geodistil.sim.server import SimConfig, SimServer

        path = self.dataset or "out/demo-data"
        if not Path(path).exists():
            console.print(f"making the demo dataset in {path}")
            make_demo_dataset(path, n=100, seed=0)
        self.server = SimServer(SimConfig(latency=0.2, latency_spread=0.3, tool_style="text"))
        self.server.__enter__()
        console.print(f"simulated teacher (demo fixture) at {self.server.base_url}")
        return path, self.server.base_url

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.__exit__(*exc)


def _run_with_progress(params: dict) -> tuple[dict, str | None]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.generation import run_generation
    from geodistil.data import open_dataset
    from tasks.generation import add_listener, remove_listener

    total = len(params["samples"].indices(len(open_dataset(params["dataset"])))) * \
        params["generation"].rollouts_per_sample
    with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task("traces", total=total, status="")
        counts = {"ok": 0, "failed": 0}

        def on_record(record) -> None:
            counts["ok" if record.ok else "failed"] += 1
            progress.update(bar, advance=1, status=f"{counts['ok']} ok, {counts['failed']} failed")

        add_listener(on_record)
        # per-task "Finished in state Completed" lines would bury the bar; the UI keeps every state
        logging.getLogger("prefect.task_runs").setLevel(logging.WARNING)
        try:
            return run_generation(**params)
        finally:
            remove_listener(on_record)


def _print_summary(summary: dict) -> None:
    table = Table(title="run summary", show_header=False)
    for key in ("total", "success", "failed", "parse_success", "parse_success_rate", "mean_distance_km",
                "median_distance_km", "mean_reward", "tool_calls", "mean_tool_calls"):
        value = summary.get(key)
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    for threshold, share in summary.get("accuracy", {}).items():
        table.add_row(f"accuracy @ {threshold}", f"{share:.1%}")
    if summary.get("error_kinds"):
        table.add_row("errors", json.dumps(summary["error_kinds"]))
    console.print(table)


@app.command("replay")
def replay(
    output: str = typer.Argument(..., help="trace folder or s3://bucket/prefix"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="compare every rebuilt image's sha256"),
) -> None:
    """Rebuild every image of every trace from the dataset and the tool log."""
    from geodistil.replay import verify_store

    summary = verify_store(_spec(output).store())
    for failure in summary.failures:
        console.print(f"[red]mismatch[/red] {failure}")
    console.print(f"verified {summary.traces} traces and {summary.images} images "
                  f"({summary.skipped} error traces without images, {len(summary.failures)} failures)")
    if verify and not summary.ok:
        raise typer.Exit(1)


@app.command("check-api")
def check_api(
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL (default $OPENAI_BASE_URL)"),
    model: str = typer.Option(..., help="model name"),
    tool_style: str = typer.Option("text", help="text or native tool calls"),
) -> None:
    """Check a teacher endpoint: models, one image request with tools, format of the reply."""
    from geodistil.checkapi import check_api as run_check

    report = asyncio.run(run_check(base_url, model, tool_style))
    table = Table(title="teacher check", show_header=False)
    for key, value in report.items():
        table.add_row(key, str(value))
    console.print(table)
    if not report.get("ok"):
        raise typer.Exit(1)


@app.command("view")
def view(
    output: str = typer.Argument(..., help="trace folder or s3://bucket/prefix"),
    port: int = typer.Option(8765, "--port", "-p", min=1, max=65535),
    host: str = typer.Option("127.0.0.1", help="interface to listen on (the default keeps it on this machine)"),
    dataset: Optional[str] = typer.Option(None, help="dataset to replay images from (default: the traces' own)"),
) -> None:
    """Serve a web page over a trace store: the list, each conversation, its images and a world map."""
    from geodistil.viewer import serve

    serve(output, host=host, port=port, dataset=dataset, storage_options=_storage_options_from_env(output))


# -- curation: stats, filter, split, export --------------------------------------------------

def _spec(url: str) -> "StorageSpec":
    from geodistil.generate import StorageSpec

    return StorageSpec(url=url, storage_options=_storage_options_from_env(url))


def _stage(use_prefect: bool, flow_name: str, plain, **params):
    """Run a curation stage as its Prefect flow (``--prefect``) or as the plain library call."""
    if not use_prefect:
        return plain()
    import flows.curation as curation_flows

    return getattr(curation_flows, flow_name)(**params)


def _print_stats(summary: dict) -> None:
    def pct(v) -> str:
        return "–" if v is None else f"{v:.1%}"

    def num(v, digits: int = 0) -> str:
        return "–" if v is None else f"{v:,.{digits}f}"

    table = Table(title=f"traces in {summary.get('store', '')}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    acc = summary.get("accuracy", {})
    rows = [
        ("traces", f"{summary['total']}  ({summary['success']} ok, {summary['failed']} failed, "
                   f"{summary['unreadable']} unreadable)"),
        ("parse rate", pct(summary["parse_success_rate"])),
        ("distance mean / median", f"{num(summary['mean_distance_km'])} / {num(summary['median_distance_km'])} km"),
        ("reward / GeoScore", f"{num(summary['mean_reward'], 3)} / {num(summary['mean_geoscore'])}"),
        ("accuracy 1/25/200/750/2500 km", " ".join(pct(acc.get(k)) for k in ("1km", "25km", "200km", "750km",
                                                                               "2500km"))),
        ("same country", pct(summary["country_accuracy"])),
        ("tool use", f"{pct(summary['traces_using_tools'])} of traces, {num(summary['mean_tool_calls'], 2)} "
                     f"calls/trace, {pct(summary['tool_error_rate'])} failed"),
        ("turns (mean)", num(summary["mean_turns"], 2)),
        ("stop reasons", ", ".join(f"{k} {v}" for k, v in summary["stop_reasons"].items()) or "–"),
        ("tokens p50 prompt / completion", f"{num(summary['tokens']['prompt']['p50'])} / "
                                           f"{num(summary['tokens']['completion']['p50'])}"),
        ("latency p50 / p90 / p99 (s)", " / ".join(num(summary["latency_s"][p], 2) for p in ("p50", "p90", "p99"))),
    ]
    if summary.get("error_kinds"):
        rows.append(("errors", ", ".join(f"{k} {v}" for k, v in summary["error_kinds"].items())))
    for bucket, part in summary.get("by_difficulty", {}).items():
        rows.append((f"  {bucket}", f"{part['total']} traces, median {num(part['median_distance_km'])} km, "
                                    f"GeoScore {num(part['mean_geoscore'])}"))
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)
    for problem in summary.get("unreadable_traces", [])[:20]:
        console.print(f"[yellow]skipped[/yellow] {problem}")


@app.command("stats")
def stats(
    output: str = typer.Argument(..., help="trace folder or s3://bucket/prefix (or a split folder)"),
    difficulty_from: Optional[str] = typer.Option(None, help="split folder whose ratings bucket these traces"),
    report: bool = typer.Option(True, "--report/--no-report", help="also write report.html"),
    use_prefect: bool = typer.Option(False, "--prefect", help="run as the Prefect flow (shows in the UI)"),
) -> None:
    """Summarise a trace store: prints a table, writes summary.json and report.html into it."""
    from geodistil.curate import read_difficulty
    from geodistil.stats import REPORT, SUMMARY, run_aggregate

    spec = _spec(output)
    source = _spec(difficulty_from) if difficulty_from else None
    summary = _stage(use_prefect, "aggregate_flow",
                     lambda: run_aggregate(spec.store(), read_difficulty(source.store()) if source else None, report),
                     storage=spec, difficulty_from=source, report=report)
    _print_stats(summary)
    console.print(f"wrote {output.rstrip('/')}/{SUMMARY}" + (f" and {output.rstrip('/')}/{REPORT}" if report else ""))


@app.command("filter")
def filter_(
    output: str = typer.Argument(..., help="trace folder or s3:// prefix to read"),
    dest: str = typer.Argument(..., help="folder or s3:// prefix for the kept traces"),
    min_reward: Optional[float] = typer.Option(0.5, min=0.0, max=1.0, help="minimum reward (0.5 = about 1035 km)"),
    any_reward: bool = typer.Option(False, "--any-reward", help="no minimum reward"),
    max_turns: Optional[int] = typer.Option(None, min=1, help="maximum assistant turns"),
    require_tool_use: bool = typer.Option(False, help="keep only traces with a successful tool call"),
    required_tool: list[str] = typer.Option([], help="a tool every kept trace must call (repeatable)"),
    forbidden_tool: list[str] = typer.Option([], help="a tool no kept trace may call (repeatable)"),
    keep_errors: bool = typer.Option(False, help="keep traces whose rollout failed"),
    keep_unparsed: bool = typer.Option(False, help="keep traces without a parseable answer"),
    keep_failed_tool_calls: bool = typer.Option(False, help="keep traces with a failed tool call"),
    dedup: bool = typer.Option(True, "--dedup/--no-dedup", help="drop near-duplicate answers of a sample"),
    dedup_similarity: float = typer.Option(0.95, min=0.5, max=1.0),
    use_prefect: bool = typer.Option(False, "--prefect", help="run as the Prefect flow (shows in the UI)"),
) -> None:
    """Copy the traces that pass the quality rules; writes filter.json and rejected.jsonl beside them."""
    from geodistil.curate import FilterConfig, run_filter

    config = FilterConfig(no_error=not keep_errors, parse_success=not keep_unparsed,
                          min_reward=None if any_reward else min_reward, max_turns=max_turns,
                          require_tool_use=require_tool_use, required_tools=tuple(required_tool),
                          forbidden_tools=tuple(forbidden_tool), no_failed_tool_call=not keep_failed_tool_calls,
                          dedup_answers=dedup, dedup_similarity=dedup_similarity)
    src, out = _spec(output), _spec(dest)
    manifest = _stage(use_prefect, "filter_flow", lambda: run_filter(src.store(), out.store(), config),
                      source=src, dest=out, config=config)
    table = Table(title=f"kept {manifest['kept']} of {manifest['total']} traces", title_justify="left")
    table.add_column("removed by")
    table.add_column("traces", justify="right")
    for rule, count in manifest["removed"].items():
        table.add_row(rule, str(count))
    console.print(table)
    console.print(f"kept traces in {dest}; every rejected trace and its reason in {dest.rstrip('/')}/rejected.jsonl")


@app.command("split")
def split(
    output: str = typer.Argument(..., help="trace folder or s3:// prefix to split"),
    dest: str = typer.Argument(..., help="folder or s3:// prefix for easy/ medium/ hard/"),
    difficulty_from: Optional[str] = typer.Option(
        None, help="rate samples on this store (e.g. the unfiltered run) instead of OUTPUT"),
    method: str = typer.Option("auto", help="auto | pass_rate | reward_bands"),
    pass_reward: float = typer.Option(0.6, min=0.0, max=1.0, help="a rollout passes at or above this reward"),
    easy_min_pass_rate: float = typer.Option(0.75, min=0.0, max=1.0),
    hard_max_pass_rate: float = typer.Option(0.25, min=0.0, max=1.0),
    easy_min_reward: float = typer.Option(0.8, min=0.0, max=1.0, help="one rollout: easy at or above"),
    hard_max_reward: float = typer.Option(0.4, min=0.0, max=1.0, help="one rollout: hard below"),
    use_prefect: bool = typer.Option(False, "--prefect", help="run as the Prefect flow (shows in the UI)"),
) -> None:
    """Split traces into easy / medium / hard by each sample's pass rate over its rollouts."""
    from geodistil.curate import SplitConfig, run_split

    config = SplitConfig(method=method, pass_reward=pass_reward, easy_min_pass_rate=easy_min_pass_rate,
                         hard_max_pass_rate=hard_max_pass_rate, easy_min_reward=easy_min_reward,
                         hard_max_reward=hard_max_reward)
    src, out = _spec(output), _spec(dest)
    rater = _spec(difficulty_from) if difficulty_from else None
    manifest = _stage(use_prefect, "split_flow",
                      lambda: run_split(src.store(), out.store(), config, rater.store() if rater else None),
                      source=src, dest=out, config=config, difficulty_source=rater)
    table = Table(title=f"split of {manifest['total']} traces", title_justify="left")
    for column in ("difficulty", "samples", "traces"):
        table.add_column(column, justify="left" if column == "difficulty" else "right")
    for bucket, count in manifest["counts"].items():
        table.add_row(bucket, str(count["samples"]), str(count["traces"]))
    console.print(table)
    for problem in manifest["unreadable_traces"][:20]:
        console.print(f"[yellow]skipped[/yellow] {problem}")


@app.command("export")
def export(
    output: str = typer.Argument(..., help="trace folder or s3:// prefix to export"),
    dest: str = typer.Argument(..., help="folder or s3:// prefix for the training data"),
    format: str = typer.Option("hf", "--format", help="hf (TRL messages + images, Parquet) | sharegpt (LLaMA-Factory)"),
    include_reasoning: bool = typer.Option(False, help="keep the teacher's reasoning in <think>...</think>"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="load the export back and check every image"),
    dataset: Optional[str] = typer.Option(None, help="dataset to replay images from (default: the traces' own)"),
    use_prefect: bool = typer.Option(False, "--prefect", help="run as the Prefect flow (shows in the UI)"),
) -> None:
    """Write SFT-ready data with every image rebuilt by replay and checked against its hash."""
    from geodistil.data import DatasetSpec
    from geodistil.export import ExportConfig, run_export

    if format not in ("hf", "sharegpt"):
        raise typer.BadParameter("--format must be hf or sharegpt")
    config = ExportConfig(format=format, include_reasoning=include_reasoning, verify=verify,
                          dataset=DatasetSpec(path=dataset) if dataset else None)
    src, out = _spec(output), _spec(dest)
    manifest = _stage(use_prefect, "export_flow", lambda: run_export(src.store(), out.store(), config),
                      source=src, dest=out, config=config)
    for problem in manifest["skipped_traces"][:20]:
        console.print(f"[yellow]skipped[/yellow] {problem}")
    check = manifest.get("verification")
    status = "not verified" if check is None else ("verified" if check["ok"] else "[red]verification failed[/red]")
    console.print(f"exported {manifest['rows']} rows ({manifest['skipped']} traces skipped) to {dest}: {status}")
    if check is not None and not check["ok"]:
        raise typer.Exit(1)


@app.command("sandbox-check")
def sandbox_check() -> None:
    """Show which isolation layers of the python_code_tool sandbox are active on this machine."""
    from geodistil.sandbox import sandbox_check as check

    report = check()
    console.print(str(report))
    raise typer.Exit(0 if report.ok else 1)


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
