"""Curation commands: stats, filter, split, export; each the plain library call or, with
``--prefect``, its Prefect flow."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Optional, get_args, get_origin

import typer
from pydantic import ValidationError
from rich.table import Table

from geodistil.cli._app import app, console, fail, print_problems, storage_spec
from geodistil.curate import FilterConfig  # the filter command's options are read from its rule table
from geodistil.export_formats import FORMATS
from geodistil.store import REJECTED, REPORT, SUMMARY


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
    print_problems("skipped", summary.get("unreadable_traces", []))


@app.command("stats")
def stats(
    output: str = typer.Argument(..., help="trace folder or s3://bucket/prefix (or a split folder)"),
    difficulty_from: Optional[str] = typer.Option(None, help="split folder whose ratings bucket these traces"),
    report: bool = typer.Option(True, "--report/--no-report", help="also write report.html"),
    use_prefect: bool = typer.Option(False, "--prefect", help="run as the Prefect flow (shows in the UI)"),
) -> None:
    """Summarise a trace store: prints a table, writes summary.json and report.html into it."""
    from geodistil.curate import read_difficulty
    from geodistil.stats import run_aggregate

    spec = storage_spec(output)
    source = storage_spec(difficulty_from) if difficulty_from else None
    summary = _stage(use_prefect, "aggregate_flow",
                     lambda: run_aggregate(spec.store(), read_difficulty(source.store()) if source else None, report),
                     storage=spec, difficulty_from=source, report=report)
    _print_stats(summary)
    console.print(f"wrote {output.rstrip('/')}/{SUMMARY}" + (f" and {output.rstrip('/')}/{REPORT}" if report else ""))


def _base_type(annotation: Any) -> Any:
    """``float`` of ``float | None``; the type itself otherwise."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if type(None) in get_args(annotation) and len(args) == 1 else annotation


def _check_choices(flag: str, choices: tuple[str, ...]) -> Callable[[list[str]], list[str]]:
    def check(values: list[str]) -> list[str]:
        unknown = [v for v in values if v not in choices]
        if unknown:
            raise typer.BadParameter(f"unknown {flag.replace('-', ' ')} {unknown[0]!r}; known: {', '.join(choices)}")
        return values
    return check


def _options(key: str, setting: Any) -> list[inspect.Parameter]:
    """The CLI option(s) of one filter setting (see ``geodistil.curate.Setting``)."""
    flag, base = setting.cli or key.replace("_", "-"), _base_type(setting.type)
    if base is bool:
        default = not setting.default if setting.inverted else setting.default
        help = setting.cli_help or setting.help
        option, annotation = typer.Option(default, f"--{flag}/--no-{flag}", help=help), bool
    elif get_origin(base) is tuple:
        check = _check_choices(flag, setting.choices) if setting.choices else None
        option = typer.Option([], f"--{flag}", help=f"{setting.help} (repeatable)", callback=check)
        annotation = list[str]
    else:
        option = typer.Option(setting.default, f"--{flag}", min=setting.ge, max=setting.le, help=setting.help)
        annotation = Optional[base] if base is not setting.type else base
    params = [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)]
    if setting.off:
        off = typer.Option(False, f"--{setting.off}", help=setting.off_help)
        params.append(inspect.Parameter(f"{key}__off", inspect.Parameter.KEYWORD_ONLY, default=off, annotation=bool))
    return params


