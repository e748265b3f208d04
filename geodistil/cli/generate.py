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
from rich.progress import ProgressColumn
from rich.table import Table
from rich.text import Text

from geodistil.cli._app import app, console, fail, print_problems, warn

if TYPE_CHECKING:
    from geodistil.config import TeacherConfig
    from geodistil.store import StorageSpec


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


def _dialect(name: str | None) -> str | None:
    """``--tool-style``: a known dialect, or one clear line (the registry is imported only when used)."""
    from geodistil.dialects import dialect_named

    if name is None:
        return None
    try:
        return dialect_named(name).name
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


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
    tool_style: Optional[str] = typer.Option(None, callback=_dialect,
                                             help="dialect the sim calls tools in: hermes | qwen3_xml | native "
                                                  "(text = hermes); default: the profile's"),
    tool_calls: Optional[int] = typer.Option(None, min=0, help="fixed tool calls per conversation (benchmarks)"),
    profile: Optional[str] = typer.Option(
        None, help="real server to emulate: vllm | sglang | openai | openai-reasoning | gemini | llama-cpp"),
    max_context_tokens: Optional[int] = typer.Option(None, min=1, help="context limit, answered with the profile's 400"),
    max_images_per_prompt: Optional[int] = typer.Option(None, min=0, help="images per request (vLLM's limit)"),
    api_key: Optional[str] = typer.Option(None, help="answer 401 unless requests carry this key"),
    known_models_only: bool = typer.Option(False, help="answer 404 (model_not_found) to any other model name"),
    reasoning: bool = typer.Option(False, help="return the profile's reasoning field"),
    seed: int = typer.Option(0),
) -> None:
    """Serve the SIMULATED teacher, an OpenAI-compatible test and demo fixture (not a model)."""
    from pydantic import ValidationError

    from geodistil.sim.server import SimConfig, serve

    try:
        config = SimConfig(host=host, port=port, latency=latency, latency_spread=latency_spread, rate_429=rate_429,
                           rate_500=rate_500, rate_hang=rate_hang, rate_malformed=rate_malformed,
                           rate_no_box=rate_no_box, tool_style=tool_style, tool_calls=tool_calls, profile=profile,
                           max_context_tokens=max_context_tokens, max_images_per_prompt=max_images_per_prompt,
                           api_key=api_key, known_models_only=known_models_only, reasoning=reasoning,
                           seed=seed)
    except ValidationError as exc:
        error = exc.errors()[0]
        console.print(f"[red]{'.'.join(map(str, error['loc'])) or 'sim'}: {error['msg']}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    serve(config)


@app.command("run")
def run(
    config: Optional[Path] = typer.Option(None, "--config", help="run file (YAML) with these settings; flags win"),
    dataset: Optional[str] = typer.Option(None, help="save_to_disk folder, s3:// folder or hub id"),
    output: Optional[str] = typer.Option(None, help="trace folder or s3://bucket/prefix"),
    base_url: Optional[str] = typer.Option(
        None, help="teacher base URL (default $OPENAI_BASE_URL); the API key goes in $OPENAI_API_KEY or a Prefect "
                   "Secret block, never in the URL (credentials in a URL are kept out of traces, logs and Prefect)"),
    model: Optional[str] = typer.Option(None, help="teacher model name"),
    api_key_env: Optional[str] = typer.Option(None, help="environment variable holding the API key "
                                                         "(default OPENAI_API_KEY)"),
    teacher_profile: Optional[str] = typer.Option(
        None, help="auto | vllm | sglang | openai | openai-reasoning | gemini | llama-cpp: the request parameters"),
    tool_style: Optional[str] = typer.Option(None, callback=_dialect,
                                             help="tool-call dialect: hermes | qwen3_xml | native (text = hermes); "
                                                  "default: the profile's"),
    extra_body: Optional[str] = typer.Option(None, help="JSON object of more request parameters, sent as they are"),
    header: Optional[list[str]] = typer.Option(None, help="K=V extra HTTP header (repeatable); secret-looking "
                                                          "values never reach a log, parameter or trace"),
    timeout: Optional[float] = typer.Option(None, help="per-request timeout, seconds"),
    rpm: Optional[float] = typer.Option(None, min=0.001, help="requests per minute to keep to (default: the "
                                                             "server's announced limit, else learnt from its 429s)"),
    tpm: Optional[float] = typer.Option(None, min=1, help="tokens per minute to keep to (default: announced)"),
    price_input: Optional[float] = typer.Option(None, min=0, help="dollars per million input tokens "
                                                                  "(default: geodistil.prices for the model)"),
    price_output: Optional[float] = typer.Option(None, min=0, help="dollars per million output tokens"),
    prices: Optional[Path] = typer.Option(None, help="price table of your own (YAML/JSON: {model: {input, output, "
                                                     "cached_input}}, $ per million tokens) over the built-in one"),
    max_cost: Optional[float] = typer.Option(None, min=0.0001, help="budget in dollars: no sample starts once it "
                                                                    "would be passed; a re-run with more goes on"),
    max_tokens_total: Optional[int] = typer.Option(None, min=1, help="budget in tokens, as --max-cost"),
    max_outage: Optional[float] = typer.Option(None, min=1, help="seconds to wait for a teacher that stopped "
                                                                 "answering before the run stops (default 1800)"),
    num_samples: Optional[int] = typer.Option(None, min=1, help="samples to run (default: all)"),
    start: Optional[int] = typer.Option(None, min=0, help="first sample index"),
    max_concurrency: Optional[int] = typer.Option(None, min=1, help="conversations in flight"),
    max_turns: Optional[int] = typer.Option(None, min=1),
    max_tokens: Optional[int] = typer.Option(None, min=1, help="completion tokens per turn"),
    temperature: Optional[float] = typer.Option(None, min=0.0),
    top_p: Optional[float] = typer.Option(None),
    top_k: Optional[int] = typer.Option(None, help="vLLM, SGLang, llama.cpp"),
    repetition_penalty: Optional[float] = typer.Option(None, help="vLLM, SGLang, llama.cpp"),
    seed: Optional[int] = typer.Option(None),
    reasoning_effort: Optional[str] = typer.Option(None, help="minimal | low | medium | high (reasoning models)"),
    rollouts: Optional[int] = typer.Option(None, min=1, help="rollouts per sample"),
    tools: Optional[str] = typer.Option(None, help="comma-separated tool names"),
    box_convention: Optional[str] = typer.Option(None, help="absolute | relative_1000 | relative_1"),
    max_images: Optional[int] = typer.Option(None, help="cap on images per conversation (ref 0 included)"),
    max_pixels: Optional[int] = typer.Option(None, help="pixel cap of images sent to the teacher"),
    image_format: Optional[str] = typer.Option(None, help="jpeg | png"),
    jpeg_quality: Optional[int] = typer.Option(None),
    text_only: Optional[bool] = typer.Option(None, "--text-only/--with-images",
                                             help="a teacher that takes no images: send the words alone"),
    chunk_size: Optional[int] = typer.Option(None, min=1, help="samples per Prefect subflow"),
    refresh: bool = typer.Option(False, help="ignore cached results and generate again"),
    demo: bool = typer.Option(False, help="demo: make the synthetic dataset if missing and start the simulated teacher"),
) -> None:
    """Generate traces with the Prefect generation flow (on a temporary local Prefect server unless
    PREFECT_API_URL is set). One run at a time per output store."""
    from flows.server import start_early

    # The temporary Prefect server starts now, while this command reads and checks, and the run
    # takes it over; should the command end first, the parent-death signal stops it.
    start_early()

    from geodistil.cli.runfile import run_params
    from geodistil.errors import ConfigError, StoreError
    from geodistil.store import raise_if_locked

    flags = {
        "dataset": dataset, "output": output, "chunk_size": chunk_size, "refresh": refresh or None,
        "samples.start": start, "samples.num_samples": num_samples,
        "teacher.base_url": base_url, "teacher.model": model, "teacher.api_key_env": api_key_env,
        "teacher.profile": teacher_profile,
        "teacher.tool_style": tool_style, "teacher.timeout_s": timeout,
        "teacher.rpm": rpm, "teacher.tpm": tpm, "teacher.max_outage_s": max_outage,
        "teacher.price_input": price_input, "teacher.price_output": price_output,
        "teacher.max_cost_usd": max_cost, "teacher.max_tokens_total": max_tokens_total,
        "teacher.extra_body": _json_object("--extra-body", extra_body), "teacher.headers": _headers(header),
        "generation.max_turns": max_turns, "generation.max_tokens": max_tokens,
        "generation.temperature": temperature, "generation.top_p": top_p, "generation.top_k": top_k,
        "generation.repetition_penalty": repetition_penalty, "generation.seed": seed,
        "generation.reasoning_effort": reasoning_effort, "generation.rollouts_per_sample": rollouts,
        "generation.max_concurrency": max_concurrency,
        "tools.enabled": [t.strip() for t in tools.split(",") if t.strip()] if tools is not None else None,
        "tools.box_convention": box_convention, "tools.max_images": max_images,
        "image.max_pixels": max_pixels, "image.image_format": image_format, "image.jpeg_quality": jpeg_quality,
        "image.text_only": text_only,
    }
    with _demo_teacher(demo, dataset) as (dataset_path, sim_url):
        if demo:
            flags.update({"dataset": dataset_path, "teacher.base_url": sim_url})
        try:
            params = run_params(config, flags)
            if prices is not None:
                params["teacher"] = _priced_from_file(params["teacher"], prices)
        except ConfigError as exc:
            console.print(f"[red]{exc}[/red]", soft_wrap=True)
            raise typer.Exit(2) from None
        params["teacher"] = _teacher_without_url_credentials(params["teacher"])
        try:
            raise_if_locked(params["storage"].store())  # at once, before the run waits for its server; the flow takes the lock
            total = _planned_traces(params)  # the dataset and the range, before the teacher is asked anything
            _check_teacher(params)
            summary, failure = _run_with_progress(params, total)
        except StoreError as exc:  # another run holds the store, or it cannot be written (a full disk)
            console.print(escape(str(exc)), style="red", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except ConfigError as exc:  # e.g. the temporary Prefect server could not start
            fail(str(exc))
    _print_summary(summary)
    _print_failures(params["storage"])
    if failure:  # samples failed after retries, or the run stopped; the flow wrote every trace and the summary
        console.print(f"[red]{failure}[/red]", soft_wrap=True)
        if not summary.get("stopped"):
            console.print("run the same command again to generate only the failed samples")
        raise typer.Exit(1)
    console.print(f"traces in {params['storage'].url}")


def _priced_from_file(teacher: "TeacherConfig", path: Path) -> "TeacherConfig":
    """The teacher with its model's prices from a price file, where no flag set them already."""
    from geodistil.errors import ConfigError
    from geodistil.prices import price_of, read_price_file

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"price file {path}: {exc.strerror}") from None
    price = price_of(teacher.model, read_price_file(text))
    if price is None:
        raise ConfigError(f"price file {path} has no price for the model {teacher.model!r}")
    given = {"price_input": price.input, "price_output": price.output, "price_cached_input": price.cached_input}
    return teacher.model_copy(update={k: v for k, v in given.items() if getattr(teacher, k) is None})


def _json_object(flag: str, text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=flag) from None
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=flag)
    return value


