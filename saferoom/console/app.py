"""The console's pages and actions: thin handlers that call the typed client and render a template.

Each page names the roles it is for; the identity's roles come from its own certificate (the server enforces
permissions regardless, and whatever it refuses is shown as its refusal, never as data). Approvals and output
checks are signed here, with the profile's key, by the client's own methods (``Client.approve_package``,
``Client.decide``), over exactly what the page showed: the package hash displayed (a content hash: the files
re-fetched and re-hashed must have it) or the result hash displayed (the held outputs re-fetched must hash to it).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from cryptography import x509
from cryptography.x509.oid import NameOID
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from saferoom.audit import Checkpoint
from saferoom.checks import Decision
from saferoom.client import Client, HeldResult, Profile, Result
from saferoom.console.charts import Chart, charts_for
from saferoom.console.security import Gate, SessionKeys
from saferoom.console.source import visible
from saferoom.errors import FailedPrecondition, InvalidRequest, NotFound, SaferoomError
from saferoom.identity import Role, parse_roles
from saferoom.jobs.state import JobState
from saferoom.packages import parse_param_value

__all__ = ["Console", "create_app", "profile_roles"]

_HASH = re.compile(r"^[0-9a-f]{64}$")
_JOB = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_OUTPUT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
# The server's status (a domain error's ``status``) as the HTTP status of the page that shows it.
_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
}
MAX_ROWS_SHOWN = 200
LIVE_SECONDS = 2  # how often a live page (a running job, a followed log) reloads itself
JOBS_PAGE = 50  # jobs per page of the job list
JOB_STATES = tuple(s.value for s in JobState)


def profile_roles(profile: Profile) -> frozenset[Role]:
    """The roles the profile's own certificate states (OU attributes)."""
    cert = x509.load_pem_x509_certificate(profile.cert.read_bytes())
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    return parse_roles(names)


@dataclass
class Console:
    """One person's console: their client (mutual TLS), roles, session keys and where checkpoints are kept."""

    client: Client
    name: str
    roles: frozenset[Role]
    keys: SessionKeys
    checkpoints_dir: Path

    def has(self, role: Role) -> bool:
        return role in self.roles


_env = Environment(loader=PackageLoader("saferoom.console", "templates"), autoescape=select_autoescape(["html"]))


def _utc(seconds: float | None) -> str:
    if not seconds:
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return (
            "n/a"
            if math.isnan(value) or math.isinf(value)
            else f"{value:,.4g}"
            if abs(value) < 1e6
            else f"{value:,.0f}"
        )
    return str(value)


_env.filters["utc"] = _utc
_env.filters["cell"] = _cell
_env.filters["visible"] = visible
_env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)

NAV = (
    ("catalog", "/catalog", "Catalog"),
    ("researcher", "/packages", "Packages"),
    ("jobs", "/jobs", "Jobs"),
    ("budgets", "/budgets", "Budgets"),
    ("operator", "/review", "Review"),
    ("output_checker", "/checks", "Output checks"),
    ("auditor", "/audit", "Audit log"),
)


def _may(console: Console, what: str) -> bool:
    if what == "jobs":
        return console.has(Role.RESEARCHER) or console.has(Role.OPERATOR)
    if what == "budgets":
        return console.has(Role.RESEARCHER) or console.has(Role.OPERATOR) or console.has(Role.AUDITOR)
    if what == "catalog":
        return not console.roles <= {Role.AUDITOR}  # auditors read the log and nothing else
    return console.has(Role(what))


