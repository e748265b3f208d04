"""The ``geodistil`` command: one Typer app, its commands in modules by what they work on.

This package is the application layer, the only part of ``geodistil/`` that may import
``flows``, ``tasks`` and ``prefect`` (``geodistil run`` runs the generation flow); the rest of
``geodistil/`` is the plain library and never imports this package. ``tests/test_layers.py``
holds both rules (docs/architecture.md).
"""

# each module registers its commands on the app; this order is the order of `geodistil --help`
from geodistil.cli import generate, traces, curate  # noqa: F401, I001
from geodistil.cli._app import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console script entry
    app()
