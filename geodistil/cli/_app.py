"""The ``geodistil`` Typer app and what its commands share: the console, storage options."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from geodistil.store import StorageSpec

# Prefect's ephemeral API starts a server process on first use; 20 s is too short on a busy 2-core box
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
if not os.environ.get("PREFECT_API_URL"):
    # the temporary server is stopped while its event recorder still flushes, and prints a
    # CancelledError traceback after every successful run; the run's own logs are unaffected
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Distil think-with-images geolocation traces from a teacher VLM.")
console = Console()


def storage_options_from_env(url: str) -> dict | None:
    """S3 endpoint from the environment (credentials stay there, never in parameters)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if url.startswith("s3://") and endpoint:
        return {"endpoint_url": endpoint}
    return None


def storage_spec(url: str) -> "StorageSpec":
    from geodistil.store import StorageSpec

    return StorageSpec(url=url, storage_options=storage_options_from_env(url))


def fail(problem: str) -> NoReturn:
    """End the command on bad input: one line on stderr saying what is wrong and what to do, no traceback."""
    typer.echo(f"error: {problem}", err=True)
    raise typer.Exit(2)


def warn(message: str) -> None:
    """One line on stderr (never wrapped, unlike the console's output) for something the user should know."""
    typer.echo(f"warning: {message}", err=True)


def print_problems(label: str, problems: list[str], shown: int = 20) -> None:
    """The first ``shown`` problems, one line each (each names its trace), and how many more."""
    for problem in problems[:shown]:
        console.print(f"[yellow]{label}[/yellow] {escape(problem)}", soft_wrap=True)
    if len(problems) > shown:
        console.print(f"... and {len(problems) - shown} more")
