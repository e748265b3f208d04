"""The ``geodistil`` command: one Typer app, its commands in modules by what they work on."""

# each module registers its commands on the app; this order is the order of `geodistil --help`
from geodistil.cli import generate, traces, curate  # noqa: F401, I001
from geodistil.cli._app import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console script entry
    app()