def create_app(console: Console, port: int) -> Gate:
    """The ASGI application for ``console`` listening on 127.0.0.1:``port``, behind its gate."""

    def page(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        nav = [(href, label) for what, href, label in NAV if _may(console, what)]
        values.setdefault("note", request.query_params.get("note", "")[:300])  # what the last action did
        html = _env.get_template(template).render(
            console=console, nav=nav, csrf=console.keys.csrf, path=request.url.path, **values
        )
        return HTMLResponse(html, status_code=status)

    def handler(what: str) -> Callable[[Callable[..., Response]], Callable[[Request], Response]]:
        """A page for the roles ``what`` names: others get 403; the server's refusals become error pages."""

        def wrap(fn: Callable[..., Response]) -> Callable[[Request], Response]:
            def run(request: Request) -> Response:
                if not _may(console, what):
                    return page(
                        request,
                        "error.html",
                        403,
                        title="Not for your roles",
                        message=f"This page is for another role; you are {', '.join(sorted(console.roles))}.",
                    )
                try:
                    return fn(request, **request.path_params)
                except SaferoomError as exc:
                    status = _STATUS.get(exc.status, 502)
                    return page(request, "error.html", status, title=f"Refused: {exc.code}", message=exc.message)

            return run

        return wrap

    def form(request: Request) -> dict[str, str]:
        data: dict[str, str] = request.scope["saferoom.form"]  # parsed and CSRF-checked by the gate
        return data

    def after(path: str, note: str = "") -> RedirectResponse:
        return RedirectResponse(path + (f"?{urlencode({'note': note})}" if note else ""), status_code=303)

    # ---------------------------------------------------------------- everyone

    def home(request: Request) -> Response:
        # Each role's main page: the work waiting for it.
        for role, href in ((Role.OPERATOR, "/review"), (Role.OUTPUT_CHECKER, "/checks"), (Role.AUDITOR, "/audit")):
            if console.has(role):
                return RedirectResponse(href, status_code=303)
        return RedirectResponse("/jobs", status_code=303)

    @handler("catalog")
    def catalog(request: Request) -> Response:
        return page(request, "catalog.html", title="Catalog", datasets=console.client.list_datasets())

    @handler("catalog")
    def dataset(request: Request, name: str) -> Response:
        return page(request, "dataset.html", title=name, d=console.client.describe_dataset(name))

    @handler("researcher")
    def mock(request: Request, name: str) -> Response:
        info, table = console.client.download_mock(
            name, rows=_int(request.query_params.get("rows", "0"), 0, 1_000_000, 0)
        )
        return _download(table, f"{info.name}-mock.csv", "csv")

    # ---------------------------------------------------------------- researchers

    @handler("researcher")
    def packages(request: Request) -> Response:
        return page(request, "packages.html", title="Packages", packages=console.client.list_packages())

    @handler("researcher")
    def package(request: Request, ref: str) -> Response:
        p = console.client.get_package(ref)
        return page(request, "package.html", title=p.name, p=p)

    @handler("researcher")
    def run_job(request: Request) -> Response:
        data = form(request)
        ref = data.get("package", "")
        if not _HASH.match(ref):
            raise InvalidRequest("run a package by its full hash")
        params = {k.removeprefix("param."): v for k, v in data.items() if k.startswith("param.") and v != ""}
        summary = console.client.get_package(ref)
        kinds = {k: summary.parameters.get(k, {}).get("type", "str") for k in params}
        typed = {k: parse_param_value(kinds[k], v, k) for k, v in params.items()}
        job = console.client.run_job(ref, typed, request_id=data.get("request_id", ""))
        return after(f"/jobs/{job.id}")

    @handler("jobs")
    def jobs(request: Request) -> Response:
        # Filtered and paged by the server (ListJobs): every job can be reached, JOBS_PAGE at a time, newest first.
        q = request.query_params
        states = [s for s in q.getlist("state") if s in JOB_STATES][: len(JOB_STATES)]
        owner, package = q.get("owner", "").strip()[:100], q.get("package", "").strip()[:200]
        filters = {"state": states, "owner": owner, "package": package}
        token = q.get("after", "")[:200]
        listed, later = console.client.list_jobs(
            page_size=JOBS_PAGE, page_token=token, states=states, owner=owner, package=package
        )
        kept = [("state", s) for s in states] + [(k, v) for k, v in (("owner", owner), ("package", package)) if v]
        older = f"/jobs?{urlencode([*kept, ('after', later)])}" if later else ""
        live = not token and any(not j.finished for j in listed)  # the first page follows running jobs
        return page(
            request,
            "jobs.html",
            title="Jobs",
            jobs=listed,
            live=live,
            refresh=LIVE_SECONDS if live else 0,
            filters=filters,
            states=JOB_STATES,
            older=older,
            newest="/jobs?" + urlencode(kept) if token else "",
        )

    @handler("jobs")
    def job(request: Request, job_id: str) -> Response:
        j = console.client.get_job(_job_id(job_id))
        result = None
        if j.state == "succeeded" and console.has(Role.RESEARCHER) and j.owner == console.name:
            result = _shown(console.client.get_result(j.id))
        refresh = 0 if j.finished else LIVE_SECONDS
        return page(request, "job.html", title=f"Job {j.id}", j=j, result=result, refresh=refresh)

    @handler("researcher")
    def output_file(request: Request, job_id: str, name: str, fmt: str) -> Response:
        if not _OUTPUT.match(name) or fmt not in ("csv", "parquet"):
            raise NotFound("no such output file")
        result = console.client.get_result(_job_id(job_id))
        table = next((o.table for o in result.outputs if o.name == name and o.table is not None), None)
        if table is None:
            raise NotFound(f"job {job_id} has no table output {name!r}")
        return _download(table, f"{job_id}-{name}.{fmt}", fmt)

    @handler("jobs")
    def cancel(request: Request, job_id: str) -> Response:
        console.client.cancel_job(_job_id(job_id))
        return after(f"/jobs/{job_id}")

    @handler("budgets")
    def budgets(request: Request) -> Response:
        return page(
            request,
            "budgets.html",
            title="Privacy budgets",
            budgets=console.client.list_budgets(),
        )

    @handler("operator")
    def set_budget(request: Request) -> Response:
        data = form(request)
        try:
            epsilon, delta = float(data.get("epsilon", "")), float(data.get("delta", "") or 1e-6)
        except ValueError:
            raise InvalidRequest("epsilon and delta are numbers") from None
        b = console.client.set_budget(data.get("researcher", ""), data.get("dataset", ""), epsilon, delta)
        return after("/budgets", f"set {b.researcher} on {b.dataset}")

    # ---------------------------------------------------------------- operators

    @handler("operator")
    def review_queue(request: Request) -> Response:
        everything = console.client.list_packages()
        return page(
            request,
            "review.html",
            title="Review queue",
            pending=console.client.list_pending(),
            packages=everything,
        )

    @handler("operator")
    def review_package(request: Request, package_hash: str) -> Response:
        if not _HASH.match(package_hash):
            raise NotFound("review a package by its full hash")
        r = console.client.review_package(package_hash)
        files = [(n, c.decode("utf-8", "replace")) for n, c in sorted(r.files.items())]
        return page(
            request,
            "review_package.html",
            title=f"Review {r.package.name}",
            r=r,
            files=files,
            diff_lines=_diff_lines(r.diff),
        )

    @handler("operator")
    def decide_package(request: Request, package_hash: str, action: str) -> Response:
        data = form(request)
        if not _HASH.match(package_hash) or data.get("hash") != package_hash:
            raise InvalidRequest("the form's package hash is not the one reviewed")
        if action == "approve":
            try:
                days = float(data.get("days", "90"))
            except ValueError:
                raise InvalidRequest("days is a number") from None
            if not (math.isfinite(days) and 0 < days <= 3650):
                raise InvalidRequest("days is a number of days between 0 and 3650")
            # The client fetches the files again, re-hashes them here and signs only if they are the package
            # of this full hash: the bytes the page showed (a content hash names exactly one set of files).
            p = console.client.approve_package(package_hash, days=days)
        elif action == "reject":
            p = console.client.reject_package(package_hash, data.get("reason", ""))
        elif action == "revoke":
            p = console.client.revoke_approval(package_hash, data.get("reason", ""))
        else:
            raise NotFound("no such action")
        return after("/review", f"{p.name} {p.status}")

    # ---------------------------------------------------------------- output checkers

    @handler("output_checker")
    def checks(request: Request) -> Response:
        return page(
            request,
            "checks.html",
            title="Held results",
            held=console.client.list_held(),
        )

    @handler("output_checker")
    def check(request: Request, job_id: str) -> Response:
        held = console.client.get_held(_job_id(job_id))
        return page(
            request,
            "check.html",
            title=f"Check job {held.job.id}",
            h=held,
            outputs=_held_outputs(held),
            files=[(n, c.decode("utf-8", "replace")) for n, c in sorted(held.files.items())],
        )

    @handler("output_checker")
    def decide_result(request: Request, job_id: str) -> Response:
        data = form(request)
        held = console.client.get_held(_job_id(job_id))
        # Bound to what was shown: the page's result hash must be the result re-fetched now, whose outputs the
        # client re-hashes before signing (Client.decide with reviewed=...).
        if not _HASH.match(data.get("result_hash", "")) or data["result_hash"] != held.result_hash:
            raise FailedPrecondition("the result changed since it was shown: reload it and check again")
        try:
            decision = Decision(data.get("decision", ""))
        except ValueError:
            raise InvalidRequest("decide approve, reject or request_changes") from None
        console.client.decide(job_id, decision, data.get("reason", ""), reviewed=held)
        return after("/checks", f"job {job_id}: {decision.value}")

    # ---------------------------------------------------------------- auditors

    @handler("auditor")
    def audit(request: Request) -> Response:
        q = request.query_params
        filters = {k: q.get(k, "")[:200] for k in ("actor", "event", "job", "package")}
        limit = _int(q.get("limit", "100"), 1, 1000, 100)
        follow = q.get("follow") == "1"
        records = list(
            console.client.read_log(
                actor=filters["actor"],
                events=[filters["event"]] if filters["event"] else None,
                job=filters["job"],
                package=filters["package"],
                tail=limit,
            )
        )
        return page(
            request,
            "audit.html",
            title="Audit log",
            records=list(reversed(records)),
            filters=filters,
            limit=limit,
            follow=follow,
            refresh=LIVE_SECONDS if follow else 0,
            checkpoints=_checkpoints(console),
        )

    @handler("auditor")
    def verify(request: Request) -> Response:
        data = form(request)
        saved = _checkpoints(console)
        anchors = tuple(c for _, c in saved) if data.get("with_checkpoints") == "1" else ()
        report = console.client.verify_log(anchors)
        if data.get("save") == "1" and report.ok:
            cp = console.client.get_checkpoint()
            console.checkpoints_dir.mkdir(parents=True, exist_ok=True)
            path = console.checkpoints_dir / f"checkpoint-{cp.covers:08d}-{int(time.time())}.json"
            path.write_text(cp.to_json(), encoding="utf-8")
        return page(
            request,
            "verify.html",
            title="Verification",
            report=report,
            anchors=len(anchors),
            checkpoints=_checkpoints(console),
        )

    @handler("auditor")
    def audit_export(request: Request) -> Response:
        lines = [json.dumps(r.to_data(), sort_keys=True) for r in console.client.read_log()]
        return Response(
            "\n".join(lines) + "\n",
            media_type="application/x-ndjson",
            headers={"content-disposition": 'attachment; filename="audit.jsonl"'},
        )

    routes = [
        Route("/", home),
        Route("/catalog", catalog),
        Route("/catalog/{name}", dataset),
        Route("/catalog/{name}/mock.csv", mock),
        Route("/packages", packages),
        Route("/packages/{ref}", package),
        Route("/jobs", jobs),
        Route("/jobs/run", run_job, methods=["POST"]),
        Route("/jobs/{job_id}", job),
        Route("/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/jobs/{job_id}/outputs/{name}.{fmt}", output_file),
        Route("/budgets", budgets),
        Route("/budgets/set", set_budget, methods=["POST"]),
        Route("/review", review_queue),
        Route("/review/{package_hash}", review_package),
        Route("/review/{package_hash}/{action}", decide_package, methods=["POST"]),
        Route("/checks", checks),
        Route("/checks/{job_id}", check),
        Route("/checks/{job_id}/decide", decide_result, methods=["POST"]),
        Route("/audit", audit),
        Route("/audit/verify", verify, methods=["POST"]),
        Route("/audit/export.jsonl", audit_export),
        Mount("/static", StaticFiles(packages=[("saferoom.console", "static")]), name="static"),
    ]
    return Gate(Starlette(routes=routes), console.keys, port)


def _job_id(job_id: str) -> str:
    if not _JOB.match(job_id):
        raise NotFound("no such job")
    return job_id


def _int(text: str, lo: int, hi: int, default: int) -> int:
    """A number from a query string, within [lo, hi]; ``default`` for anything that is not a number."""
    try:
        return max(lo, min(hi, int(text)))
    except ValueError:
        return default


def _diff_lines(diff: str) -> list[tuple[str, Markup]]:
    """Each line of a diff: its kind (add, del, hunk) and its text with hidden characters shown."""
    kinds = {"+": "add", "-": "del", "@": "hunk"}
    return [(kinds.get(line[:1], ""), visible(line).html) for line in diff.split("\n")]


@dataclass(frozen=True)
class ShownOutput:
    """One output as a page shows it: its table (first rows), charts, value and what disclosure control did."""

    name: str
    kind: str
    columns: list[str]
    rows: list[list[str]]
    total_rows: int
    charts: list[Chart]
    value: Any
    noise: list[dict[str, Any]]
    report: dict[str, Any]


def _intervals(report: dict[str, Any]) -> dict[str, float]:
    return {n["column"]: float(n["ci95"]) for r in report.get("rules", []) for n in r.get("noise", []) if n.get("ci95")}


def _table_view(
    name: str, kind: str, table: pa.Table | None, value: Any, report: dict[str, Any], limit: int | None = MAX_ROWS_SHOWN
) -> ShownOutput:
    """``limit``: the rows shown (None: every row, as a checker must see what they sign)."""
    noise = [n for r in report.get("rules", []) for n in r.get("noise", [])]
    if table is None:
        return ShownOutput(name, kind, [], [], 0, [], value, noise, report)
    intervals = _intervals(report)
    head = (table if limit is None else table.slice(0, limit)).to_pylist()
    rows = [
        [
            _cell(row[c]) + (f" ± {_cell(intervals[c])}" if c in intervals and row[c] is not None else "")
            for c in table.column_names
        ]
        for row in head
    ]
    return ShownOutput(
        name, kind, table.column_names, rows, table.num_rows, charts_for(name, table, intervals), value, noise, report
    )


def _shown(result: Result) -> list[ShownOutput]:
    return [_table_view(o.name, o.kind, o.table, o.value, o.report) for o in result.outputs]


def _held_outputs(held: HeldResult) -> list[tuple[ShownOutput, HeldResult | Any]]:
    # Every row: the checker's decision releases all of them, so all of them are on the page they decide on.
    return [(_table_view(o.name, o.kind, o.table, o.value, o.report, limit=None), o) for o in held.outputs]


def _checkpoints(console: Console) -> list[tuple[str, Checkpoint]]:
    out = []
    with contextlib.suppress(OSError):
        for path in sorted(console.checkpoints_dir.glob("checkpoint-*.json")):
            try:
                out.append((path.name, Checkpoint.from_json(path.read_text(encoding="utf-8"))))
            except (ValueError, KeyError, OSError):
                continue
    return out


def _download(table: pa.Table, filename: str, fmt: str) -> Response:
    columns = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    plain = pa.table(columns, names=table.column_names)
    sink = io.BytesIO()
    if fmt == "csv":
        pa_csv.write_csv(plain, sink)
        media = "text/csv"
    else:
        pq.write_table(plain, sink)
        media = "application/vnd.apache.parquet"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    return Response(
        sink.getvalue(), media_type=media, headers={"content-disposition": f'attachment; filename="{safe}"'}
    )
