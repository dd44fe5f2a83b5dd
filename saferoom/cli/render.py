"""Terminal rendering of datasets, jobs and released results (rich), and their JSON forms."""

from __future__ import annotations

import datetime as dt
import json
import math
import unicodedata
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from saferoom.audit import AuditRecord
from saferoom.catalog.manifest import Column, DatasetInfo, timestamp_text
from saferoom.client import Budget, HeldResult, Job, PackageSummary, Result, ResultOutput, RunCost
from saferoom.jobs.pipeline import JobOutcome

if TYPE_CHECKING:
    from saferoom.mock import MockInfo

__all__ = [
    "full_width",
    "jobs_table",
    "outcome_to_result",
    "print_audit_records",
    "print_budgets",
    "print_dataset",
    "print_datasets",
    "print_job",
    "print_package",
    "print_packages",
    "print_release_checks",
    "print_result",
    "print_run_costs",
    "print_source",
    "result_to_json",
]

MAX_ROWS_SHOWN = 50


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:,.6g}" if abs(value) < 1e15 else f"{value:.6e}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return str(value)


def arrow_table(table: pa.Table, title: str | None = None, limit: int = MAX_ROWS_SHOWN) -> Table:
    """An Arrow table as a rich table (first ``limit`` rows)."""
    out = Table(title=title, title_justify="left", header_style="bold")
    for name in table.column_names:
        out.add_column(name, justify="right" if _numeric(table.schema.field(name).type) else "left")
    for row in table.slice(0, limit).to_pylist():
        out.add_row(*(_cell(row[n]) for n in table.column_names))
    if table.num_rows > limit:
        out.caption = f"{table.num_rows - limit} more rows not shown"
    return out


def _numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t))


_STATUS_STYLE = {
    "approved": "green",
    "pending": "yellow",
    "rejected": "red",
    "revoked": "red",
    "expired": "yellow",
    "invalid": "bold red",
}


def print_packages(console: Console, packages: Sequence[PackageSummary]) -> None:
    table = Table(header_style="bold")
    for column in ("name", "version", "hash", "status", "datasets", "submitted by"):
        table.add_column(column, no_wrap=column in ("name", "version", "hash", "status"))
    for p in packages:
        style = _STATUS_STYLE.get(p.status, "")
        table.add_row(
            p.name,
            p.version,
            p.hash[:12],
            f"[{style}]{p.status}[/]" if style else p.status,
            ", ".join(p.datasets),
            ", ".join(p.submitters),
        )
    console.print(table)


def print_package(console: Console, p: PackageSummary) -> None:
    style = _STATUS_STYLE.get(p.status, "")
    console.print(f"[bold]{p.name}@{p.version}[/bold]  {p.hash}", highlight=False)
    console.print(f"  status:     [{style}]{p.status}[/] ({p.status_reason})" if style else f"  status: {p.status}")
    if p.description:
        console.print(f"  about:      {p.description}", highlight=False)
    console.print(f"  datasets:   {', '.join(p.datasets)}", highlight=False)
    for name, spec in p.parameters.items():
        bounds = "".join(f" {k}={spec[k]}" for k in ("min", "max") if spec.get(k) is not None)
        console.print(f"  parameter:  {name} ({spec['type']}, default {spec['default']!r}{bounds})", highlight=False)
    console.print(f"  files:      {', '.join(p.files)}", highlight=False)
    if p.submitters:
        console.print(f"  submitted:  {', '.join(p.submitters)}", highlight=False)


_SUMMARY_KEYS = ("code", "method", "reason", "created", "cells_released", "ok",
                 "first_bad_seq", "name", "epsilon", "delta", "epsilon_total", "epsilon_remaining")  # fmt: skip


def _short(record: AuditRecord) -> str:
    """The objects and the telling parts of a record's summary, in a few words."""
    parts = [f"{k}={str(v)[:8]}" for k, v in record.objects.items() if k in ("job", "package")]
    parts += [f"{k}={record.objects[k]}" for k in ("identity", "dataset") if k in record.objects]
    parts += [f"{k}={str(v)[:40]}" for k, v in record.summary.items() if k in _SUMMARY_KEYS]
    return " ".join(parts)


