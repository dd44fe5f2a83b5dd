"""`saferoom demo`: the whole flow on the embedded default, in one command."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pyarrow as pa
from rich.console import Console
from rich.table import Table

from saferoom.cli.render import describe_report, print_audit_records, print_result
from saferoom.client import Client
from saferoom.config import ServerConfig
from saferoom.errors import SaferoomError
from saferoom.packages import default_algorithms_dir

__all__ = ["run_demo"]


def run_demo(console: Console, scale: int = 200_000, top: int = 10) -> None:
    """Generate a city, set up identities, start a mutual-TLS server on a free loopback port, and walk the
    whole flow over gRPC: a researcher submits, an operator approves (signs), the researcher runs."""
    from saferoom.catalog import generate_catalog
    from saferoom.identity import init_authority, issue_identity
    from saferoom.server import create_server

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="saferoom-demo-") as tmp:
        data, state, pki = Path(tmp) / "data", Path(tmp) / "state", Path(tmp) / "pki"
        console.rule("1. The data holder generates a synthetic city")
        manifest = generate_catalog(data, scale=scale, seed=7)
        for info in manifest.datasets.values():
            console.print(f"  {info.name:<22} {info.sensitivity:<9} {info.rows:>10,} rows")
        _import_enterprises(console, Path(tmp), data, max(1_000, scale // 20))

        console.rule("2. A certificate authority issues four identities (mutual TLS, roles in the certificate)")
        init_authority(pki)
        people = {"lin": "researcher", "chen": "operator", "wang": "output_checker", "zhou": "auditor"}
        profiles = {name: issue_identity(pki, name, role).profile for name, role in people.items()}
        for name, role in people.items():
            console.print(f"  {name:<6} {role}")

        console.rule("3. The server starts on loopback (TLS only; datasets memory-mapped in the engine workers)")
        config = ServerConfig.load(env={}, data_dir=data, state_dir=state, pki_dir=pki, listen="127.0.0.1:0")
        server, port = create_server(config)
        address = f"127.0.0.1:{port}"
        try:
            with (
                Client.from_profile(profiles["lin"], server=address, timeout=120) as researcher,
                Client.from_profile(profiles["chen"], server=address, timeout=120) as operator,
                Client.from_profile(profiles["zhou"], server=address, timeout=120) as auditor,
            ):
                console.rule("4. Researcher lin submits three algorithm packages")
                hashes = {}
                for directory in ("site_selection", "population_profile", "credit_profile"):
                    summary, _ = researcher.submit_package(default_algorithms_dir() / directory)
                    hashes[summary.name] = summary.hash
                    console.print(f"  {summary.name}@{summary.version} {summary.hash[:12]} {summary.status}")
                try:
                    researcher.run_job("site-selection")
                except SaferoomError as exc:
                    console.print(f"  running it before review is refused: [red]{exc.code}[/red]: {exc.message}")

                console.rule("5. Operator chen reviews and approves (an Ed25519 signature over the hash)")
                for pending in operator.list_pending():
                    reviewed = operator.review_package(pending.hash)
                    console.print(
                        f"  {pending.name}: {len(reviewed.files)} files, {len(reviewed.diff.splitlines())} diff lines"
                    )
                    approved = operator.approve_package(pending.hash, days=30)
                    console.print(f"  {approved.name}: {approved.status} ({approved.status_reason})")
                try:
                    auditor.list_jobs()
                except SaferoomError as exc:
                    console.print(f"  auditor zhou may not read jobs: [red]{exc.code}[/red]")
                # Personal datasets release only differentially private results: every run spends budget.
                budgets = (
                    ("population", 2.0),
                    ("housing_transactions", 1.0),
                    ("enterprises", 1.0),
                    ("enterprise_years", 2.0),
                )
                for dataset, epsilon in budgets:
                    budget = operator.set_budget("lin", dataset, epsilon=epsilon)
                    console.print(
                        f"  privacy budget of lin on {dataset}: epsilon {budget.epsilon_total:g}, "
                        f"delta {budget.delta_total:g}"
                    )

                _mock_dev_run(console, operator, researcher, Path(tmp) / "mock", top)

                console.rule("6. Researcher lin runs site selection over gRPC: the code never sees a row")
                job = researcher.run_job(hashes["site-selection"], {"top": top})
                for update in researcher.watch_job(job.id, timeout=300):
                    console.print(f"  job {update.id[:8]} {update.state}")
                final = researcher.get_job(job.id)
                if final.state != "succeeded":
                    raise SystemExit(f"the demo job failed: {final.error_code}: {final.error_message}")
                result = researcher.get_result(job.id)

                console.rule("7. What was released (noisy aggregates only: differential privacy on personal data)")
                candidates = result.output("candidates")
                if candidates.table is not None:
                    console.print(_candidates_table(candidates.table, top))
                    console.print(f"  [dim]release: {describe_report(candidates)}[/dim]")
                others = [o for o in result.outputs if o.name != "candidates"]
                if others:
                    print_result(console, type(result)(result.job_id, others, result.printed))

                console.rule("8. The second use case: credit profiles of small enterprises, from the imported records")
                credit = researcher.wait(researcher.run_job("credit-profile", {"year": 2025}).id, timeout=300)
                if credit.state != "succeeded":
                    raise SystemExit(f"the demo job failed: {credit.error_code}: {credit.error_message}")
                versions = ", ".join(f"{d} {v[:12]}" for d, v in sorted(credit.dataset_versions.items()))
                console.print(f"  job {credit.id[:8]} read {versions}")
                print_result(console, researcher.get_result(credit.id), limit=8)

                console.rule("9. Another approved package: the population profile by district")
                profile = researcher.run_job("population-profile")
                final = researcher.wait(profile.id, timeout=300)
                if final.state != "succeeded":
                    raise SystemExit(f"the demo job failed: {final.error_code}: {final.error_message}")
                print_result(console, researcher.get_result(profile.id), limit=12)
                try:
                    researcher.run_job("population-profile")
                except SaferoomError as exc:
                    console.print(f"  once more: [red]{exc.code}[/red]: {exc.message}")
                for budget in researcher.list_budgets():
                    console.print(
                        f"  lin on {budget.dataset}: spent epsilon {budget.epsilon_spent:g} of "
                        f"{budget.epsilon_total:g} over {budget.jobs_charged} jobs"
                    )

                console.rule("10. Auditor zhou verifies the tamper-evident log and reads what happened")
                checkpoint = auditor.get_checkpoint()
                report = auditor.verify_log((checkpoint,))
                console.print(
                    f"  log verified: {report.ok}; {report.records} signed, chained records; "
                    f"checkpoint at record {checkpoint.covers}"
                )
                print_audit_records(console, auditor.read_log(tail=12))
        finally:
            server.stop()
        _checked_release(console, Path(tmp), profiles, scale)
    console.rule(f"done in {time.perf_counter() - started:.1f} s")


def _import_enterprises(console: Console, tmp: Path, data: Path, enterprises: int) -> None:
    """The data owner's path: enterprise registers exported as CSV, imported with their declarations."""
    from saferoom.catalog.enterprises import DECLARATIONS, generate_enterprises
    from saferoom.importer import import_dataset

    for path in generate_enterprises(tmp / "exports", enterprises=enterprises):
        result = import_dataset(str(path), DECLARATIONS / f"{path.stem}.toml", data)
        console.print(
            f"  {result.info.name:<22} {result.info.sensitivity:<9} {result.version.rows:>10,} rows "
            f"(imported from {path.name}, version {result.version.version[:12]})"
        )


