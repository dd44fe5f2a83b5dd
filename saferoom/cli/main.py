"""The `saferoom` command."""

from __future__ import annotations

import contextlib
import faulthandler
import json
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
from saferoom.cli import importing as _importing
from saferoom.cli.jsonout import JSON_META, json_option, remember_json
from saferoom.cli.jsonout import emit as _emit
from saferoom.errors import InvalidPackage, InvalidRequest, NotFound, SaferoomError

__all__ = ["main"]

console = Console()
err_console = Console(stderr=True)


def _json_wanted() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(JSON_META))


def _fail(exc: SaferoomError, status: int = 1) -> None:
    if _json_wanted():
        from saferoom.cli.jsonout import error_document

        problems = getattr(exc, "problems", ()) if isinstance(exc, InvalidPackage) else ()
        click.echo(error_document(exc.status, exc.code, exc.message, problems), err=True)
    else:
        click.echo(f"error ({exc.code}): {exc.message}", err=True)  # one line, never wrapped
    sys.exit(status)


class _Group(click.Group):
    """Turns domain errors into a one-line message and exit status 1 (with --json: a JSON document on stderr);
    with --json, usage errors too become JSON (exit status 2, as click gives them)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SaferoomError as exc:
            _fail(exc)
        except click.UsageError as exc:
            if not _json_wanted():
                raise
            from saferoom.cli.jsonout import error_document

            click.echo(error_document("INVALID_ARGUMENT", "usage", exc.format_message()), err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="saferoom")
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.option(
    "--profile",
    type=click.Path(path_type=Path),
    help="Your profile.toml (server, CA, certificate). Default: $SAFEROOM_PROFILE or ~/.config/saferoom/.",
)
@click.pass_context
def cli(ctx: click.Context, verbose: bool, profile: Path | None) -> None:
    """saferoom: run approved algorithms over data they never see; only aggregates leave."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = {"profile": profile}


server_option = click.option(
    "--server",
    show_default="$SAFEROOM_SERVER, else the profile's server",
    help="Server address host:port (overrides $SAFEROOM_SERVER and the profile).",
)


def _client(server: str | None, timeout: float = 60.0) -> Any:
    """A client for the profile given to the `saferoom` group (mutual TLS)."""
    from saferoom.client import Client

    profile = click.get_current_context().find_root().obj.get("profile")
    return Client.from_profile(profile, server=server, timeout=timeout)