def _when(record: AuditRecord) -> str:
    """The record's time with its date, to the second, ISO 8601 in UTC (``2026-12-02T03:10:00Z``)."""
    moment = dt.datetime.fromisoformat(record.ts).astimezone(dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}Z"


def print_audit_records(console: Console, records: Iterable[AuditRecord], stream: bool = False) -> None:
    """Audit records as a table (or, when following a stream, one line each as they come)."""
    if stream:
        for r in records:
            console.print(f"{r.seq:>7} {_when(r)} {r.event:<18} {r.actor} ({r.role}) {_short(r)}", highlight=False)
        return
    table = Table(header_style="bold")
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("when (UTC)", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("actor", no_wrap=True)
    table.add_column("about", min_width=24)
    for r in records:
        table.add_row(str(r.seq), _when(r), r.event, r.actor, _short(r))
    console.print(table)


def _amount(value: float) -> str:
    return format(value, ".12g")


def print_budgets(console: Console, budgets: Sequence[Budget]) -> None:
    """Privacy budgets: totals, spent and remaining epsilon and delta, and who set them."""
    table = Table(header_style="bold")
    columns = ("researcher", "dataset", "epsilon left", "of", "delta left", "of", "jobs", "set by", "set (UTC)")
    for column in columns:
        table.add_column(column, justify="right" if column in ("epsilon left", "of", "delta left", "jobs") else "left")
    for b in budgets:
        left = "red" if b.epsilon_remaining <= 0 or b.delta_remaining <= 0 else "green"
        table.add_row(
            b.researcher,
            b.dataset,
            f"[{left}]{_amount(b.epsilon_remaining)}[/]",
            _amount(b.epsilon_total),
            f"[{left}]{_amount(b.delta_remaining)}[/]",
            _amount(b.delta_total),
            str(b.jobs_charged),
            b.set_by,
            f"{dt.datetime.fromtimestamp(b.set_at, dt.UTC):%Y-%m-%d %H:%M}",
        )
    console.print(table)


def print_run_costs(console: Console, costs: Sequence[RunCost]) -> None:
    """Per approved package, one line (never cut): what one run spends, and how many more runs the budget pays
    for by its epsilon, by its delta, and so in all."""
    if not costs:
        console.print("no approved package reads this dataset yet: a run costs the epsilon its manifest declares")
        return
    for c in costs:
        console.print(
            f"{c.package}: one run costs epsilon {_amount(c.epsilon)} and delta {_amount(c.delta)}; the budget pays "
            f"for {c.runs:,} more (epsilon allows {c.runs_by_epsilon:,}, delta {c.runs_by_delta:,}): "
            f"{c.limited_by} limits",
            highlight=False,
            soft_wrap=True,
        )


def print_datasets(console: Console, datasets: Sequence[DatasetInfo]) -> None:
    table = Table(title="Datasets", title_justify="left", header_style="bold")
    for column in ("name", "sensitivity", "rows", "privacy unit", "min contributors", "description"):
        table.add_column(column)
    for d in datasets:
        table.add_row(
            d.name,
            d.sensitivity,
            f"{d.rows:,}",
            d.privacy_unit or "—",
            str(d.policy.min_contributors) if not d.is_public else "—",
            d.description,
        )
    console.print(table)


def print_mock_info(console: Console, info: MockInfo) -> None:
    """A dataset's mock data: synthetic (DP) with what may be known of it, or the fallback, labelled."""
    console.print(f"mock data: [bold]{info.label}[/bold]" + (f", version {info.version}" if info.version else ""))
    if info.note:
        console.print(f"  {info.note}")
    if info.structure:
        console.print(f"  structure: {'; '.join(info.structure)}")
        console.print(f"  rows (noisy count): {info.rows:,}")
    if info.estimated:
        worst = max(info.estimated.values())
        mean = sum(info.estimated.values()) / len(info.estimated)
        console.print(
            f"  fidelity estimated from the noisy measurements (TVD): mean {mean:.3f}, worst {worst:.3f} "
            f"({', '.join(f'{k} {v:.3f}' for k, v in sorted(info.estimated.items()))})"
        )
    if info.measured:
        console.print(
            f"  operators: real vs mock TVD, mean along the structure {info.mean_tvd_structure or 0:.3f}, "
            f"worst marginal {max(info.measured.values()):.3f} over {len(info.measured)} marginals"
        )
    if info.budget_epsilon_total is not None:
        console.print(
            f"  operators: publication budget epsilon {info.budget_epsilon_total:g}, "
            f"{info.budget_epsilon_spent or 0:g} spent"
        )


def print_dataset(console: Console, d: DatasetInfo) -> None:
    console.print(f"[bold]{d.name}[/bold] ({d.sensitivity}, {d.rows:,} rows)\n{d.description}")
    if not d.is_public:
        unique = "one row per unit" if d.one_row_per_unit else "several rows per unit possible"
        policy = d.policy
        if policy.differential_privacy:
            rows = "row" if policy.max_contributions == 1 else "rows"
            console.print(
                f"privacy unit: {d.privacy_unit} ({unique}); differentially private: only noisy aggregates leave, "
                f"each person counting for at most {policy.max_contributions} {rows}, cells shown only when their "
                f"noisy count reaches at least {policy.min_contributors}; every run spends privacy budget (epsilon "
                f"declared by the package, delta {policy.dp_delta:g}); values are clamped to their domain"
            )
        else:
            console.print(
                f"privacy unit: {d.privacy_unit} ({unique}); "
                f"every released cell needs {policy.min_contributors} distinct units; sums and means of amounts "
                f"(marked *) fail if {policy.dominance_n} contributors hold over {policy.dominance_k:.0%} "
                f"or the rest is below {policy.p_percent:.0%} of the largest; values are clamped to their domain"
            )
        if policy.checking_required:
            who = "an output checker" if policy.output_checkers == 1 else f"{policy.output_checkers} output checkers"
            console.print(f"results are held until {who} sign their release (output_checking = required)")
    table = Table(header_style="bold")
    for column in ("column", "type", "unit", "domain", "description"):
        table.add_column(column)
    for c in d.columns:
        if c.categories:
            domain = ", ".join(c.categories)
        elif c.min is not None or c.max is not None:
            domain = f"[{_bound(c, c.min)}, {_bound(c, c.max)}]"
        else:
            domain = ""
        table.add_row(c.name + (" *" if c.magnitude else ""), c.type, c.unit or "", domain, c.description)
    console.print(table)


def _bound(column: Column, value: float | None) -> str:
    """A declared bound as the owner wrote it: dates and times as such, not as their days or seconds."""
    if value is None or column.type not in ("date32", "timestamp"):
        return _cell(value)
    if column.type == "timestamp":
        return timestamp_text(value)
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(value))).isoformat()


