"""The `saferoom` command."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from saferoom import __version__
from saferoom.errors import SaferoomError

__all__ = ["main"]

DEFAULT_SERVER = "127.0.0.1:50051"
console = Console()
err_console = Console(stderr=True)


def _fail(exc: SaferoomError) -> None:
    click.echo(f"error ({exc.code}): {exc.message}", err=True)  # one line, never wrapped
    sys.exit(1)


class _Group(click.Group):
    """Turns domain errors into a one-line message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SaferoomError as exc:
            _fail(exc)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="saferoom")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def cli(verbose: bool) -> None:
    """saferoom: run approved algorithms over data they never see; only aggregates leave."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


server_option = click.option(
    "--server",
    default=lambda: os.environ.get("SAFEROOM_SERVER", DEFAULT_SERVER),
    show_default=f"$SAFEROOM_SERVER or {DEFAULT_SERVER}",
    help="Server address host:port.",
)


def _params(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        out[name] = value
    return out


# ------------------------------------------------------------------ serve


@cli.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="Catalog directory (catalog.json).")
@click.option("--state", "state_dir", type=click.Path(path_type=Path), help="State directory (SQLite).")
@click.option("--listen", help="host:port to listen on (port 0: any free port).")
@click.option("--algorithms", "algorithms_dir", type=click.Path(path_type=Path), help="Vetted packages.")
@click.option("--workers", "max_concurrent_jobs", type=int, help="Jobs running at once.")
@click.option("--config", "config_file", type=click.Path(path_type=Path, exists=True), help="TOML config file.")
def serve(config_file: Path | None, **overrides: Any) -> None:
    """Start the gRPC server."""
    from saferoom.config import ServerConfig
    from saferoom.server import create_server

    config = ServerConfig.load(config_file, **overrides)
    server, port = create_server(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"saferoom listening on {config.listen.rsplit(':', 1)[0]}:{port}", highlight=False)
    stop.wait()
    server.stop(config.grace_seconds)


# ------------------------------------------------------------------ datasets


@cli.group()
def datasets() -> None:
    """Generate catalogs; list, describe and download mock data from a server."""


@datasets.command("generate")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory to write.")
@click.option(
    "--scale",
    type=click.IntRange(1_000, 200_000_000),
    default=1_000_000,
    show_default=True,
    help="Persons in the population dataset.",
)
@click.option("--seed", type=int, default=7, show_default=True)
def datasets_generate(out: Path, scale: int, seed: int) -> None:
    """Write a deterministic synthetic catalog of a Xiamen-like city."""
    from saferoom.catalog import generate_catalog

    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=err_console,
    ) as progress:
        tasks: dict[str, Any] = {}

        def report(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        manifest = generate_catalog(out, scale=scale, seed=seed, progress=report)
    rows = sum(d.rows for d in manifest.datasets.values())
    console.print(
        f"wrote {len(manifest.datasets)} datasets ({rows:,} rows) to {out} in {time.perf_counter() - started:.1f} s"
    )


@datasets.command("list")
@server_option
def datasets_list(server: str) -> None:
    """List the server's datasets."""
    from saferoom.cli.render import print_datasets
    from saferoom.client import Client

    with Client(server) as client:
        print_datasets(console, client.list_datasets())


@datasets.command("describe")
@click.argument("name")
@server_option
def datasets_describe(name: str, server: str) -> None:
    """Show a dataset's columns, domains and release policy."""
    from saferoom.cli.render import print_dataset
    from saferoom.client import Client

    with Client(server) as client:
        print_dataset(console, client.describe_dataset(name))


@datasets.command("mock")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the mock catalog.")
@click.option("--rows", type=click.IntRange(0, 100_000), default=0, help="Rows per dataset (0: server default).")
@click.option("--seed", type=int, default=0)
@server_option
def datasets_mock(out: Path, rows: int, seed: int, server: str) -> None:
    """Download mock copies of every dataset into a catalog directory for `saferoom dev run`."""
    from saferoom.catalog.download import write_downloaded_catalog
    from saferoom.client import Client

    with Client(server, timeout=300) as client:
        infos = client.list_datasets()
        tables = {info.name: client.download_mock(info.name, rows=rows, seed=seed)[1] for info in infos}
    write_downloaded_catalog(out, infos, tables)
    console.print(f"wrote mock data for {len(infos)} datasets to {out}")


# ------------------------------------------------------------------ packages


@cli.group()
def packages() -> None:
    """The algorithm packages a server runs."""


