"""`saferoom demo`: the whole flow on the embedded default, in one command."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pyarrow as pa
from rich.console import Console
from rich.table import Table

from saferoom.cli.render import describe_report, print_result
from saferoom.client import Client
from saferoom.config import ServerConfig

__all__ = ["run_demo"]


def run_demo(console: Console, scale: int = 200_000, top: int = 10) -> None:
    """Generate a city, start a server on a free loopback port, run site selection over gRPC, shut down."""
    from saferoom.catalog import generate_catalog
    from saferoom.server import create_server

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="saferoom-demo-") as tmp:
        data, state = Path(tmp) / "data", Path(tmp) / "state"
        console.rule("1. The data holder generates a synthetic city")
        manifest = generate_catalog(data, scale=scale, seed=7)
        for info in manifest.datasets.values():
            console.print(f"  {info.name:<22} {info.sensitivity:<9} {info.rows:>10,} rows")

        console.rule("2. The server starts on loopback (datasets memory-mapped in the engine workers)")
        config = ServerConfig.load(env={}, data_dir=data, state_dir=state, listen="127.0.0.1:0")
        server, port = create_server(config)
        try:
            with Client(f"127.0.0.1:{port}", timeout=120) as client:
                console.print(
                    f"  listening on 127.0.0.1:{port}; packages: "
                    + ", ".join(f"{p.name}@{p.version}" for p in client.list_packages())
                )

                console.rule("3. A researcher runs site selection over gRPC: the code never sees a row")
                job = client.run_job("site-selection", {"top": top})
                for update in client.watch_job(job.id, timeout=300):
                    console.print(f"  job {update.id[:8]} {update.state}")
                if client.get_job(job.id).state != "succeeded":
                    final = client.get_job(job.id)
                    raise SystemExit(f"the demo job failed: {final.error_code}: {final.error_message}")
                result = client.get_result(job.id)

                console.rule("4. What was released (aggregates only, small cells suppressed)")
                candidates = result.output("candidates")
                if candidates.table is not None:
                    console.print(_candidates_table(candidates.table, top))
                    console.print(f"  [dim]release: {describe_report(candidates)}[/dim]")
                others = [o for o in result.outputs if o.name != "candidates"]
                if others:
                    print_result(console, type(result)(result.job_id, others, result.printed))

                console.rule("5. A second vetted package: the population profile by district")
                profile = client.run_job("population-profile")
                final = client.wait(profile.id, timeout=300)
                if final.state != "succeeded":
                    raise SystemExit(f"the demo job failed: {final.error_code}: {final.error_message}")
                print_result(console, client.get_result(profile.id), limit=12)
        finally:
            server.stop()
    console.rule(f"done in {time.perf_counter() - started:.1f} s")


def _candidates_table(table: pa.Table, top: int) -> Table:
    """The released candidate cells for a person: centre, score, and the factors behind it (income: median
    adult income; stores: existing stores in the cell and its neighbours)."""
    out = Table(title=f"Top {top} candidate cells", title_justify="left", header_style="bold")
    columns = [
        ("#", "right"), ("lat", "right"), ("lon", "right"), ("score", "right"), ("adults", "right"),
        ("income", "right"), ("price/m2", "right"), ("stops", "right"), ("stores", "right"),
    ]  # fmt: skip
    for name, justify in columns:
        out.add_column(name, justify=justify)  # type: ignore[arg-type]
    for rank, row in enumerate(table.to_pylist(), start=1):
        out.add_row(
            str(rank),
            f"{row['lat']:.4f}",
            f"{row['lon']:.4f}",
            f"{row['score']:.3f}",
            f"{row['adults']:,}",
            f"{row['income']:,.0f}",
            f"{row['price_m2']:,.0f}",
            str(row["stops"]),
            str(row["stores_nearby"]),
        )
    return out
