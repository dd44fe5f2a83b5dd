"""`saferoom datasets import / propose / history / gc`: a data owner's commands, run on the server's machine.

Offline: they read the owner's source and write the catalog directory; the running server picks up a new
version by itself (``saferoom.catalog.watch``), and records collected ones (``saferoom.server.versions``). What
they print about problems in the data (row numbers) is for the owner's terminal only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from saferoom.cli.jsonout import emit, json_option, to_data

__all__ = ["datasets_enterprises", "datasets_gc", "datasets_history", "datasets_import", "datasets_propose"]

console = Console()
err_console = Console(stderr=True)

_source_options = [
    click.option("--query", help="SQL sources: the query whose rows are the dataset."),
    click.option("--table", "table_name", help="SQL sources: the table whose rows are the dataset."),
]


def _with_source_options(fn: Any) -> Any:
    for option in reversed(_source_options):
        fn = option(fn)
    return fn


@click.command("import")
@click.argument("source")
@click.option("--declare", "declaration", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--catalog", "catalog_dir", type=click.Path(path_type=Path), required=True, help="Catalog directory.")
@_with_source_options
@click.option("--clamp", is_flag=True, help="Move values outside the declared bounds to the bound (reported).")
@click.option("--drop-invalid", is_flag=True, help="Drop rows the declaration does not allow (reported).")
@click.option("--location", help="Spark datasets: how the cluster names the catalog's parquet/ directory.")
def datasets_import(
    source: str,
    declaration: Path,
    catalog_dir: Path,
    query: str | None,
    table_name: str | None,
    clamp: bool,
    drop_invalid: bool,
    location: str | None,
) -> None:
    """Check SOURCE (CSV, Parquet, JSON Lines, Arrow, sqlite:///db, postgresql://...) against a declaration and
    publish it as a new version of the dataset in the catalog directory."""
    from saferoom.importer import ImportRefused, import_dataset

    with Progress(
        TextColumn("importing"),
        BarColumn(),
        TextColumn("{task.fields[done]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=not err_console.is_terminal,
    ) as progress:
        task = progress.add_task("import", total=None, done="")

        def report(done: int, total: int | None, unit: str) -> None:
            label = f"{done / 2**20:,.0f} MiB" if unit == "bytes" else f"{done:,} rows"
            progress.update(task, completed=done, total=total, done=label)

        try:
            result = import_dataset(
                source,
                declaration,
                catalog_dir,
                query=query,
                table=table_name,
                clamp=clamp,
                drop_invalid=drop_invalid,
                location=location,
                progress=report,
            )
        except ImportRefused as exc:
            progress.stop()
            if exc.report is not None:
                for line in exc.report.lines():
                    click.echo(f"  {line}", err=True)
            raise
    for line in result.report.lines():
        err_console.print(f"  {line}")
    console.print(
        f"published {result.info.name} version {result.version.version[:16]} "
        f"({result.version.rows:,} rows, {result.version.file}) in {catalog_dir}"
    )


@click.command("propose")
@click.argument("source")
@click.option("--name", required=True, help="The dataset's name in the catalog.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Declaration file to write.")
@_with_source_options
def datasets_propose(source: str, name: str, out: Path, query: str | None, table_name: str | None) -> None:
    """Write a draft declaration for SOURCE; every value taken from the data is marked FROM DATA."""
    from saferoom.importer import WARNING, propose_declaration

    if out.exists():
        raise click.UsageError(f"{out} exists: choose another file")
    out.write_text(propose_declaration(source, name, query=query, table=table_name), encoding="utf-8")
    err_console.print(f"[yellow]warning:[/] {WARNING}")
    console.print(f"wrote a draft declaration to {out}: edit it, then `saferoom datasets import`")


@click.command("history")
@click.argument("name")
@click.option("--catalog", "catalog_dir", type=click.Path(path_type=Path, exists=True), required=True)
@json_option
def datasets_history(name: str, catalog_dir: Path, as_json: bool) -> None:
    """Every version NAME has had in the catalog directory (the current one marked)."""
    from saferoom.catalog.manifest import Manifest
    from saferoom.errors import NotFound
    from saferoom.importer import history

    versions = history(catalog_dir, name)
    if not versions:
        raise NotFound(f"no imported versions of {name!r} in {catalog_dir}")
    current = Manifest.load(catalog_dir).datasets.get(name)
    if as_json:
        emit([{**to_data(v), "current": current is not None and current.version == v.version} for v in versions])
        return
    click.echo("  version           imported at          rows  declaration   source")
    for v in versions:
        mark = "*" if current is not None and current.version == v.version else "-" if v.collected_at else " "
        handled = [f"{n} dropped" for n in [v.report.get("dropped")] if n]
        handled += [f"{c} clamped {n}x" for c, n in (v.report.get("clamped") or {}).items()]
        click.echo(
            f"{mark} {v.version[:16]}  {v.imported_at[:19]}  {v.rows:>10,}  {v.declaration_hash[:12]}  {v.source}"
            + (f"  ({', '.join(handled)})" if handled else "")
            + (f"  [collected {v.collected_at[:19]}]" if v.collected_at else "")
        )
    if any(v.collected_at for v in versions):
        click.echo("(* current, - collected: its file is deleted)")


@click.command("gc")
@click.option("--catalog", "catalog_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option(
    "--state",
    "state_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="The server's state directory: which unfinished jobs read which versions.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, and delete nothing.")
@click.option(
    "--keep",
    type=click.IntRange(0, 1000),
    default=1,
    show_default=True,
    help="Earlier versions of each dataset kept for rollback (the server keeps dataset_versions_kept).",
)
@json_option
def datasets_gc(catalog_dir: Path, state_dir: Path, dry_run: bool, keep: int, as_json: bool) -> None:
    """Delete the old dataset versions nothing refers to any more, and say why each other version is kept."""
    import functools

    from saferoom.errors import NotFound
    from saferoom.importer import collect
    from saferoom.jobs.state import UNFINISHED_STATES
    from saferoom.store import Database, JobStore

    if not (state_dir / "saferoom.db").exists():
        raise NotFound(f"no server state in {state_dir} (saferoom.db): name the server's --state directory")
    database = Database.open(state_dir / "saferoom.db")
    try:
        in_use = functools.partial(JobStore(database).versions_read, UNFINISHED_STATES)
        decisions = collect(catalog_dir, in_use, keep=keep, dry_run=dry_run)
    finally:
        database.close()
    if as_json:
        emit(
            {"dry_run": dry_run, "keep": keep, "versions": [{**to_data(d), "why": d.describe(keep)} for d in decisions]}
        )
        return
    verb = "would delete" if dry_run else "deleted"
    for d in decisions:
        what = f"{d.dataset} {d.version[:16]}  {d.file}"
        click.echo(
            f"{verb:<12}  {what}: {d.describe(keep)}" if d.collected else f"{'kept':<12}  {what}: {d.describe(keep)}"
        )
    gone = sum(d.collected for d in decisions)
    click.echo(f"{verb} {gone} version{'s' if gone != 1 else ''}, kept {len(decisions) - gone}")


@click.command("enterprises")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the CSV files.")
@click.option("--enterprises", type=click.IntRange(100, 10_000_000), default=20_000, show_default=True)
@click.option("--seed", type=int, default=11, show_default=True)
def datasets_enterprises(out: Path, enterprises: int, seed: int) -> None:
    """Write synthetic enterprise registers as CSV (the credit-profile use case), ready to import."""
    from saferoom.catalog.enterprises import DECLARATIONS, generate_enterprises

    for path in generate_enterprises(out, enterprises=enterprises, seed=seed):
        console.print(f"wrote {path}; import it with")
        declaration = DECLARATIONS / f"{path.stem}.toml"
        console.print(f"  saferoom datasets import {path} --declare {declaration} --catalog DIR")