def print_job(console: Console, job: Job) -> None:
    style = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "rejected": "red"}.get(job.state, "cyan")
    console.print(
        f"job [bold]{job.id}[/bold]  [{style}]{job.state}[/{style}]  "
        f"{job.package_name}@{job.package_version}  params={json.dumps(job.params, sort_keys=True)}"
    )
    if job.error_message:
        console.print(f"  [red]{job.error_code}[/red]: {job.error_message}")
    for dataset, version in sorted(job.dataset_versions.items()):
        console.print(f"  read {dataset} version {version[:16] or '(unversioned)'}")


def _utc(seconds: float | None) -> str:
    return "" if seconds is None else f"{dt.datetime.fromtimestamp(seconds, dt.UTC):%Y-%m-%d %H:%M:%S}"


def jobs_table(jobs: Sequence[Job]) -> Table:
    """Jobs as operators read them: id, owner, package, state, when queued, started and finished (UTC)."""
    table = Table(header_style="bold")
    for column in ("job", "owner", "package", "state", "queued (UTC)", "started", "finished", "why"):
        table.add_column(column, no_wrap=column != "why")
    for job in jobs:
        why = f"{job.error_code}: {job.error_message}" if job.error_code else ""
        table.add_row(
            job.id[:8],
            job.owner,
            f"{job.package_name}@{job.package_version}",
            job.state,
            _utc(job.created_at),
            _utc(job.started_at),
            _utc(job.finished_at),
            Text(why),
        )
    return table


