"""Commands that make data and traces: demo-data, sim, run, check-api, sandbox-check."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.markup import escape
from rich.table import Table

from geodistil.cli._app import app, console, storage_options_from_env

if TYPE_CHECKING:
    from geodistil.generate import StorageSpec


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
    base_url: Optional[str] = typer.Option(
        None, help="teacher base URL (default $OPENAI_BASE_URL); the API key goes in $OPENAI_API_KEY or a Prefect "
                   "Secret block, never in the URL (credentials in a URL are kept out of traces, logs and Prefect)"),
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
    """Generate traces with the Prefect generation flow (on a temporary local Prefect server unless
    PREFECT_API_URL is set). One run at a time per output store."""
    from geodistil.config import BoxConvention, GenerationConfig, TeacherConfig, ToolsConfig
    from geodistil.data import DatasetSpec
    from geodistil.generate import SampleRange, StorageSpec
    from geodistil.store import StoreLockedError, raise_if_locked

    storage = StorageSpec(url=output, storage_options=storage_options_from_env(output))
    try:
        raise_if_locked(storage.store())  # at once, before any server starts; the flow takes the lock
        with _demo_teacher(demo, dataset) as (dataset_path, sim_url):
            if dataset_path is None:
                raise typer.BadParameter("--dataset is required (or use --demo)")
            teacher = TeacherConfig(base_url=_url_without_credentials(sim_url or base_url), model=model,
                                    tool_style=tool_style, timeout_s=timeout)
            params = dict(
                dataset=DatasetSpec(path=dataset_path),
                storage=storage,
                samples=SampleRange(start=start, num_samples=num_samples),
                teacher=teacher,
                generation=GenerationConfig(max_turns=max_turns, temperature=temperature,
                                            rollouts_per_sample=rollouts, max_concurrency=max_concurrency),
                tools=ToolsConfig(enabled=tuple(t.strip() for t in tools.split(",") if t.strip()),
                                  box_convention=BoxConvention(box_convention)),
                chunk_size=chunk_size,
                refresh=refresh,
            )
            summary, failure = _run_with_progress(params)
    except StoreLockedError as exc:
        console.print(escape(str(exc)), style="red", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    _print_summary(summary)
    _print_failures(storage)
    if failure:  # samples failed after retries; the flow wrote every trace and the summary
        console.print(f"[red]{escape(failure)}[/red]\nrun the same command again to generate only the failed samples")
        raise typer.Exit(1)
    console.print(f"traces in {output}")


def _url_without_credentials(url: str | None) -> str | None:
    """A URL with credentials reaches the client through $OPENAI_BASE_URL instead of the flow's
    parameters, which Prefect stores in its database; traces and logs record it redacted."""
    from geodistil.redact import url_has_credentials

    if url is None or not url_has_credentials(url):
        return url
    os.environ["OPENAI_BASE_URL"] = url
    return None


def _print_failures(storage: "StorageSpec", shown: int = 5) -> None:
    """The first failed samples with their errors, and where the full list is."""
    from geodistil.generate import MANIFEST

    failed = [row for row in storage.store().read_json(MANIFEST)["traces"] if not row["ok"]]
    for row in failed[:shown]:
        console.print(f"[red]failed[/red] {row['name']}: {row['error_kind']}: {escape(str(row['error']))}",
                      highlight=False, soft_wrap=True)
    if failed:
        console.print(f"{len(failed)} failed samples in all: the rows with \"ok\": false in "
                      f"{storage.url}/{MANIFEST}; their error traces are in {storage.url}", soft_wrap=True)


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


@app.command("sandbox-check")
def sandbox_check() -> None:
    """Show which isolation layers of the python_code_tool sandbox are active on this machine."""
    from geodistil.sandbox import sandbox_check as check

    report = check()
    console.print(str(report))
    raise typer.Exit(0 if report.ok else 1)