def _mock_dev_run(console: Console, operator: Client, researcher: Client, out: Path, top: int) -> None:
    """The operator publishes DP synthetic mock data (epsilon 1 per personal dataset, from its own budget);
    the researcher downloads it and runs site selection on it offline, through the same sandbox and rules."""
    from saferoom.catalog.download import write_downloaded_catalog
    from saferoom.jobs.local import run_local

    console.rule("5b. Operator chen publishes DP synthetic mock data; lin develops against it offline")
    for dataset in ("population", "housing_transactions"):
        operator.set_mock_budget(dataset, 1.0)
        info = operator.publish_mock(dataset, 1.0)
        console.print(
            f"  {dataset}: {info.label}, {sum('->' in e for e in info.structure)} edges of structure, "
            f"real-vs-mock TVD along them "
            f"{info.mean_tvd_structure or 0:.3f} (operators only)"
        )
    infos = researcher.list_datasets()
    write_downloaded_catalog(out, infos, {i.name: researcher.download_mock(i.name)[1] for i in infos})
    outcome = run_local(default_algorithms_dir() / "site_selection", out, {"top": str(top)})
    candidates = next(o for o in outcome.outputs if o.name == "candidates")
    cells = candidates.table.num_rows if candidates.table is not None else 0
    console.print(f"  saferoom dev run algorithms/site_selection --data mock/: {cells} candidate cells released")