def describe_report(output: ResultOutput) -> str:
    """One human line per output on what disclosure control did."""
    report = output.report
    if output.kind == "value":
        return "a value computed without data (released as is)"
    if output.kind == "public":
        return f"{report.get('rows', 0)} rows from public datasets (released row by row)"
    if output.kind == "model":
        model = [r for r in report.get("rules", []) if r.get("rule") == "model"]
        return str(model[-1]["explanation"]) if model else "a model"
    rules = report.get("rules", [])
    withheld = [r for r in rules if str(r.get("explanation", "")).startswith("withheld")]
    if withheld:
        return str(withheld[0]["explanation"])
    parts = [f"{report.get('rows', 0)} aggregate cells released"]
    private = [r for r in rules if r.get("rule") == "differential_privacy"]
    if private:
        epsilon = sum(n.get("epsilon", 0) for r in private for n in r.get("noise", []))
        parts.append(f"with differential-privacy noise (epsilon {epsilon:.3g} in all; see `saferoom result show`)")
    for rule in rules:
        if rule.get("cells_suppressed"):
            parts.append(f"{rule['cells_suppressed']} suppressed: {rule.get('explanation', rule.get('rule'))}")
    exact = {"min_contributors", "dominance", "quantile", "subset", "secondary", "differencing"}
    if len(parts) == 1 and any(r.get("rule") in exact for r in rules):
        # The researcher's report has no count of suppressed cells (exact data: one more bit about people).
        parts.append("cells the exact rules suppressed are not counted here (the output checker sees them)")
    elif len(parts) == 1:
        parts.append("no cell needed suppression")
    ran = ", ".join(dict.fromkeys(str(r.get("rule")) for r in rules))
    return "; ".join(parts) + (f" (rules applied: {ran})" if ran else "")


def print_release_checks(console: Console, result: Result) -> None:
    """For a human output checker: every output, what was released, and every rule that ran on it."""
    for output in result.outputs:
        report = output.report
        shape = f"{report.get('rows', 0)} rows" if output.kind != "value" else "one value"
        console.print(f"[bold]{output.name}[/bold]: {output.kind}, {shape}", highlight=False)
        table = Table(header_style="bold", show_edge=False)
        for column in ("rule", "threshold", "what it did"):
            table.add_column(column, no_wrap=column != "what it did")
        for rule in report.get("rules", []):
            threshold = rule.get("threshold")
            table.add_row(
                str(rule.get("rule")), "" if threshold is None else str(threshold), str(rule.get("explanation", ""))
            )
        console.print(table)
        noise = [n for rule in report.get("rules", []) for n in rule.get("noise", [])]
        if noise:
            console.print(noise_table(noise))


def held_to_result(held: HeldResult) -> Result:
    """A held result as the researcher would receive it once released (for the rendering above)."""
    outputs = [ResultOutput(o.name, o.kind, o.table, o.value, o.report) for o in held.outputs]
    return Result(held.job.id, outputs, held.printed)


def print_held_list(console: Console, held: Sequence[HeldResult]) -> None:
    """One line per held result (ids in full: they are what `check show` takes)."""
    for h in held:
        approvals = sum(d.decision == "approve" for d in h.decisions)
        console.print(
            f"{h.job.id}  {h.job.package_name}@{h.job.package_version}  ran by {h.job.owner}  "
            f"datasets {', '.join(h.job.datasets)}  approvals {approvals}/{h.checkers_required}  "
            f"result {h.result_hash[:16]}",
            highlight=False,
            soft_wrap=True,
        )


