"""The ``geodistil`` command."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

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
    seed: int = typer.Option(0),
) -> None:
    """Serve the SIMULATED teacher, an OpenAI-compatible test and demo fixture (not a model)."""
    from geodistil.sim.server import SimConfig, serve

    serve(SimConfig(host=host, port=port, latency=latency, latency_spread=latency_spread, rate_429=rate_429,
                    rate_500=rate_500, rate_hang=rate_hang, rate_malformed=rate_malformed,
                    rate_no_box=rate_no_box, tool_style=tool_style, seed=seed))


@app.command("replay")
def replay(
    output: str = typer.Argument(..., help="trace folder or s3://bucket/prefix"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="compare every rebuilt image's sha256"),
) -> None:
    """Rebuild every image of every trace from the dataset and the tool log."""
    from geodistil.replay import verify_store
    from geodistil.store import TraceStore

    summary = verify_store(TraceStore(output))
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


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