def _params(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        out[name] = value
    return out


# ------------------------------------------------------------------ profile


@cli.group()
def profile() -> None:
    """Your profile: who you are to the server, and which server."""


@profile.command("show")
@json_option
@server_option
def profile_show(as_json: bool, server: str | None) -> None:
    """Show the profile in use and the server it resolves to (--server > $SAFEROOM_SERVER > the profile)."""
    from saferoom.client import Profile

    path = click.get_current_context().find_root().obj.get("profile")
    loaded = Profile.load(path)
    resolved, source = loaded.with_server(server)
    data = {
        "name": resolved.name,
        "server": resolved.server,
        "server_from": source,
        "ca": resolved.ca,
        "cert": resolved.cert,
        "key": resolved.key,
        "signing_key": resolved.signing_key,
    }
    if as_json:
        _emit(data)
        return
    for key, value in data.items():
        console.print(f"{key:<12} {value if value is not None else '-'}", highlight=False, soft_wrap=True)


@profile.command("check")
@click.option(
    "--wait",
    type=click.FloatRange(0, 600),
    default=0.0,
    help="Wait up to this many seconds for a server that is not up yet (e.g. just started).",
)
@json_option
@server_option
def profile_check(wait: float, as_json: bool, server: str | None) -> None:
    """Connect as your profile's identity: who you are (from your certificate) and the server's answer."""
    from saferoom.client import Profile
    from saferoom.identity.pki import certificate_identity

    loaded, _ = Profile.load(click.get_current_context().find_root().obj.get("profile")).with_server(server)
    try:
        name, roles = certificate_identity(loaded.cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read your certificate {loaded.cert}: {exc}") from None
    with _client(server, timeout=max(wait, 10.0)) as client:
        status = client.check(wait)
    data = {"name": name, "roles": sorted(roles), "server": loaded.server, "status": status}
    if as_json:
        _emit(data)
        return
    console.print(f"{name} ({', '.join(sorted(roles))}) at {loaded.server}: {status}", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------ serve


@cli.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="Catalog directory (catalog.json).")
@click.option("--state", "state_dir", type=click.Path(path_type=Path), help="State directory (SQLite).")
@click.option("--listen", help="host:port to listen on (port 0: any free port).")
@click.option("--pki", "pki_dir", type=click.Path(path_type=Path), help="PKI directory (`saferoom certs init`).")
@click.option("--workers", "max_concurrent_jobs", type=int, help="Jobs running at once.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve /metrics, /healthz and /readyz over plain HTTP on this loopback port (0: any free port).",
)
@click.option("--metrics-listen", help="... or on this host:port (not loopback only if you mean it).")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Diagnostic log lines: text or JSON.")
@click.option("--config", "config_file", type=click.Path(path_type=Path, exists=True), help="TOML config file.")
def serve(config_file: Path | None, metrics_port: int | None, **overrides: Any) -> None:
    """Start the gRPC server."""
    from saferoom.config import ServerConfig
    from saferoom.server import create_server

    if metrics_port is not None:
        overrides["metrics_listen"] = overrides.get("metrics_listen") or f"127.0.0.1:{metrics_port}"
    config = ServerConfig.load(config_file, **overrides)
    if config.log_format == "json":
        _json_logging()
    server, port = create_server(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"saferoom listening on {config.listen.rsplit(':', 1)[0]}:{port}", highlight=False)
    if server.metrics_port is not None:
        host = config.metrics_listen.rsplit(":", 1)[0]
        console.print(f"metrics on http://{host}:{server.metrics_port}/metrics", highlight=False)
    # Woken every half second, not blocked for good: Python runs signal handlers only in the main thread, and a
    # SIGTERM the kernel hands to another thread (the main one had a signal pending) would not wake a main thread
    # blocked on a lock: the server then ignored SIGTERM under load.
    while not stop.wait(0.5):
        pass
    # A shutdown that hangs says where, on stderr, for the operator (every thread's stack), and keeps waiting.
    faulthandler.dump_traceback_later(config.grace_seconds + 30, repeat=True)
    server.stop(config.grace_seconds)
    # Stopped: the log is sealed and the database closed. Exit now, not when every library thread agrees to
    # (a gRPC handler thread blocked in a stream would otherwise hold the process at interpreter exit).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _json_logging() -> None:
    """The diagnostic log as JSON lines on stderr, with one line per gRPC call (``saferoom.requests``)."""
    from saferoom.server.observe import JsonLines

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    logging.getLogger("saferoom.requests").setLevel(logging.INFO)
    logging.getLogger("saferoom").setLevel(min(logging.INFO, root.getEffectiveLevel()))


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


datasets.add_command(_importing.datasets_import)
datasets.add_command(_importing.datasets_propose)
datasets.add_command(_importing.datasets_history)
datasets.add_command(_importing.datasets_gc)
datasets.add_command(_importing.datasets_enterprises)


@datasets.command("list")
@json_option
@server_option
def datasets_list(as_json: bool, server: str | None) -> None:
    """List the server's datasets."""
    from saferoom.cli.render import print_datasets

    with _client(server) as client:
        found = client.list_datasets()
    if as_json:
        _emit(found)
    else:
        print_datasets(console, found)


@datasets.command("describe")
@click.argument("name")
@json_option
@server_option
def datasets_describe(name: str, as_json: bool, server: str | None) -> None:
    """Show a dataset's columns, domains and release policy."""
    from saferoom.cli.render import print_dataset, print_mock_info

    with _client(server) as client:
        info = client.describe_dataset(name)
        mock = client.mock_info(name)
    if as_json:
        from saferoom.cli.jsonout import to_data

        _emit({**to_data(info), "mock": to_data(mock)})
    else:
        print_dataset(console, info)
        print_mock_info(console, mock)


@datasets.command("mock")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the mock catalog.")
@click.option(
    "--rows",
    type=click.IntRange(0, 100_000_000),  # the server's MAX_DOWNLOAD_ROWS; each dataset's own cap is lower
    default=0,
    help="Rows per dataset (0: the server's default, for DP synthetic mock data the noisy row count; at most that "
    "count or 1,000,000, the server says which).",
)
@click.option("--seed", type=int, default=0)
@server_option
def datasets_mock(out: Path, rows: int, seed: int, server: str | None) -> None:
    """Download mock copies of every dataset into a catalog directory for `saferoom dev run`.

    Each is DP synthetic data where an operator published it (deterministic per version and seed), the real
    rows of a public dataset, or else the declared-domain fallback (`saferoom datasets describe` says which)."""
    from saferoom.catalog.download import write_downloaded_catalog

    with _client(server, timeout=300) as client:
        infos = client.list_datasets()
        tables = {info.name: client.download_mock(info.name, rows=rows, seed=seed)[1] for info in infos}
    write_downloaded_catalog(out, infos, tables)
    console.print(f"wrote mock data for {len(infos)} datasets to {out}")


# ------------------------------------------------------------------ packages


@cli.group()
def package() -> None:
    """Submit algorithm packages and see where they stand in review."""


@package.command("submit")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@json_option
@server_option
def package_submit(path: Path, as_json: bool, server: str | None) -> None:
    """Validate and submit the package at PATH (a directory or .zip) for review. A package that is not valid is
    refused with every problem found in it (manifest, files, datasets, code), one a line."""
    from saferoom.cli.render import print_package

    with _client(server) as client:
        summary, created = client.submit_package(path)
    if as_json:
        _emit({"package": summary, "created": created})
        return
    print_package(console, summary)
    console.print("submitted for review" if created else "this exact content was submitted before")


@package.command("list")
@json_option
@server_option
def package_list(as_json: bool, server: str | None) -> None:
    """List the packages you may see (yours; all of them for operators)."""
    from saferoom.cli.render import print_packages

    with _client(server) as client:
        found = client.list_packages()
    if as_json:
        _emit(found)
    else:
        print_packages(console, found)


@package.command("show")
@click.argument("ref")
@json_option
@server_option
def package_show(ref: str, as_json: bool, server: str | None) -> None:
    """Show a package (hash, name@version or name) and its review status."""
    from saferoom.cli.render import print_package

    with _client(server) as client:
        found = client.get_package(ref)
    if as_json:
        _emit(found)
    else:
        print_package(console, found)


@package.command("download")
@click.argument("ref")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory to write (must not exist).")
@server_option
def package_download(ref: str, out: Path, server: str | None) -> None:
    """Download a package's files exactly as stored (checked against its hash)."""
    from saferoom.cli.files import write_package_files

    with _client(server) as client:
        summary, files = client.download_package(ref)
    write_package_files(out, files)
    console.print(f"wrote {len(files)} files of {summary.name}@{summary.version} to {out}")


# ------------------------------------------------------------------ review


@cli.group()
def review() -> None:
    """Operators: review submitted packages, approve (sign), reject, revoke."""


@review.command("list")
@json_option
@server_option
def review_list(as_json: bool, server: str | None) -> None:
    """List the packages awaiting review."""
    from saferoom.cli.render import print_packages

    with _client(server) as client:
        found = client.list_pending()
    if as_json:
        _emit(found)
    else:
        print_packages(console, found)


@review.command("show")
@click.argument("package_hash")
@json_option
@server_option
def review_show(package_hash: str, as_json: bool, server: str | None) -> None:
    """Show a package with its full source: every line whole, hidden characters shown."""
    from saferoom.cli.render import print_package, print_source

    with _client(server) as client:
        reviewed = client.review_package(package_hash)
    if as_json:  # files as text where they are UTF-8 (else base64): a program sees every byte
        _emit(reviewed)
        return
    print_package(console, reviewed.package)
    for name, content in sorted(reviewed.files.items()):
        console.rule(name)
        print_source(console, name, content)
    console.print(f"to approve exactly these files: saferoom review approve {reviewed.package.hash}", soft_wrap=True)


@review.command("diff")
@click.argument("package_hash")
@json_option
@server_option
def review_diff(package_hash: str, as_json: bool, server: str | None) -> None:
    """Show what changed since the last approved version of the same package name (every line whole)."""
    from saferoom.cli.render import print_source

    with _client(server) as client:
        reviewed = client.review_package(package_hash)
    previous = reviewed.previous
    if as_json:
        _emit({"package": reviewed.package, "previous": previous, "diff": reviewed.diff})
        return
    console.print(
        f"against {previous.name}@{previous.version} ({previous.hash[:12]})"
        if previous
        else "no approved version of this name yet: the whole package is new"
    )
    print_source(console, "diff", (reviewed.diff or "(no differences)").encode(), diff=True)


@review.command("approve")
@click.argument("package_hash")
@click.option("--days", type=click.IntRange(1, 3650), default=90, show_default=True, help="Validity period.")
@server_option
def review_approve(package_hash: str, days: int, server: str | None) -> None:
    """Sign an approval of the package (with your signing key) and record it."""
    from saferoom.cli.render import print_package

    with _client(server) as client:
        print_package(console, client.approve_package(package_hash, days=days))


@review.command("reject")
@click.argument("package_hash")
@click.option("--reason", required=True, help="Why, for the researcher.")
@server_option
def review_reject(package_hash: str, reason: str, server: str | None) -> None:
    """Turn down a pending package."""
    from saferoom.cli.render import print_package

    with _client(server) as client:
        print_package(console, client.reject_package(package_hash, reason))


@review.command("revoke")
@click.argument("package_hash")
@click.option("--reason", required=True, help="Why, for the record.")
@server_option
def review_revoke(package_hash: str, reason: str, server: str | None) -> None:
    """Take an approval back: the package may not run from now on."""
    from saferoom.cli.render import print_package

    with _client(server) as client:
        print_package(console, client.revoke_approval(package_hash, reason))


# ------------------------------------------------------------------ output checking


@cli.group()
def check() -> None:
    """Output checkers: review exact results held before release, and sign a decision."""


@check.command("list")
@json_option
@server_option
def check_list(as_json: bool, server: str | None) -> None:
    """List the held results awaiting your decision."""
    from saferoom.cli.render import print_held_list

    with _client(server) as client:
        held = client.list_held()
    if as_json:
        _emit(held)
        return
    if not held:
        console.print("no results await a check")
        return
    print_held_list(console, held)


@check.command("show")
@click.argument("job_id")
@json_option
@server_option
def check_show(job_id: str, as_json: bool, server: str | None) -> None:
    """Show a held result in full: outputs, source, report, risk flags, who ran it and with what."""
    from saferoom.cli.render import print_held

    with _client(server) as client:
        held = client.get_held(job_id)
    if as_json:
        _emit(held)
    else:
        print_held(console, held)


def _decide(job_id: str, decision: str, reason: str, server: str | None) -> None:
    with _client(server) as client:
        held = client.decide(job_id, decision, reason)
    console.print(f"job {job_id}: {decision.replace('_', ' ')} recorded (signed); the job is {held.job.state}")


@check.command("approve")
@click.argument("job_id")
@click.option("--reason", default="", help="A note for the record (optional).")
@server_option
def check_approve(job_id: str, reason: str, server: str | None) -> None:
    """Sign the release of a held result (over the hash of the outputs as shown here)."""
    _decide(job_id, "approve", reason, server)


@check.command("reject")
@click.argument("job_id")
@click.option("--reason", required=True, help="Why, for the researcher.")
@server_option
def check_reject(job_id: str, reason: str, server: str | None) -> None:
    """Refuse a held result: it is never released."""
    _decide(job_id, "reject", reason, server)


@check.command("request-changes")
@click.argument("job_id")
@click.option("--reason", required=True, help="What to change, for the researcher.")
@server_option
def check_request_changes(job_id: str, reason: str, server: str | None) -> None:
    """Ask the researcher to change the package and run again; this result is not released."""
    _decide(job_id, "request_changes", reason, server)


# ------------------------------------------------------------------ budgets


@cli.group()
def mock() -> None:
    """DP synthetic mock data: operators set publication budgets and publish; everyone sees what was published."""


@mock.command("budget")
@click.argument("dataset")
@click.option("--epsilon", type=float, required=True, help="Total epsilon publishing DATASET's mock data may spend.")
@server_option
def mock_budget(dataset: str, epsilon: float, server: str | None) -> None:
    """Operators: set (replace) the publication budget of DATASET's mock data, separate from researchers'."""
    with _client(server) as client:
        total, spent = client.set_mock_budget(dataset, epsilon)
    console.print(f"{dataset}: mock publication budget epsilon {total:g}, {spent:g} spent")


@mock.command("publish")
@click.argument("dataset")
@click.option("--epsilon", type=float, required=True, help="Epsilon this publication spends (of the budget).")
@server_option
def mock_publish(dataset: str, epsilon: float, server: str | None) -> None:
    """Operators: measure DATASET under differential privacy and publish it as synthetic mock data."""
    from saferoom.cli.render import print_mock_info

    with _client(server, timeout=600) as client:
        print_mock_info(console, client.publish_mock(dataset, epsilon))


@mock.command("info")
@click.argument("dataset")
@json_option
@server_option
def mock_info(dataset: str, as_json: bool, server: str | None) -> None:
    """How DATASET's mock data is made: synthetic (DP, its structure, epsilon, fidelity) or the fallback."""
    from saferoom.cli.render import print_mock_info

    with _client(server) as client:
        info = client.mock_info(dataset)
    if as_json:
        _emit(info)
    else:
        print_mock_info(console, info)


@cli.group()
def budget() -> None:
    """Privacy budgets: operators set them, researchers see theirs, auditors see all."""


@budget.command("set")
@click.argument("researcher")
@click.argument("dataset")
@click.option("--epsilon", type=float, required=True, help="Total epsilon RESEARCHER may spend on DATASET.")
@click.option(
    "--delta",
    type=float,
    default=None,
    show_default="enough for every run the epsilon pays for: delta never limits first",
    help="Total delta.",
)
@json_option
@server_option
def budget_set(
    researcher: str, dataset: str, epsilon: float, delta: float | None, as_json: bool, server: str | None
) -> None:
    """Operators: set (replace) what RESEARCHER may spend on a differentially private DATASET in all, and see
    what each run of each approved package costs there and how many runs the budget pays for.

    Without --delta, the delta total is what was spent already plus the dataset's per-run delta (its policy)
    times the runs the epsilon pays for of the cheapest approved package: epsilon, not delta, is what limits."""
    from saferoom.cli.render import print_budgets, print_run_costs

    with _client(server) as client:
        budget = client.set_budget(researcher, dataset, epsilon, delta)
        costs = client.run_costs(budget)
    if as_json:
        _emit({"budget": budget, "delta_defaulted": delta is None, "runs": costs})
        return
    print_budgets(console, [budget])
    if delta is None:
        console.print(
            f"delta defaulted to {budget.delta_total:.12g}: enough for every run the epsilon pays for, so epsilon "
            "is what limits",
            highlight=False,
            soft_wrap=True,
        )
    print_run_costs(console, costs)


@budget.command("show")
@click.option("--researcher", default="", help="Only this researcher's budgets.")
@click.option("--dataset", default="", help="Only budgets on this dataset.")
@json_option
@server_option
def budget_show(researcher: str, dataset: str, as_json: bool, server: str | None) -> None:
    """Budgets with what was spent and what remains (yours; everyone's for operators and auditors)."""
    from saferoom.cli.render import print_budgets

    with _client(server) as client:
        budgets = client.list_budgets(researcher, dataset)
    if as_json:
        _emit(budgets)
    elif budgets:
        print_budgets(console, budgets)
    else:
        console.print("no privacy budgets: runs on differentially private data are refused until an operator sets one")


# ------------------------------------------------------------------ audit


def _when(text: str | None) -> Any:
    """An ISO date or time (UTC unless it says otherwise)."""
    if not text:
        return None
    import datetime as dt

    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO date or time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def audit_filters(fn: Any) -> Any:
    """The filters every audit reading command takes."""
    options = [
        click.option("--actor", default="", help="Only records by this identity."),
        click.option("--event", "events", multiple=True, help="Only these event types (repeatable)."),
        click.option("--package", default="", help="Only records about this package hash."),
        click.option("--job", default="", help="Only records about this job id."),
        click.option("--since", help="From this UTC date/time (ISO 8601)."),
        click.option("--until", help="Before this UTC date/time (ISO 8601)."),
        click.option("--after", "after_seq", type=click.IntRange(0), default=0, help="Only after this seq."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _filter_kwargs(
    actor: str, events: tuple[str, ...], package: str, job: str, since: str | None, until: str | None, after_seq: int
) -> dict[str, Any]:
    return {
        "actor": actor,
        "events": list(events),
        "package": package,
        "job": job,
        "since": _when(since),
        "until": _when(until),
        "after_seq": after_seq,
    }


@cli.group()
def audit() -> None:
    """Auditors: read, search, verify and export the tamper-evident log."""


@audit.command("tail")
@click.option("-n", "count", type=click.IntRange(1, 100_000), default=20, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records as they are written.")
@json_option
@server_option
def audit_tail(count: int, follow: bool, as_json: bool, server: str | None) -> None:
    """The latest records (and, with --follow, new ones as they come). With --json: a list; with --follow too,
    one JSON object per line as each record comes (a stream has no end to close a list at)."""
    from saferoom.cli.render import print_audit_records

    with _client(server) as client:
        records = client.read_log(tail=count, follow=follow)
        if as_json and follow:
            for record in records:
                click.echo(json.dumps(record.to_data(), sort_keys=True))
        elif as_json:
            _emit([record.to_data() for record in records])
        else:
            print_audit_records(console, records, stream=follow)


@audit.command("search")
@audit_filters
@click.option("--limit", type=click.IntRange(0), default=0, help="At most this many (0: all).")
@json_option
@server_option
def audit_search(limit: int, as_json: bool, server: str | None, **filters: Any) -> None:
    """Records matching the filters, oldest first."""
    from saferoom.cli.render import print_audit_records

    with _client(server) as client:
        records = list(client.read_log(limit=limit, **_filter_kwargs(**filters)))
        if as_json:
            _emit([record.to_data() for record in records])
        else:
            print_audit_records(console, records)
    if not records and not as_json:  # said, not silent: a filter that matches nothing is often a mistyped one
        err_console.print("no record matches these filters", highlight=False)


@audit.command("show")
@click.argument("seq", type=click.IntRange(1))
@json_option
@server_option
def audit_show(seq: int, as_json: bool, server: str | None) -> None:
    """One record in full."""
    with _client(server) as client:
        records = list(client.read_log(after_seq=seq - 1, limit=1))
    if not records or records[0].seq != seq:
        raise NotFound(f"no audit record {seq}")
    if as_json:
        _emit(records[0].to_data())
        return
    console.print_json(json.dumps(records[0].to_data(), sort_keys=True))


@audit.command("verify")
@click.option(
    "--file",
    "log_file",
    type=click.Path(path_type=Path, exists=True),
    help="Verify a copy of the log offline (no server) ...",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path, exists=True),
    help="... with the server's audit public key (audit.pub).",
)
@click.option(
    "--segments",
    "segments_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Verify archived log segments (audit-<seq>.log files) offline, as one log; if they do not start at "
    "record 1, with a --checkpoint covering the record before the first.",
)
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="A checkpoint saved earlier: the log must still hold what it sealed (repeatable).",
)
@click.option("--save-checkpoint", type=click.Path(path_type=Path), help="Save a fresh checkpoint here.")
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(path_type=Path, exists=True),
    help="... and the authority's certificate (ca.crt): output checkers' decisions must be signed by its people.",
)
@json_option
@server_option
def audit_verify(
    log_file: Path | None,
    key_file: Path | None,
    segments_dir: Path | None,
    checkpoints: tuple[Path, ...],
    save_checkpoint: Path | None,
    ca_file: Path | None,
    as_json: bool,
    server: str | None,
) -> None:
    """Verify the log: on the server, or offline with --file (or --segments) and --key (or a --checkpoint holding
    the key). Exit status 2 when it fails (with --json, the report says so too: ``ok`` is false)."""
    from saferoom.audit import Checkpoint, load_public_key, verify_log

    anchors = tuple(Checkpoint.from_json(path.read_text(encoding="utf-8")) for path in checkpoints)
    if log_file is not None and segments_dir is not None:
        raise click.UsageError("give --file or --segments, not both")
    if log_file is not None or segments_dir is not None:
        raw = key_file.read_bytes() if key_file else (anchors[0].public_key if anchors else None)
        if raw is None:
            raise click.UsageError("offline verification needs --key or a --checkpoint")
        public_key = load_public_key(raw)
        if any(not a.verify(public_key) for a in anchors):
            raise click.UsageError("a checkpoint is not signed by this audit key")
        ca_pem = ca_file.read_bytes() if ca_file else None
        if segments_dir is not None:
            from saferoom.audit.segments import verify_segments

            report = verify_segments(segments_dir, public_key, anchors, ca_pem)
        else:
            assert log_file is not None
            report = verify_log(log_file.read_bytes(), public_key, anchors=anchors, ca_pem=ca_pem)
    else:
        with _client(server, timeout=600) as client:
            report = client.verify_log(anchors)
            if save_checkpoint is not None:
                save_checkpoint.write_text(client.get_checkpoint().to_json(), encoding="utf-8")
    if as_json:
        _emit(report)
        sys.exit(0 if report.ok else 2)
    if report.ok:
        console.print(
            f"[green]verified[/green]: {report.records} records (to record {report.last_seq}), "
            f"{report.checkpoints} checkpoints, "
            f"{report.decisions} signed output-check decisions, head {report.head[:16]}"
        )
        if save_checkpoint is not None:
            console.print(f"saved a checkpoint to {save_checkpoint}")
        return
    err_console.print(f"[red]FAILED[/red] at record {report.first_bad_seq}: {report.reason}")
    sys.exit(2)


@audit.command("export")
@audit_filters
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@server_option
def audit_export(fmt: str, out: Path, server: str | None, **filters: Any) -> None:
    """Write records as JSON Lines or Parquet, for analysis in your own tools."""
    from saferoom.cli.files import write_audit_export

    with _client(server, timeout=600) as client:
        count = write_audit_export(out, fmt, client.read_log(**_filter_kwargs(**filters)))
    console.print(f"wrote {count} records to {out}")


@audit.command("recover")
@click.option("--state", "state_dir", type=click.Path(path_type=Path, exists=True), required=True)
def audit_recover(state_dir: Path) -> None:
    """Server administrators, with the server stopped: set a torn last record aside, and record that you did."""
    from saferoom.audit import quarantine_torn_tail
    from saferoom.store import Database

    database = Database.open(state_dir / "saferoom.db")
    try:
        moved = quarantine_torn_tail(state_dir / "audit", database)
    finally:
        database.close()
    if moved is None:
        console.print("the audit log has no torn record; nothing to do")
    else:
        console.print(f"moved {moved[0]} torn bytes (sha256 {moved[1][:16]}) aside; recorded as log_tail_quarantined")


# ------------------------------------------------------------------ state


@cli.group()
def state() -> None:
    """Server administrators: the state database and the audit log, checked against each other."""


@state.command("check")
@click.option(
    "--state",
    "--state-dir",
    "state_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="The server's state directory (saferoom.db and audit/).",
)
@json_option
def state_check(state_dir: Path, as_json: bool) -> None:
    """Run the server's start-up checks offline (best with the server stopped); exit 1 naming what is wrong."""
    from saferoom.audit.crosscheck import check_state_dir

    problems = check_state_dir(state_dir)
    if as_json:
        _emit({"ok": not problems, "problems": problems})
        sys.exit(1 if problems else 0)
    if problems:
        click.echo(f"the state in {state_dir} is NOT consistent with its audit log:", err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(1)
    console.print(f"the state in {state_dir} agrees with its audit log")


@state.command("backup")
@click.argument("target", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--state",
    "--state-dir",
    "state_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="The server's state directory (it may be serving).",
)
def state_backup(target: Path, state_dir: Path) -> None:
    """Copy the state consistently while the server serves: database, log to the same head, packages, keys."""
    from saferoom.audit.backup import backup_state

    summary = backup_state(state_dir, target)
    console.print(
        f"backed up {state_dir} to {target}: {summary.files} files, audit log to record {summary.records} "
        f"(head {summary.head[:16]}), {summary.packages} packages, {summary.outbox} records to append at restore",
        highlight=False,
    )
    console.print("it holds the audit signing key: keep it as carefully as the state directory", highlight=False)


@state.command("restore")
@click.argument("backup", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--state",
    "--state-dir",
    "state_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The new state directory (must not exist or be empty).",
)
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="An auditor's saved checkpoint: refuse a backup whose log does not hold what it covers (repeatable).",
)
def state_restore(backup: Path, state_dir: Path, checkpoints: tuple[Path, ...]) -> None:
    """Restore a backup into a new state directory, then run `state check` on it; exit 1 if it fails."""
    from saferoom.audit import Checkpoint
    from saferoom.audit.backup import restore_state

    anchors = tuple(Checkpoint.from_json(path.read_text(encoding="utf-8")) for path in checkpoints)
    problems = restore_state(backup, state_dir, anchors)
    if problems:
        click.echo(f"restored into {state_dir}, but it is NOT consistent with its audit log:", err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(1)
    console.print(f"restored {backup} into {state_dir}; the state agrees with its audit log", highlight=False)


# ------------------------------------------------------------------ certs

pki_option = click.option(
    "--pki",
    "pki_dir",
    type=click.Path(path_type=Path),
    default=lambda: os.environ.get("SAFEROOM_PKI_DIR", "pki"),
    show_default="$SAFEROOM_PKI_DIR or ./pki",
    help="The directory made by `saferoom certs init`.",
)


@cli.group()
def certs() -> None:
    """The deployment's certificate authority: identities and their roles."""


@certs.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--host", "hosts", multiple=True, help="A DNS name or IP of the server (repeatable).")
def certs_init(directory: Path, hosts: tuple[str, ...]) -> None:
    """Create a certificate authority, the server's certificate and an empty revocation list."""
    from saferoom.identity import init_authority

    init_authority(directory, hosts)
    console.print(f"created a certificate authority in {directory} (keep ca.key offline)")


@certs.command("issue")
@click.option("--name", required=True, help="The person's identity name.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    help="researcher, operator, output_checker or auditor (repeatable).",
)
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True)
@click.option("--server", "server", default="127.0.0.1:50051", show_default=True, help="Written to the profile.")
@pki_option
def certs_issue(name: str, roles: tuple[str, ...], days: int, server: str, pki_dir: Path) -> None:
    """Issue a client certificate (and a signing key to operators and output checkers) with a ready profile."""
    from saferoom.identity import issue_identity

    roles_list = [r for item in roles for r in item.split(",")]
    issued = issue_identity(pki_dir, name, roles_list, days=days, server=server)
    console.print(f"issued {name} ({', '.join(sorted(issued.roles))}): profile at {issued.profile}")


@certs.command("revoke")
@click.argument("name")
@pki_option
def certs_revoke(name: str, pki_dir: Path) -> None:
    """Revoke every certificate of NAME; servers refuse it from their next call on."""
    from saferoom.identity import revoke_identity

    serials = revoke_identity(pki_dir, name)
    console.print(f"revoked {len(serials)} certificate(s) of {name}")


@certs.command("list")
@pki_option
@json_option
def certs_list(pki_dir: Path, as_json: bool) -> None:
    """List every issued certificate."""
    from rich.table import Table

    from saferoom.identity import list_identities

    if as_json:
        _emit(
            [
                {"name": name, "roles": roles, "serial": f"{serial:x}", "expires": expires, "revoked": revoked}
                for name, roles, serial, expires, revoked in list_identities(pki_dir)
            ]
        )
        return
    table = Table(header_style="bold")
    for column in ("name", "roles", "serial", "expires", "status"):
        table.add_column(column)
    for name, roles, serial, expires, revoked in list_identities(pki_dir):
        table.add_row(name, roles, f"{serial:x}"[:16], f"{expires:%Y-%m-%d}", "revoked" if revoked else "valid")
    console.print(table)


# ------------------------------------------------------------------ jobs


@cli.group()
def jobs() -> None:
    """Run jobs on a server and fetch their released results."""


@jobs.command("run")
@click.argument("package")
@click.option("--param", "-p", "params", multiple=True, help="NAME=VALUE (repeatable).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait and print the result.")
@json_option
@server_option
def jobs_run(package: str, params: tuple[str, ...], wait: bool, as_json: bool, server: str | None) -> None:
    """Run PACKAGE (hash, name@version or name) with parameters."""
    from saferoom.cli.render import print_job, print_result, result_to_json
    from saferoom.packages import parse_param_value

    with _client(server) as client:
        summary = client.get_package(package)  # for the parameters' types; the server checks the values
        typed = {}
        for name, text in _params(params).items():
            spec = summary.parameters.get(name)
            typed[name] = parse_param_value(spec["type"], text, name) if spec else text
        job = client.run_job(package, typed)
        if not wait:
            print_job(console, job)
            return
        job = _follow(client, job, quiet=as_json)
        if job.state == "awaiting_check":  # the result exists, but a person must release it first
            if as_json:
                click.echo(json.dumps({"job_id": job.id, "state": job.state}))
                return
            print_job(console, job)
            console.print(f"held for an output checker: fetch it once released with `saferoom jobs result {job.id}`")
            return
        if job.state != "succeeded":
            if as_json:  # why, as the error document (the job's own code; cancelled etc. have none)
                from saferoom.errors import FailedPrecondition, error_from_code

                message = job.error_message or f"job {job.id} ended {job.state}"
                error = error_from_code(job.error_code, message) if job.error_code else FailedPrecondition(message)
                _fail(error)
            print_job(err_console, job)
            sys.exit(1)
        result = client.get_result(job.id)
        if as_json:
            click.echo(result_to_json(result))
        else:
            print_job(console, job)
            print_result(console, result)


def _follow(client: Any, job: Any, quiet: bool) -> Any:
    """Wait for ``job`` to settle, saying at once which job it is and then each state it reaches (with a spinner
    on a terminal). Ctrl-C stops the waiting, not the job: it says so, and how to follow or cancel it.

    Ctrl-C sets a flag (our own SIGINT handler) and the job is polled: an interrupt arriving inside gRPC's
    C code would otherwise be lost or surface as a failed call."""
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        started, job_id, last = time.monotonic(), job.id, job.state
        if not quiet:
            err_console.print(
                f"job {job_id} {job.state} ({job.package_name}@{job.package_version})", highlight=False, soft_wrap=True
            )
        spinning = not quiet and err_console.is_terminal
        with err_console.status(f"job {job_id[:8]} {last}") if spinning else contextlib.nullcontext() as status:
            while not job.finished and not interrupted.wait(0.25):
                job = client.get_job(job_id)
                if status is not None:
                    status.update(f"job {job_id[:8]} {job.state} ({time.monotonic() - started:.0f} s)")
                elif job.state != last and not quiet:
                    err_console.print(f"job {job_id[:8]} {job.state}", highlight=False)
                last = job.state
        if not interrupted.is_set():
            return job
        short = job_id[:8]
        err_console.print(
            f"stopped waiting; job {job_id} goes on (its privacy budget stays charged). Follow it with "
            f"`saferoom jobs watch {short}`, fetch its result with `saferoom jobs result {short}`, cancel it with "
            f"`saferoom jobs cancel {short}`",
            highlight=False,
            soft_wrap=True,  # commands whole, to copy
        )
        sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, previous)


@jobs.command("get")
@click.argument("job_id")
@json_option
@server_option
def jobs_get(job_id: str, as_json: bool, server: str | None) -> None:
    """Show a job."""
    from saferoom.cli.render import print_job

    with _client(server) as client:
        job = client.get_job(job_id)
    if as_json:
        _emit(job)
    else:
        print_job(console, job)


@jobs.command("watch")
@click.argument("job_id")
@json_option
@server_option
def jobs_watch(job_id: str, as_json: bool, server: str | None) -> None:
    """Follow a job's state changes until it ends (with --json: one JSON object per line, per change)."""
    from saferoom.cli.render import print_job

    with _client(server) as client:
        for job in client.watch_job(job_id):
            if as_json:
                from saferoom.cli.jsonout import to_data

                click.echo(json.dumps(to_data(job), sort_keys=True))
            else:
                print_job(console, job)


@jobs.command("cancel")
@click.argument("job_id")
@server_option
def jobs_cancel(job_id: str, server: str | None) -> None:
    """Cancel a queued or running job."""
    from saferoom.cli.render import print_job

    with _client(server) as client:
        print_job(console, client.cancel_job(job_id))


@jobs.command("list")
@click.option("--state", "states", multiple=True, help="Only jobs in this state (repeatable).")
@click.option("--owner", default="", help="Operators: only this researcher's jobs.")
@click.option("--package", default="", help="Only jobs of this package (hash, its first characters, or name).")
@click.option("--since", default=None, help="Only jobs queued at or after this ISO date or time (UTC).")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="At most this many.")
@click.option("--all", "everything", is_flag=True, help="Every matching job (page by page), no limit.")
@json_option
@server_option
def jobs_list(
    states: tuple[str, ...],
    owner: str,
    package: str,
    since: str | None,
    limit: int,
    everything: bool,
    as_json: bool,
    server: str | None,
) -> None:
    """Jobs, newest first: who ran what, when it was queued, started and finished, and how it ended."""
    import itertools

    from saferoom.cli.render import full_width, jobs_table

    filters = {"states": states, "owner": owner, "package": package, "since": _when(since)}
    with _client(server) as client:
        found = client.iter_jobs(**filters)
        jobs = list(found if everything else itertools.islice(found, limit))
    if as_json:
        _emit(jobs)
    elif jobs:
        full_width(console).print(jobs_table(jobs), crop=False)
    if not jobs and not as_json:
        err_console.print("no job matches these filters", highlight=False)