def _config_of(model: Any, options: dict[str, Any]) -> Any:
    """The filter config the CLI options ask for (a repeatable option given no value keeps its default)."""
    values: dict[str, Any] = {}
    for rule in model.rules:
        for key, setting in rule.SETTINGS.items():
            value = options[key]
            if setting.off and options[f"{key}__off"]:
                value = None
            elif _base_type(setting.type) is bool and setting.inverted:
                value = not value
            elif isinstance(value, list):
                if not value:
                    continue
                value = tuple(value)
            values[key] = value
    try:
        return model(**values)
    except ValidationError as exc:
        fail("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()))


def filter_command(model: Any) -> Callable[..., None]:
    """The ``filter`` command for a filter config model: one option per setting of its rule table."""

    def filter_(output: str, dest: str, use_prefect: bool = False, **options: Any) -> None:
        """Copy the traces that pass the quality rules; writes filter.json and rejected.jsonl beside them."""
        from geodistil.curate import run_filter

        config = _config_of(model, options)
        src, out = storage_spec(output), storage_spec(dest)
        manifest = _stage(use_prefect, "filter_flow", lambda: run_filter(src.store(), out.store(), config),
                          source=src, dest=out, config=config)
        table = Table(title=f"kept {manifest['kept']} of {manifest['total']} traces", title_justify="left")
        table.add_column("removed by")
        table.add_column("traces", justify="right")
        for rule, count in manifest["removed"].items():
            table.add_row(rule, str(count))
        console.print(table)
        console.print(f"kept traces in {dest}; every rejected trace and its reason in "
                      f"{dest.rstrip('/')}/{REJECTED}")

    params = [
        inspect.Parameter("output", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                          default=typer.Argument(..., help="trace folder or s3:// prefix to read")),
        inspect.Parameter("dest", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                          default=typer.Argument(..., help="folder or s3:// prefix for the kept traces")),
        *(p for rule in model.rules for key, setting in rule.SETTINGS.items() for p in _options(key, setting)),
        inspect.Parameter("use_prefect", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--prefect", help="run as the Prefect flow (shows in the UI)")),
    ]
    filter_.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    filter_.__annotations__ = {p.name: p.annotation for p in params}
    return filter_


app.command("filter")(filter_command(FilterConfig))


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
    src, out = storage_spec(output), storage_spec(dest)
    rater = storage_spec(difficulty_from) if difficulty_from else None
    manifest = _stage(use_prefect, "split_flow",
                      lambda: run_split(src.store(), out.store(), config, rater.store() if rater else None),
                      source=src, dest=out, config=config, difficulty_source=rater)
    table = Table(title=f"split of {manifest['total']} traces", title_justify="left")
    for column in ("difficulty", "samples", "traces"):
        table.add_column(column, justify="left" if column == "difficulty" else "right")
    for bucket, count in manifest["counts"].items():
        table.add_row(bucket, str(count["samples"]), str(count["traces"]))
    console.print(table)
    print_problems("skipped", manifest["unreadable_traces"])


@app.command("export")
def export(
    output: str = typer.Argument(..., help="trace folder or s3:// prefix to export"),
    dest: str = typer.Argument(..., help="folder or s3:// prefix for the training data"),
    format: str = typer.Option("hf", "--format", help=" | ".join(f"{f.name} ({f.help})" for f in FORMATS.values())),
    include_reasoning: bool = typer.Option(False, help="keep the teacher's reasoning in <think>...</think>"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="load the export back and check every image"),
    dataset: Optional[str] = typer.Option(None, help="dataset to replay images from (default: the traces' own)"),
    use_prefect: bool = typer.Option(False, "--prefect", help="run as the Prefect flow (shows in the UI)"),
) -> None:
    """Write SFT-ready data with every image rebuilt by replay and checked against its hash."""
    from geodistil.data import DatasetSpec, open_dataset
    from geodistil.errors import ConfigError
    from geodistil.export import ExportConfig, run_export

    if format not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    if dataset:  # a dataset given by hand is checked once, not found wanting by every trace
        try:
            open_dataset(DatasetSpec(path=dataset))
        except ConfigError as exc:
            fail(str(exc))
    config = ExportConfig(format=format, include_reasoning=include_reasoning, verify=verify,
                          dataset=DatasetSpec(path=dataset) if dataset else None)
    src, out = storage_spec(output), storage_spec(dest)
    manifest = _stage(use_prefect, "export_flow", lambda: run_export(src.store(), out.store(), config),
                      source=src, dest=out, config=config)
    print_problems("skipped", manifest["skipped_traces"])
    check = manifest.get("verification")
    status = "not verified" if check is None else ("verified" if check["ok"] else "[red]verification failed[/red]")
    console.print(f"exported {manifest['rows']} rows ({manifest['skipped']} traces skipped) to {dest}: {status}",
                  soft_wrap=True)
    if check is not None and not check["ok"]:
        raise typer.Exit(1)