def print_held(console: Console, held: HeldResult) -> None:
    """For an output checker: the held result in full, the code that made it, the report and the risk flags."""
    job = held.job
    when = dt.datetime.fromtimestamp(held.held_at, dt.UTC)
    ran = dt.datetime.fromtimestamp(held.submitted_at, dt.UTC)
    console.rule(f"job {job.id}")
    console.print(
        f"ran by [bold]{job.owner}[/bold] at {ran:%Y-%m-%d %H:%M:%S} UTC: "
        f"{job.package_name}@{job.package_version} ({job.package_hash[:16]}), "
        f"submitted by {', '.join(held.submitters)}; params={json.dumps(job.params, sort_keys=True)}; "
        f"datasets={', '.join(job.datasets)}; held {when:%Y-%m-%d %H:%M:%S} UTC",
        highlight=False,
    )
    console.print(f"result hash {held.result_hash}; approvals needed: {held.checkers_required}", highlight=False)
    for d in held.decisions:
        console.print(f"  {d.checker}: {d.decision} {d.reason}", markup=False, highlight=False)
    console.rule("risk flags")
    for o in held.outputs:
        for flag in o.flags or ["(none)"]:
            console.print(f"[bold]{o.name}[/bold]: {flag}", highlight=False)
        if o.check:
            console.print(json.dumps(o.check, sort_keys=True, indent=2), markup=False, highlight=False)
    console.rule("automatic report")
    result = held_to_result(held)
    print_release_checks(console, result)
    console.rule("outputs, in full")
    for output in result.outputs:
        if output.table is not None:
            console.print(arrow_table(output.table, title=output.name, limit=output.table.num_rows))
        else:
            console.print(f"[bold]{output.name}[/bold] = {_cell(output.value)}")
    if held.printed:
        console.print("[bold]printed by the algorithm:[/bold]")
        console.print(held.printed, markup=False, highlight=False)
    for name, content in sorted(held.files.items()):
        console.rule(name)
        print_source(console, name, content)


def noise_table(noise: list[dict[str, Any]]) -> Table:
    """Differential privacy: how each released column was noised, and how far off it may be (95%)."""
    table = Table(header_style="bold", show_edge=False, title="noise", title_justify="left")
    for column in ("column", "mechanism", "epsilon", "delta", "scale", "95% within ±", "note"):
        table.add_column(column, no_wrap=column not in ("mechanism", "note"))
    for n in noise:
        ci = n.get("ci95") or 0.0
        note = str(n.get("note") or "")
        if n.get("resolution"):
            note = f"candidates {n['resolution']:,.6g} apart" + (f"; {note}" if note else "")
        table.add_row(
            str(n.get("column")),
            str(n.get("mechanism")),
            f"{n.get('epsilon', 0):.4g}",
            f"{n.get('delta', 0):.2g}",
            f"{n.get('scale', 0):,.6g}",
            f"{ci:,.6g}" if ci else "—",
            note,
        )
    return table


def full_width(console: Console) -> Console:
    """``console`` on a terminal; piped, one as wide as what it prints (tables are never squeezed to 80)."""
    if console.is_terminal:
        return console
    return Console(file=console.file, width=100_000, color_system=None, highlight=False)