def export_options(fn: Any) -> Any:
    """--format, --out and --output: where a released result goes (``saferoom.cli.export``)."""
    from saferoom.cli.export import FORMATS

    fn = click.option("--output", "output_name", metavar="NAME", help="Only this output of the result.")(fn)
    fn = click.option(
        "--out", type=click.Path(path_type=Path), help="A file (one table) or a directory (one file per output)."
    )(fn)
    fn = click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="Default: table.")(fn)
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        is_eager=True,
        callback=remember_json,
        help="Same as --format json (errors as JSON on stderr).",
    )(fn)


def _export(result: Any, fmt: str | None, as_json: bool, out: Path | None, output_name: str | None) -> None:
    from saferoom.cli.export import export_result

    for path in export_result(console, result, fmt or ("json" if as_json else "table"), out, output_name):
        err_console.print(f"wrote {path}", highlight=False)


@jobs.command("result")
@click.argument("job_id")
@export_options
@server_option
def jobs_result(
    job_id: str, fmt: str | None, as_json: bool, out: Path | None, output_name: str | None, server: str | None
) -> None:
    """Print or save a finished job's released result (table, json, csv, parquet, arrow)."""
    with _client(server) as client:
        result = client.get_result(job_id)
    _export(result, fmt, as_json, out, output_name)