@packages.command("list")
@server_option
def packages_list(server: str) -> None:
    """List runnable packages."""
    from rich.table import Table

    from saferoom.client import Client

    with Client(server) as client:
        table = Table(header_style="bold")
        for column in ("name", "version", "hash", "datasets", "parameters"):
            table.add_column(column)
        for p in client.list_packages():
            table.add_row(p.name, p.version, p.hash[:12], ", ".join(p.datasets), ", ".join(p.parameters))
        console.print(table)


# ------------------------------------------------------------------ jobs


@cli.group()
def jobs() -> None:
    """Run jobs on a server and fetch their released results."""


@jobs.command("run")
@click.argument("package")
@click.option("--param", "-p", "params", multiple=True, help="NAME=VALUE (repeatable).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait and print the result.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@server_option
def jobs_run(package: str, params: tuple[str, ...], wait: bool, as_json: bool, server: str) -> None:
    """Run PACKAGE (hash, name@version or name) with parameters."""
    from saferoom.cli.render import print_job, print_result, result_to_json
    from saferoom.client import Client
    from saferoom.packages import parse_param_value

    with Client(server) as client:
        summary = client.get_package(package)
        typed = {}
        for name, text in _params(params).items():
            spec = summary.parameters.get(name)
            typed[name] = parse_param_value(spec["type"], text, name) if spec else text
        job = client.run_job(summary.hash, typed)
        if not wait:
            print_job(console, job)
            return
        job = client.wait(job.id)
        if job.state != "succeeded":
            print_job(err_console, job)
            sys.exit(1)
        result = client.get_result(job.id)
        if as_json:
            click.echo(result_to_json(result))
        else:
            print_job(console, job)
            print_result(console, result)


@jobs.command("get")
@click.argument("job_id")
@server_option
def jobs_get(job_id: str, server: str) -> None:
    """Show a job."""
    from saferoom.cli.render import print_job
    from saferoom.client import Client

    with Client(server) as client:
        print_job(console, client.get_job(job_id))


@jobs.command("watch")
@click.argument("job_id")
@server_option
def jobs_watch(job_id: str, server: str) -> None:
    """Follow a job's state changes until it ends."""
    from saferoom.cli.render import print_job
    from saferoom.client import Client

    with Client(server) as client:
        for job in client.watch_job(job_id):
            print_job(console, job)


@jobs.command("cancel")
@click.argument("job_id")
@server_option
def jobs_cancel(job_id: str, server: str) -> None:
    """Cancel a queued or running job."""
    from saferoom.cli.render import print_job
    from saferoom.client import Client

    with Client(server) as client:
        print_job(console, client.cancel_job(job_id))


@jobs.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@server_option
def jobs_list(limit: int, server: str) -> None:
    """List recent jobs, newest first."""
    from saferoom.cli.render import print_job
    from saferoom.client import Client

    with Client(server) as client:
        for job in client.list_jobs(page_size=limit)[0]:
            print_job(console, job)


@jobs.command("result")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@server_option
def jobs_result(job_id: str, as_json: bool, server: str) -> None:
    """Print a finished job's released result."""
    from saferoom.cli.render import print_result, result_to_json
    from saferoom.client import Client

    with Client(server) as client:
        result = client.get_result(job_id)
    if as_json:
        click.echo(result_to_json(result))
    else:
        print_result(console, result)


# ------------------------------------------------------------------ dev


@cli.group()
def dev() -> None:
    """Develop algorithms locally, in the same sandbox and release rules as the server."""


@dev.command("run")
@click.argument("package_dir", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="Catalog directory (e.g. from `saferoom datasets mock`).",
)
@click.option("--param", "-p", "params", multiple=True, help="NAME=VALUE (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def dev_run(package_dir: Path, data_dir: Path, params: tuple[str, ...], as_json: bool) -> None:
    """Run the package in PACKAGE_DIR on local data and print what would be released."""
    from saferoom.cli.render import outcome_to_result, print_result, result_to_json
    from saferoom.jobs.local import run_local

    result = outcome_to_result(run_local(package_dir, data_dir, _params(params)))
    if as_json:
        click.echo(result_to_json(result))
    else:
        print_result(console, result)


# ------------------------------------------------------------------ demo


@cli.command()
@click.option(
    "--scale",
    type=click.IntRange(1_000, 10_000_000),
    default=200_000,
    show_default=True,
    help="Persons in the generated city.",
)
@click.option("--top", type=click.IntRange(1, 100), default=10, show_default=True)
def demo(scale: int, top: int) -> None:
    """Generate a city, serve it on loopback, run site selection over gRPC, print what was released."""
    from saferoom.cli.demo import run_demo

    run_demo(console, scale=scale, top=top)


def main() -> None:
    """Console entry point."""
    cli(prog_name="saferoom")


if __name__ == "__main__":
    main()