def _checked_release(console: Console, tmp: Path, profiles: dict[str, Path], scale: int) -> None:
    """The exact rules: the same city with differential privacy off, where a person checks each personal
    result before it leaves (held, reviewed, signed, released)."""
    from saferoom.catalog import generate_catalog
    from saferoom.server import create_server

    data, state = tmp / "exact-data", tmp / "exact-state"
    console.rule("11. The same city under the exact rules: personal results are held for an output checker")
    manifest = generate_catalog(data, scale=min(scale, 20_000), seed=7, differential_privacy=False)
    for info in manifest.datasets.values():
        if info.sensitivity == "personal":
            console.print(f"  {info.name}: exact rules, output_checking = {info.policy.output_checking!r}")
    config = ServerConfig.load(env={}, data_dir=data, state_dir=state, pki_dir=tmp / "pki", listen="127.0.0.1:0")
    server, port = create_server(config)
    address = f"127.0.0.1:{port}"
    try:
        with (
            Client.from_profile(profiles["lin"], server=address, timeout=120) as researcher,
            Client.from_profile(profiles["chen"], server=address, timeout=120) as operator,
            Client.from_profile(profiles["wang"], server=address, timeout=120) as checker,
            Client.from_profile(profiles["zhou"], server=address, timeout=120) as auditor,
        ):
            summary, _ = researcher.submit_package(default_algorithms_dir() / "population_profile")
            operator.approve_package(summary.hash, days=30)
            job = researcher.run_job(summary.hash)
            final = researcher.wait(job.id, timeout=300)
            console.print(f"  lin's job {job.id[:8]} ended {final.state}")
            try:
                researcher.get_result(job.id)
            except SaferoomError as exc:
                console.print(f"  lin asks for the result: [red]{exc.code}[/red]: {exc.message}")
            held = checker.list_held()
            console.print(f"  output checker wang sees {len(held)} held result(s)")
            shown = checker.get_held(job.id)
            console.print(
                f"  wang reviews job {job.id[:8]} by {shown.job.owner}: {len(shown.outputs)} outputs in full, "
                f"{len(shown.files)} source files, result hash {shown.result_hash[:12]}"
            )
            for output in shown.outputs:
                flags = "; ".join(output.flags) or "no flags"
                console.print(f"    {output.name}: {flags}", highlight=False)
            decided = checker.approve_result(job.id, "district profiles; small cells suppressed", reviewed=shown)
            console.print(f"  wang signs the release (Ed25519, bound to the result hash): job {decided.job.state}")
            print_result(console, researcher.get_result(job.id), limit=6)
            report = auditor.verify_log()
            console.print(
                f"  auditor zhou: log verified {report.ok}, {report.decisions} signed output-check decision(s)"
            )
    finally:
        server.stop()


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
