"""Commands that look at a trace store: replay (verify every image) and view (the web viewer)."""

from __future__ import annotations

from typing import Optional

import typer

from geodistil.cli._app import app, console, print_problems, storage_spec, storage_options_from_env


@app.command("replay")
def replay(
    output: str = typer.Argument(..., help="trace folder or s3://bucket/prefix"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="compare every rebuilt image's sha256"),
) -> None:
    """Rebuild every image of every trace from the dataset and the tool log."""
    from geodistil.replay import verify_store

    summary = verify_store(storage_spec(output).store())
    print_problems("failed", summary.failures)
    console.print(f"verified {summary.verified} traces and {summary.images} images ({summary.skipped} error traces "
                  f"without images, {summary.failed} failed, {summary.unreadable} unreadable)", soft_wrap=True)
    if verify and not summary.ok:
        raise typer.Exit(1)


def _host_names(names: list[str]) -> list[str]:
    """The names as a Host header spells them; a URL or a name with a port is a bad parameter."""
    from geodistil.viewer.hosts import host_name

    try:
        return [host_name(name) for name in names]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _listen_address(host: str) -> str:
    """``--host`` as given (uvicorn wants IPv6 without brackets), once it is known to be a name or an address."""
    _host_names([host])
    return host


@app.command("view")
def view(
    output: str = typer.Argument(..., help="trace folder or s3://bucket/prefix"),
    port: int = typer.Option(8765, "--port", "-p", min=1, max=65535),
    host: str = typer.Option("127.0.0.1", callback=_listen_address,
                             help="interface to listen on (the default keeps it on this machine)"),
    dataset: Optional[str] = typer.Option(None, help="dataset to replay images from (default: the traces' own)"),
    allowed_host: list[str] = typer.Option(
        [], "--allowed-host", callback=_host_names, metavar="NAME",
        help="another name the page is opened by, e.g. this machine's (repeatable); --host and the loopback "
             "names are always answered, any other Host gets a 400 (no DNS rebinding)"),
) -> None:
    """Serve a web page over a trace store: the list, each conversation, its images and a world map."""
    from geodistil.viewer import serve

    serve(output, host=host, port=port, dataset=dataset, storage_options=storage_options_from_env(output),
          allowed_hosts=allowed_host)