def _headers(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected K=V, got {name.strip() or pair!r}", param_hint="--header")
        headers[name.strip()] = value
    return headers


def _teacher_without_url_credentials(teacher: "TeacherConfig") -> "TeacherConfig":
    """A base URL with credentials reaches the client through $OPENAI_BASE_URL instead of the flow's
    parameters, which Prefect stores in its database; traces and logs record it redacted."""
    from geodistil.redact import url_has_credentials

    if teacher.base_url is None or not url_has_credentials(teacher.base_url):
        return teacher
    os.environ["OPENAI_BASE_URL"] = teacher.base_url
    return teacher.model_copy(update={"base_url": None})


def _print_failures(storage: "StorageSpec", shown: int = 5) -> None:
    """The first failed samples with their errors, and where the full list is."""
    from geodistil.store import MANIFEST

    manifest = storage.store().read_manifest()
    failed = [row for row in (manifest.traces if manifest is not None else []) if not row.ok]
    print_problems("failed", [f"{row.name}: {row.error_kind}: {row.error}" for row in failed], shown)
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


def _check_teacher(params: dict) -> None:
    """Before any sample: a wrong URL, a rejected key or an unknown model ends the command in one line."""
    from geodistil.errors import TeacherError
    from geodistil.preflight import preflight
    from tasks.contexts import teacher_api_key

    async def check() -> None:
        await preflight(params["teacher"], api_key=await teacher_api_key(params["teacher"]))

    try:
        asyncio.run(check())
    except TeacherError as exc:
        fail(str(exc))


class _TeacherColumn(ProgressColumn):
    """The teacher's admission state (limit, 429s, rate, an outage), read at each refresh, so an
    outage shows while no sample finishes."""

    def render(self, task: object) -> Text:
        from geodistil.admission import controllers

        return Text("; ".join(a.status_line() for a in controllers()), style="dim")


def _run_with_progress(params: dict, total: int) -> tuple[dict, str | None]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.generation import collect_less_often, run_generation
    from tasks.generation import add_listener, remove_listener

    collect_less_often()  # this process runs one generation; the temporary server is still starting
    with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                  _TeacherColumn(), TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task("traces", total=total, status="")
        counts = {"ok": 0, "failed": 0}
        cost = {"usd": 0.0, "priced": False}

        def on_record(record) -> None:
            counts["ok" if record.ok else "failed"] += 1
            status = f"{counts['ok']} ok, {counts['failed']} failed"
            if record.cost_usd is not None:
                cost["usd"] += record.cost_usd
                cost["priced"] = True
            if cost["priced"]:  # the cost so far, and the run's at the mean so far
                done = counts["ok"] + counts["failed"]
                status += f", ${cost['usd']:.2f} (~${cost['usd'] / done * total:.2f} in all)"
            progress.update(bar, advance=1, status=status)

        add_listener(on_record)
        # per-task "Finished in state Completed" lines would bury the bar; the UI keeps every state
        logging.getLogger("prefect.task_runs").setLevel(logging.WARNING)
        try:
            return run_generation(**params)
        finally:
            remove_listener(on_record)


def _planned_traces(params: dict) -> int:
    """The traces the run will make. Bad input (a dataset that cannot be opened, a range that
    holds no sample) ends the command here, in one line, before any flow starts."""
    from geodistil.data import open_dataset
    from geodistil.errors import ConfigError

    samples = params["samples"]
    try:
        length = len(open_dataset(params["dataset"]))
        indices = samples.indices(length)
    except ConfigError as exc:
        fail(str(exc))
    if shortfall := samples.shortfall(length):
        warn(shortfall)
    return len(indices) * params["generation"].rollouts_per_sample


def _print_summary(summary: dict) -> None:
    table = Table(title="run summary", show_header=False)
    for key in ("total", "success", "failed", "parse_success", "parse_success_rate", "mean_distance_km",
                "median_distance_km", "mean_reward", "tool_calls", "mean_tool_calls"):
        value = summary.get(key)
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    table.add_row("tokens", f"{summary.get('prompt_tokens', 0)} prompt, {summary.get('completion_tokens', 0)} completion")
    if summary.get("cost_usd") is not None:  # a model with no price shows its tokens alone
        table.add_row("cost", f"${summary['cost_usd']:.4f}")
    for threshold, share in summary.get("accuracy", {}).items():
        table.add_row(f"accuracy @ {threshold}", f"{share:.1%}")
    if summary.get("error_kinds"):
        table.add_row("errors", json.dumps(summary["error_kinds"]))
    console.print(table)


@app.command("check-api")
def check_api(
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL (default $OPENAI_BASE_URL)"),
    model: str = typer.Option(..., help="model name"),
    api_key_env: Optional[str] = typer.Option(None, help="environment variable holding the API key "
                                                         "(default OPENAI_API_KEY)"),
    teacher_profile: Optional[str] = typer.Option(None, help="auto (default) | vllm | sglang | openai | "
                                                             "openai-reasoning | gemini | llama-cpp"),
    tool_style: Optional[str] = typer.Option(None, callback=_dialect,
                                             help="tool-call dialect: hermes | qwen3_xml | native (text = hermes); "
                                                  "default: the profile's"),
    max_tokens: int = typer.Option(1024, min=16, help="completion tokens for the probe request"),
    extra_body: Optional[str] = typer.Option(None, help="JSON object of more request parameters"),
    header: Optional[list[str]] = typer.Option(None, help="K=V extra HTTP header (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as one JSON object"),
) -> None:
    """Check a teacher endpoint: what server it is, one image request with tools, what came back, the flags to use."""
    from pydantic import ValidationError

    from geodistil.checkapi import check_api as run_check
    from geodistil.cli.runfile import secrets_to_env
    from geodistil.config import GenerationConfig, TeacherConfig

    given = {"base_url": base_url, "model": model, "api_key_env": api_key_env, "profile": teacher_profile,
             "tool_style": tool_style, "extra_body": _json_object("--extra-body", extra_body),
             "headers": _headers(header)}
    given = {k: v for k, v in given.items() if v is not None}
    if "extra_body" in given:
        given["extra_body"] = secrets_to_env(given["extra_body"], "BODY")
    if "headers" in given:
        given["headers"] = secrets_to_env(given["headers"], "HEADER")
    try:
        # one retry and a long timeout: a check should answer soon, and a cold server may be slow
        teacher = TeacherConfig(**given, max_retries=1, timeout_s=120)
        report = asyncio.run(run_check(teacher, GenerationConfig(max_tokens=max_tokens)))
    except ValidationError as exc:
        error = exc.errors()[0]
        console.print(f"[red]{'.'.join(map(str, error['loc']))}: {error['msg']}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(report))
    else:
        table = Table(title="teacher check", show_header=False)
        for key, value in report.items():
            if key != "verdict":
                table.add_row(key, str(value))
        console.print(table)
        console.print(report["verdict"], soft_wrap=True)
    if not report.get("ok"):
        raise typer.Exit(1)


@app.command("sandbox-check")
def sandbox_check() -> None:
    """Show which isolation layers of the python_code_tool sandbox are active on this machine."""
    from geodistil.sandbox import sandbox_check as check

    report = check()
    console.print(str(report))
    raise typer.Exit(0 if report.ok else 1)