def print_result(console: Console, result: Result, limit: int = MAX_ROWS_SHOWN) -> None:
    """A result's tables as terminal tables: the terminal's width, or their full width when piped."""
    wide = full_width(console)
    for output in result.outputs:
        if output.table is not None:
            wide.print(arrow_table(output.table, title=output.name, limit=limit), crop=False)
        else:
            value = Text.assemble((output.name, "bold"), " = ", _cell(output.value))
            console.print(value, soft_wrap=not console.is_terminal)
        console.print(f"  [dim]release: {describe_report(output)}[/dim]")
    if result.printed:
        console.print("[bold]printed by the algorithm:[/bold]")
        console.print(result.printed, markup=False, highlight=False)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def result_to_json(result: Result) -> str:
    """A result as JSON: each output's rows (tables) or value, and its release report."""
    outputs = {}
    for o in result.outputs:
        entry: dict[str, Any] = {"kind": o.kind, "report": o.report}
        if o.table is not None:
            entry["columns"] = o.table.column_names
            entry["rows"] = [{k: _json_value(v) for k, v in row.items()} for row in o.table.to_pylist()]
        else:
            entry["value"] = _json_value(o.value)
        outputs[o.name] = entry
    return json.dumps({"job_id": result.job_id, "outputs": outputs, "printed": result.printed}, indent=2)


def outcome_to_result(outcome: JobOutcome, job_id: str = "local") -> Result:
    """A locally run job's outcome in the same shape as a result fetched from a server."""
    outputs = [ResultOutput(o.name, o.kind, o.table, o.value, o.report) for o in outcome.outputs]
    return Result(job_id, outputs, outcome.printed)


# ------------------------------------------------------------------ source as reviewers must see it

_WRAP = "↪"  # starts the continuation of a line too long for the terminal
_SHOWN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})  # control, format (bidi, zero-width), unassigned


def _visible(line: str) -> tuple[Text, int, int]:
    """A line with every character a reader could miss made visible: control and format characters (bidi
    overrides, zero-width spaces, escape sequences, carriage returns) as ⟨U+XXXX⟩, tabs as ⇥, non-ASCII
    letters highlighted (look-alikes of ASCII ones). Returns the text and the counts of both kinds."""
    text = Text()
    hidden = foreign = 0
    for ch in line:
        if ch == "\t":
            text.append("⇥   ", style="dim")
        elif unicodedata.category(ch) in _SHOWN:
            text.append(f"⟨U+{ord(ch):04X}⟩", style="bold reverse red")
            hidden += 1
        elif ord(ch) > 127:
            text.append(ch, style="reverse yellow")
            foreign += 1
        else:
            text.append(ch)
    return text, hidden, foreign


def print_source(console: Console, name: str, content: bytes, diff: bool = False) -> None:
    """A file exactly as it will run, for a reviewer (an operator, an output checker): every line whole (wrapped
    at the terminal's width with ``↪``, never cropped; unwrapped when piped), numbered, with hidden characters
    shown. Bytes that are not UTF-8 are shown as ⟨0xNN⟩ (the sandbox refuses such a file anyway)."""
    try:
        decoded = content.decode("utf-8")
    except UnicodeDecodeError:
        decoded = content.decode("utf-8", errors="backslashreplace").replace("\\x", "⟨0x")
    lines = decoded.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    gutter = len(str(max(1, len(lines))))
    width = console.width - gutter - 3 if console.is_terminal else None
    hidden = foreign = 0
    for number, line in enumerate(lines, 1):
        text, h, f = _visible(line)
        hidden, foreign = hidden + h, foreign + f
        style = ""
        if diff and line.startswith("+") and not line.startswith("+++"):
            style = "green"
        elif diff and line.startswith("-") and not line.startswith("---"):
            style = "red"
        text.stylize(style)
        chunks = [text] if width is None or width < 10 else (text.divide(range(width, len(text), width)) or [text])
        for i, chunk in enumerate(chunks):
            label = f"{number:>{gutter}}" if i == 0 else f"{_WRAP:>{gutter}}"
            console.print(Text(f"{label} │ ", style="dim") + chunk, soft_wrap=True, crop=False)
    notes = []
    if hidden:
        notes.append(f"{hidden} control or format character(s) shown as ⟨U+XXXX⟩")
    if foreign:
        notes.append(f"{foreign} non-ASCII character(s) highlighted")
    if notes:
        console.print(Text(f"{name}: " + "; ".join(notes) + ": read them before you sign", style="bold red"))