@cli.group()
def result() -> None:
    """Released results, as an output checker reads them."""


@result.command("show")
@click.argument("job_id")
@click.option("--data/--no-data", "with_data", default=True, show_default=True, help="Also print the tables.")
@json_option
@server_option
def result_show(job_id: str, with_data: bool, as_json: bool, server: str | None) -> None:
    """Every output of a finished job: what was released, and each disclosure rule that ran and what it did."""
    from saferoom.cli.render import print_release_checks, print_result, result_to_json

    with _client(server) as client:
        released = client.get_result(job_id)
    if as_json:
        click.echo(result_to_json(released))
        return
    print_release_checks(console, released)
    if with_data:
        print_result(console, released)


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
@export_options
def dev_run(
    package_dir: Path,
    data_dir: Path,
    params: tuple[str, ...],
    fmt: str | None,
    as_json: bool,
    out: Path | None,
    output_name: str | None,
) -> None:
    """Run the package in PACKAGE_DIR on local data and print (or save) what would be released."""
    from saferoom.cli.render import outcome_to_result
    from saferoom.jobs.local import run_local

    result = outcome_to_result(run_local(package_dir, data_dir, _params(params)))
    _export(result, fmt, as_json, out, output_name)


# ------------------------------------------------------------------ console


@cli.command("console")
@click.option("--port", type=int, default=0, show_default=True, help="Port on 127.0.0.1 (0: any free port).")
@click.option(
    "--checkpoints",
    "checkpoints_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where auditors' saved checkpoints are kept. Default: ~/.local/share/saferoom/checkpoints.",
)
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(path_type=Path),
    help="The profile to act as (overrides saferoom --profile and $SAFEROOM_PROFILE).",
)
@server_option
def console_command(port: int, checkpoints_dir: Path | None, profile_path: Path | None, server: str | None) -> None:
    """A local web console for your roles, acting with your profile's identity (prints a one-time login URL)."""
    try:
        from saferoom.console import ConsoleServer
    except ImportError as exc:  # the console's web stack is an extra
        raise click.UsageError(f"the console needs its extra: pip install 'saferoom[console]' ({exc})") from None
    from saferoom.client import Profile

    profile = Profile.load(profile_path or click.get_current_context().find_root().obj.get("profile"))
    app = ConsoleServer(profile, port=port, server=server, checkpoints_dir=checkpoints_dir)
    console.print(f"saferoom console for {profile.name}: open {app.url}", highlight=False, soft_wrap=True)
    console.print("(the link works once; Ctrl-C stops the console)", highlight=False)
    sys.stdout.flush()  # the URL must reach a pipe (a launcher, a test) before serving starts
    app.run()


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
