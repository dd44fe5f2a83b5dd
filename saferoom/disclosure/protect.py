"""The release rewrite: what may leave, and the plan changes that let the engine prove it.

Every node of an output plan is at one of three levels:

    public      only public datasets below it: releasable row by row
    rows        row-level data from a personal dataset: never releasable
    aggregate   cells of a group-by over personal rows, each counted and thresholded

A scan of a personal dataset clamps every numeric column to the public bounds the catalog declares, and reads
its privacy-unit column into a hidden column (``__u<k>``) that every
row-preserving node carries along. An aggregate over personal rows then counts, per personal source, the
distinct units behind each cell (a plain row count when the catalog declares one row per unit and no join or
union since the scan can have duplicated units), keeps the smallest count as the cell's contributors
(``__c<k>``), and drops cells below the strictest source policy right there, with a ``Threshold`` node, so that
no later sort, filter, head or join ever sees a small cell or its key. Aggregates of already-protected cells are
post-processing and stay releasable; min and max of personal rows never are.

An aggregate over rows of a differentially private dataset is cut out of the plan instead (``dp``): the engine
computes its exact statistics over rows bounded per privacy unit, the server releases them with noise, and the
plan above reads the noisy table through an ``Input`` node: everything built on it is post-processing. No exact
threshold, dominance, subset or secondary-suppression decision is taken on such data (each would leak through
what it suppresses); the noisy threshold on each cell's count takes their place.

The input plans come from the sandbox and are hostile: they are type-checked and may not name hidden columns.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from saferoom.catalog.manifest import Manifest, Policy
from saferoom.disclosure.cells import MAX_GRID
from saferoom.disclosure.dp import QUANTILE_BINS, DPColumn, NoisyAggregate
from saferoom.engine.functions import Domain, catalog_domain, expr_domain, hull, unknown
from saferoom.engine.optimize import prune_columns
from saferoom.engine.plan import (
    RELEASE_ONLY,
    AggExpr,
    Aggregate,
    Bound,
    Call,
    Col,
    Expr,
    Filter,
    Input,
    Join,
    Limit,
    Lit,
    Node,
    Project,
    Scalar,
    Scan,
    Sort,
    Threshold,
    Union,
    walk,
)
from saferoom.engine.schema import infer_schema
from saferoom.errors import InvalidPlan, ReleaseRefused

__all__ = ["HIDDEN_PREFIX", "CellTable", "DominanceRule", "Protected", "SubsetCheck", "ThresholdRule", "protect"]

HIDDEN_PREFIX = "_"
_ABSENT = 2**62  # stands for "this source has no rows in the cell" while taking the minimum
CONTRIBUTORS_PREFIX = "__c"
_LARGEST_SUM = 2.0**1000  # far below the largest double: a DP sum of values within bounds never overflows


@dataclass(frozen=True)
class Unit:
    """A privacy unit carried through row-level data: its hidden column and where it comes from."""

    column: str
    dataset: str
    unique: bool  # at most one row per unit so far
    minimum: int  # the dataset's min_contributors


@dataclass(frozen=True)
class ThresholdRule:
    """One suppression point: an aggregate whose cells need ``minimum`` distinct units."""

    label: str
    column: str
    minimum: int
    datasets: tuple[str, ...]
    units: tuple[str, ...]


@dataclass(frozen=True)
class Protected:
    """An output plan rewritten for release."""

    name: str
    kind: str  # "aggregate" | "public"
    plan: Node
    thresholds: dict[str, ThresholdRule] = field(default_factory=dict)
    minimums: dict[str, int] = field(default_factory=dict)  # contributor column -> required minimum
    clamped: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dataset -> columns clamped to bounds
    dominance: dict[str, DominanceRule] = field(default_factory=dict)
    subsets: dict[str, SubsetCheck] = field(default_factory=dict)  # checks whose failure withholds the output
    table: CellTable | None = None  # set when the output is a protected aggregate itself (for margins)
    noisy: dict[str, NoisyAggregate] = field(default_factory=dict)  # DP aggregates it reads (Input labels)


@dataclass(frozen=True)
class CellTable:
    """An output that is a group-by over personal rows as it stands: which rows it groups (by identity of the
    rewritten input), by which keys, and a plan listing every one of its cells' keys before suppression (for
    the server alone: secondary suppression must know which cells were suppressed to protect them)."""

    source: int
    keys: tuple[str, ...]
    cells: Node
    domains: tuple[tuple[Scalar, ...], ...] | None = None  # each key's public domain, when every key has one


@dataclass(frozen=True)
class _Level:
    kind: str  # "public" | "rows" | "aggregate"
    hidden: tuple[str, ...] = ()  # hidden column names carried by the node's output
    units: tuple[Unit, ...] = ()  # for "rows"
    # For "rows": visible columns derived from a magnitude column (income, price), and the hidden unit
    # columns of the people whose amounts they are. Renaming or computing with a magnitude keeps it one.
    magnitudes: dict[str, frozenset[str]] = field(default_factory=dict)
    checks: tuple[str, ...] = ()  # labels of the subset checks the data below must pass
    # For "rows": each visible column's value domain (bounds, null, NaN, infinity; ``engine.functions``),
    # from the catalog's declarations through the registry's domain rules.
    values: dict[str, Domain] = field(default_factory=dict)
    # For "rows": the catalog categories of columns passed through unchanged (the exact rules' public grids).
    domains: dict[str, tuple[Scalar, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SubsetCheck:
    """The DataSHIELD subset rule at one filter (or head, or join that drops rows) over personal rows: a one-row
    plan counting the units it keeps and leaves out; the outputs it feeds are withheld unless each count is 0 or
    at least ``minimum``."""

    label: str
    plan: Node  # one row: columns "kept" and "left" (distinct units)
    minimum: int
    dataset: str
    what: str  # "filter" | "head" | "join"


@dataclass(frozen=True)
class DominanceRule:
    """One dominance check point: the cells of an aggregate whose sums of a magnitude must not be dominated."""

    label: str
    n: int
    k: float
    p: float
    datasets: tuple[str, ...]
    outputs: tuple[str, ...]  # the aggregate columns checked


@dataclass(frozen=True)
class _Check:
    """One sum or mean of a magnitude, for one owning unit."""

    output: str
    amount: Expr
    unit: Unit
    policy: Policy
    top: str  # hidden column: the cell's largest contribution
    total: str  # hidden column: the cell's total
    unique: bool  # one row per unit: computed in the aggregate itself


def _columns_of(expr: Expr | None) -> set[str]:
    found: set[str] = set()
    stack: list[Expr | None] = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, Col):
            found.add(e.name)
        elif isinstance(e, Call):
            stack.extend(e.args)
    return found


def _magnitudes_through(
    columns: tuple[tuple[str, Expr], ...], before: dict[str, frozenset[str]]
) -> dict[str, frozenset[str]]:
    """Which projected columns still carry magnitudes, and whose."""
    out: dict[str, frozenset[str]] = {}
    for name, expr in columns:
        owners = frozenset().union(*(before.get(c, frozenset()) for c in _columns_of(expr)))
        if owners:
            out[name] = owners
    return out


def _bin_index(value: Expr, column: DPColumn) -> Expr:
    """The index (0..QUANTILE_BINS-1) of the quantile candidate interval holding ``value``."""
    lo, hi = column.lower, column.upper
    if hi <= lo:
        return Lit(0)
    if column.log_unit:  # evenly in log(1 + (x - lo) / u)
        position: Expr = Call(
            "log", (Call("add", (Lit(1.0), Call("div", (Call("sub", (value, Lit(lo))), Lit(column.log_unit))))),)
        )
        top = math.log1p((hi - lo) / column.log_unit)
    else:
        position, top = Call("sub", (value, Lit(lo))), hi - lo
    scaled = Call("floor", (Call("mul", (position, Lit(QUANTILE_BINS / top))),))
    return Call("clamp", (Call("cast_int", (scaled,)), Lit(0), Lit(QUANTILE_BINS - 1)))


def _nullable(values: Mapping[str, Domain], names: Collection[str]) -> dict[str, Domain]:
    """``values`` where the columns ``names`` may also be null (the missing side of an outer join)."""
    return {c: (replace(d, null=True) if c in names else d) for c, d in values.items()}


class _Rewriter:
    """Rewrites plans; a subtree shared by several parents (one object) is rewritten once."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.counter = 0
        self.thresholds: dict[str, ThresholdRule] = {}
        self.minimums: dict[str, int] = {}  # contributor column -> the minimum its cells met
        self.clamped: dict[str, set[str]] = {}  # dataset -> columns clamped to their public bounds
        self.dominance: dict[str, DominanceRule] = {}
        self.subsets: dict[str, SubsetCheck] = {}
        self.statistics: set[int] = set()  # model statistics: aggregates not checked for dominance
        self.tables: dict[int, CellTable] = {}  # id of a protected aggregate's top node -> its cell table
        self.noisy: dict[str, NoisyAggregate] = {}  # differentially private aggregates, by Input label
        self._done: dict[int, tuple[Node, Node, _Level]] = {}

    def _fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def rewrite(self, node: Node) -> tuple[Node, _Level]:
        if id(node) in self._done:
            _, new, level = self._done[id(node)]
            return new, level
        new, level = self._rewrite(node)
        self._done[id(node)] = (node, new, level)
        return new, level

    def _rewrite(self, node: Node) -> tuple[Node, _Level]:
        if isinstance(node, Scan):
            return self._scan(node)
        if isinstance(node, Filter):
            child, level = self.rewrite(node.input)
            if level.kind == "rows" and not self._private(level):  # DP noise covers any subset
                level = self._subset(child, level, node.predicate, None)
            return replace(node, input=child), level
        if isinstance(node, Project):
            child, level = self.rewrite(node.input)
            carried = tuple((h, Col(h)) for h in level.hidden)
            magnitudes = _magnitudes_through(node.columns, level.magnitudes)
            values = {name: expr_domain(e, level.values) for name, e in node.columns} if level.kind == "rows" else {}
            known = level.domains
            domains = {name: known[e.name] for name, e in node.columns if isinstance(e, Col) and e.name in known}
            level = replace(level, magnitudes=magnitudes, values=values, domains=domains)
            return Project(child, node.columns + carried), level
        if isinstance(node, Sort):
            child, level = self.rewrite(node.input)
            return replace(node, input=child), level
        if isinstance(node, Limit):
            child, level = self.rewrite(node.input)
            if level.kind == "rows" and self._private(level):
                # One person's row can push another's out of a head: not a per-person bounded change.
                raise ReleaseRefused(
                    f"head() of rows from {self._names(level)} is not allowed under differential privacy: "
                    "aggregate first, then sort and head the aggregate"
                )
            if level.kind == "rows":
                level = self._subset(child, level, None, node.n)
            return replace(node, input=child), level
        if isinstance(node, Aggregate):
            return self._aggregate(node)
        if isinstance(node, Join):
            return self._join(node)
        if isinstance(node, Union):
            return self._union(node)
        raise InvalidPlan(f"{type(node).__name__.lower()} nodes are reserved for the release step")

    def _scan(self, node: Scan) -> tuple[Node, _Level]:
        info = self.manifest.dataset(node.dataset)
        if info.is_public:
            return node, _Level("public")
        assert info.privacy_unit is not None
        hidden = self._fresh("__u")
        columns = node.columns if info.privacy_unit in node.columns else (*node.columns, info.privacy_unit)
        visible: list[tuple[str, Expr]] = []
        for name in node.columns:
            column = info.column(name)
            bounded = column.min is not None and column.max is not None
            if column.type in ("int64", "float64") and bounded and name != info.privacy_unit:
                # Personal values beyond the public bounds are clamped before anything uses them: one
                # outlier can then move a sum or mean only as far as the bounds allow.
                visible.append((name, Call("clamp", (Col(name), Lit(column.min), Lit(column.max)))))
                self.clamped.setdefault(info.name, set()).add(name)
            else:
                visible.append((name, Col(name)))
        project = Project(Scan(node.dataset, columns), (*visible, (hidden, Col(info.privacy_unit))))
        unit = Unit(hidden, info.name, info.one_row_per_unit, info.policy.min_contributors)
        magnitudes = {c: frozenset({hidden}) for c in node.columns if info.column(c).magnitude}
        values = {}
        for name in node.columns:
            c = info.column(name)
            declared = catalog_domain(c.type, c.min, c.max, c.categories)
            # A clamped column holds its bounds whatever the data (NaN becomes null, infinity a bound).
            values[name] = (
                replace(declared, nan=False, inf=False) if name in self.clamped.get(info.name, ()) else declared
            )
        domains: dict[str, tuple[Scalar, ...]] = {}
        for name in node.columns:
            column = info.column(name)
            if column.categories:
                domains[name] = column.categories
            elif column.type == "bool":
                domains[name] = (False, True)
        return project, _Level("rows", (hidden,), (unit,), magnitudes, values=values, domains=domains)

    def _private(self, level: _Level) -> bool:
        """Whether rows come from a dataset released only under differential privacy."""
        return any(self.manifest.dataset(u.dataset).policy.differential_privacy for u in level.units)

    def _values(self, node: Node, level: _Level) -> dict[str, Domain]:
        """The value domains of ``node``'s visible columns: tracked for personal rows, unknown otherwise."""
        if level.kind == "rows":
            return dict(level.values)
        schema = infer_schema(node, self.manifest)
        return {c: unknown(t) for c, t in schema.items() if not c.startswith(HIDDEN_PREFIX)}

    def _names(self, level: _Level) -> str:
        return ", ".join(sorted({u.dataset for u in level.units}))

    def _aggregate(self, node: Aggregate) -> tuple[Node, _Level]:
        child, level = self.rewrite(node.input)
        if level.kind == "public":
            return replace(node, input=child), level
        if level.kind == "aggregate":  # post-processing of cells that already passed their thresholds
            return replace(node, input=child), _Level("aggregate", checks=level.checks)
        if self._private(level):
            return self._noisy(node, child, level)
        refused = [agg.fn for _, agg in node.aggs if agg.fn in ("min", "max")]
        if refused:
            names = ", ".join(sorted({u.dataset for u in level.units}))
            raise ReleaseRefused(
                f"{refused[0]} of personal data ({names}) cannot be released: a minimum or maximum is one "
                "person's value"
            )
        counts: list[tuple[str, AggExpr]] = []
        for unit in level.units:
            agg = AggExpr("count") if unit.unique else AggExpr("count_distinct", Col(unit.column))
            counts.append((self._fresh("__n"), agg))
        checks = [] if id(node) in self.statistics else self._dominance_checks(node, level)
        # Amounts of units with one row each: the cell's largest contribution and total, in the same pass.
        inline = tuple(
            agg
            for check in checks
            if check.unique
            for agg in ((check.top, AggExpr("max", check.amount)), (check.total, AggExpr("sum", check.amount)))
        )
        contributors = self._fresh(CONTRIBUTORS_PREFIX)
        visible = tuple((*node.keys, *(n for n, _ in node.aggs)))
        carried = (*visible, *(name for name, _ in inline))
        if len(counts) == 1:
            rewritten: Node = Aggregate(child, node.keys, (*node.aggs, *inline, (contributors, counts[0][1])))
        else:
            # The smallest count among the sources present in the cell: a source with no rows in a cell (a
            # left join's missing side, another union input) contributes nothing to it.
            absent = Lit(_ABSENT)
            present = [Call("case", (Call("eq", (Col(n), Lit(0))), absent, Col(n))) for n, _ in counts]
            least: Expr = present[0]
            for other in present[1:]:
                least = Call("case", (Call("le", (least, other)), least, other))
            least = Call("case", (Call("eq", (least, absent)), Lit(0), least))
            rewritten = Project(
                Aggregate(child, node.keys, node.aggs + inline + tuple(counts)),
                (*tuple((c, Col(c)) for c in carried), (contributors, least)),
            )
        label = self._fresh("cells")
        minimum = max(u.minimum for u in level.units)
        datasets = tuple(sorted({u.dataset for u in level.units}))
        self.minimums[contributors] = minimum
        self.thresholds[label] = ThresholdRule(
            label, contributors, minimum, datasets, tuple(self._unit_name(u) for u in level.units)
        )
        out: Node = Threshold(rewritten, contributors, minimum, label)
        hidden: tuple[str, ...] = (contributors,)
        if checks:
            out, flag = self._dominance(out, child, node.keys, visible, contributors, checks)
            hidden = (contributors, flag)
        cells = Project(rewritten, tuple((k, Col(k)) for k in node.keys))
        domains = tuple(level.domains[k] for k in node.keys) if all(k in level.domains for k in node.keys) else None
        self.tables[id(out)] = CellTable(id(child), node.keys, cells, domains if node.keys else None)
        return out, _Level("aggregate", hidden, checks=level.checks)

    def _noisy(self, node: Aggregate, rows: Node, level: _Level) -> tuple[Node, _Level]:
        """Cut a differentially private aggregate out of the plan: its exact statistics over rows bounded per
        unit, noised by the server; the plan above reads the released table through an ``Input`` node."""
        names = self._names(level)
        if id(node) in self.statistics:
            raise ReleaseRefused(f"models (ols, logit) are not available on differentially private data ({names})")
        unit = level.units[0]
        if len(level.units) != 1 or level.checks or level.hidden != (unit.column,):
            raise ReleaseRefused(
                f"a differentially private aggregate over {names} may combine its rows with public data only: "
                "aggregate each personal dataset on its own, then join the aggregates"
            )
        policy = self.manifest.dataset(unit.dataset).policy
        k = policy.max_contributions
        bounded = rows if unit.unique else Bound(rows, unit.column, k)
        schema = infer_schema(node, self.manifest)
        statistics: list[tuple[str, AggExpr]] = []
        columns: list[DPColumn] = []
        histograms: dict[str, Node] = {}
        for name, agg in node.aggs:
            if agg.fn == "count" and agg.arg is None:
                columns.append(DPColumn(name, "count", integer=True))
                continue
            if agg.fn in ("count", "count_distinct"):
                source = self._fresh("__x")
                statistics.append((source, agg))
                columns.append(DPColumn(name, "count_values", source, integer=True))
                continue
            if agg.fn not in ("sum", "mean", "median", "quantile") or agg.arg is None:
                raise ReleaseRefused(
                    f"{agg.fn} of {names} is not available under differential privacy: use count, sum, mean, "
                    "median or quantile (e.g. a variance from the means of x and x * x)"
                )
            value = expr_domain(agg.arg, level.values)
            interval = value.interval
            if interval is None:
                raise ReleaseRefused(
                    f"{agg.fn} for {name!r} over {names}: under differential privacy a value needs public bounds "
                    "(the noise is scaled to them); compute it from bounded columns or use .clip(low, high)"
                )
            lo, hi = interval
            # A sum over at most rows x k values of at most max|bound| each must stay a finite float whatever the
            # data: a sum that overflowed to infinity would move by more than any sensitivity.
            most = self.manifest.dataset(unit.dataset).rows * k * max(abs(lo), abs(hi))
            if not most < _LARGEST_SUM:
                raise ReleaseRefused(
                    f"{agg.fn} for {name!r} over {names}: the bounds [{lo:g}, {hi:g}] are too wide for a sum over "
                    f"{self.manifest.dataset(unit.dataset).rows} rows; use .clip(low, high) with narrower bounds"
                )
            # Clamped in the engine: NaN becomes null and +-infinity a bound, so [lo, hi] holds for every value
            # the engine can produce (the sensitivity rests on that, not on the domain analysis above). Summed as
            # floats: an integer sum could wrap around.
            clamped = Call("clamp", (Call("cast_float", (agg.arg,)), Lit(float(lo)), Lit(float(hi))))
            source = self._fresh("__x")
            if agg.fn == "sum":
                statistics.append((source, AggExpr("sum", clamped)))
                columns.append(DPColumn(name, "sum", source, lo, hi, integer=schema[name] == "int64"))
            elif agg.fn == "mean":
                centred = Call("sub", (clamped, Lit((lo + hi) / 2)))
                statistics.append((source, AggExpr("sum", centred)))
                columns.append(DPColumn(name, "mean", source, lo, hi))
            else:
                q = 0.5 if agg.fn == "median" else float(agg.q if agg.q is not None else 0.5)
                amount = any(c in level.magnitudes for c in _columns_of(agg.arg)) and lo >= 0 and hi > lo
                column = DPColumn(name, "quantile", source, lo, hi, q, log_unit=(hi - lo) / 1e4 if amount else 0.0)
                project = Project(
                    bounded, (*((key, Col(key)) for key in node.keys), ("__bin", _bin_index(clamped, column)))
                )
                present = Filter(project, Call("not", (Call("is_null", (Col("__bin"),)),)))
                histograms[source] = Aggregate(present, (*node.keys, "__bin"), (("__n", AggExpr("count")),))
                columns.append(column)
        count = self._fresh("__n")
        exact = Aggregate(bounded, node.keys, (*statistics, (count, AggExpr("count"))))
        label = self._fresh("dp")
        released = tuple(schema.items())
        # Keys with a public set of values (catalog categories, true/false, or values the plan's literals fix,
        # e.g. when(...).otherwise(...) of strings): every combination is a cell, and no threshold is needed.
        domains = tuple(level.values[key].categories or () if key in level.values else () for key in node.keys)
        public = bool(node.keys) and all(domains) and math.prod(len(d) for d in domains) <= MAX_GRID
        self.noisy[label] = NoisyAggregate(
            label, unit.dataset, node.keys, exact, count, tuple(columns), histograms, k, policy.min_contributors,
            released, domains if public else None,
        )  # fmt: skip
        return Input(label, released), _Level("aggregate")

    def _dominance_checks(self, node: Aggregate, level: _Level) -> list[_Check]:
        """The sums and means of magnitudes in an aggregate, one check per owning unit."""
        units = {u.column: u for u in level.units}
        checks = []
        for name, agg in node.aggs:
            if agg.fn not in ("sum", "mean") or agg.arg is None:
                continue
            owners = frozenset().union(*(level.magnitudes.get(c, frozenset()) for c in _columns_of(agg.arg)))
            for owner in sorted(owners):
                unit = units[owner]
                policy = self.manifest.dataset(unit.dataset).policy
                top, total = self._fresh("__t"), self._fresh("__s")
                checks.append(_Check(name, agg.arg, unit, policy, top, total, unit.unique))
        return checks

    def _dominance(
        self,
        cells: Node,
        rows: Node,
        keys: tuple[str, ...],
        visible: tuple[str, ...],
        contributors: str,
        checks: list[_Check],
    ) -> tuple[Node, str]:
        """Suppress cells whose sums of a magnitude are dominated ((n, k) rule) or too well estimated by the
        runner-up (p% rule), from each cell's total and largest contribution per unit.

        The runner-up is bounded above by the largest contribution: exact top-two statistics need every row
        joined with its cell (about 15x the cost of the query on 10M rows), and the bound only ever suppresses
        more (cells where one contributor alone holds more than k/2), never less. Units with several rows
        have them added up per unit first; cells without statistics (e.g. a null key) fail closed.
        """
        main = cells
        passthrough = [c for c in (*visible, contributors)]
        inline = [name for c in checks if c.unique for name in (c.top, c.total)]
        separate = [c for c in checks if not c.unique]
        missing: list[Expr] = []
        if separate:
            one = self._fresh("__k")  # a constant join key, so that aggregates without keys join too
            main = Project(main, (*((c, Col(c)) for c in (*passthrough, *inline)), (one, Lit(1))))
            for check in separate:
                v, seen = self._fresh("__v"), self._fresh("__w")
                per_unit = Aggregate(rows, (*keys, check.unit.column), ((v, AggExpr("sum", check.amount)),))
                cell_stats = Aggregate(
                    per_unit,
                    keys,
                    (
                        (check.top, AggExpr("max", Col(v))),
                        (check.total, AggExpr("sum", Col(v))),
                        (seen, AggExpr("count")),
                    ),
                )
                # A cell the join cannot match (a null key) gets no statistics: it must fail, not pass.
                missing.append(Call("is_null", (Col(seen),)))
                stats = Project(
                    cell_stats,
                    (
                        *((k, Col(k)) for k in keys),
                        (check.top, Col(check.top)),
                        (check.total, Col(check.total)),
                        (seen, Col(seen)),
                        (one, Lit(1)),
                    ),
                )
                main = Join(main, stats, (*keys, one), "left")
        conditions: list[Expr] = []
        for check in checks:
            top, total, policy = Col(check.top), Col(check.total), check.policy
            largest_n = top if policy.dominance_n == 1 else Call("mul", (Lit(2), top))
            rest = Call("sub", (total, Call("mul", (Lit(2), top))))
            dominated_not = Call("le", (largest_n, Call("mul", (Lit(policy.dominance_k), total))))
            estimable_not = Call("ge", (rest, Call("mul", (Lit(policy.p_percent), top))))
            # No amounts at all in the cell (all null): nothing to dominate. Missing statistics: fail.
            nothing = Call("and", (Call("is_null", (total,)), Call("is_null", (top,))))
            conditions.append(Call("or", (nothing, Call("and", (dominated_not, estimable_not)))))
        for gap in missing:
            conditions.append(Call("not", (gap,)))
        passed = conditions[0]
        for condition in conditions[1:]:
            passed = Call("and", (passed, condition))
        flag = self._fresh("__d")
        checked = Project(
            main,
            (*((c, Col(c)) for c in passthrough), (flag, Call("case", (passed, Lit(1), Lit(0))))),
        )
        label = self._fresh("dominance")
        strictest = min((c.policy for c in checks), key=lambda p: (p.dominance_k, -p.p_percent))
        self.dominance[label] = DominanceRule(
            label,
            strictest.dominance_n,
            strictest.dominance_k,
            strictest.p_percent,
            tuple(sorted({c.unit.dataset for c in checks})),
            tuple(dict.fromkeys(c.output for c in checks)),
        )
        return Threshold(checked, flag, 1, label), flag

    def _subset(self, rows: Node, level: _Level, predicate: Expr | None, head: int | None) -> _Level:
        """Add a subset check for a filter (``predicate``) or a head (``head`` rows) over personal ``rows``."""
        labels = []
        for unit in level.units:
            if head is not None and 0 < head < unit.minimum:  # data-independent: refuse outright
                raise ReleaseRefused(
                    f"head({head}) of personal rows ({unit.dataset}) selects fewer than {unit.minimum} people"
                )
            label = self._fresh("subset")
            if head is not None:  # a head keeps at most ``head`` rows: check what it leaves out
                total = AggExpr("count") if unit.unique else AggExpr("count_distinct", Col(unit.column))
                counts = Aggregate(rows, (), (("total", total),))
                plan: Node = Project(counts, (("kept", Lit(head)), ("left", Call("sub", (Col("total"), Lit(head))))))
            else:
                assert predicate is not None
                if unit.unique:
                    kept = AggExpr("sum", Call("case", (predicate, Lit(1), Lit(0))))
                    left = AggExpr("sum", Call("case", (predicate, Lit(0), Lit(1))))
                else:
                    kept = AggExpr("count_distinct", Call("case", (predicate, Col(unit.column), Lit(None))))
                    left = AggExpr("count_distinct", Call("case", (predicate, Lit(None), Col(unit.column))))
                plan = Aggregate(rows, (), (("kept", kept), ("left", left)))
            self.subsets[label] = SubsetCheck(label, plan, unit.minimum, unit.dataset, "head" if head else "filter")
            labels.append(label)
        return replace(level, checks=(*level.checks, *labels))

    def _unit_name(self, unit: Unit) -> str:
        return self.manifest.dataset(unit.dataset).privacy_unit or "unit"

    def _join(self, node: Join) -> tuple[Node, _Level]:
        left, ll = self.rewrite(node.left)
        right, rl = self.rewrite(node.right)
        if set(ll.hidden) & set(rl.hidden):  # the same subtree on both sides: rename the right's hidden columns
            right, rl = self._rename_hidden(right, rl)
        kinds = {ll.kind, rl.kind}
        if "rows" in kinds:
            # A join can repeat a unit's rows: count distinct units from here on.
            units = tuple(replace(u, unique=False) for u in (*ll.units, *rl.units))
            magnitudes = dict(ll.magnitudes)
            for name, owners in rl.magnitudes.items():
                magnitudes[name] = magnitudes.get(name, frozenset()) | owners
            lv, rv = self._values(left, ll), self._values(right, rl)
            # The unmatched rows of an outer join have nulls on the other side; its keys come from either side.
            lv = _nullable(lv, set(lv) - set(node.on)) if node.how in ("right", "full") else lv
            rv = _nullable(rv, set(rv)) if node.how in ("left", "full") else rv
            keys = {k: hull([lv[k], rv[k]], lv[k].type if lv[k].type == rv[k].type else "float64") for k in node.on}
            values = {**lv, **{c: d for c, d in rv.items() if c not in node.on}, **keys}
            domains = {**ll.domains, **rl.domains}
            level = _Level("rows", ll.hidden + rl.hidden, units, magnitudes, ll.checks + rl.checks, values, domains)
        elif "aggregate" in kinds:
            level = _Level("aggregate", ll.hidden + rl.hidden, checks=ll.checks + rl.checks)
        else:
            level = _Level("public")
        joined = Join(left, right, node.on, node.how)
        # A join drops the unmatched rows of a side (both for inner, the right for left, the left for right):
        # over personal rows it acts as a filter, and faces the subset rule like one.
        for side, side_level, dropping in ((left, ll, ("inner", "right")), (right, rl, ("inner", "left"))):
            if node.how in dropping and side_level.kind == "rows" and not self._private(side_level):
                level = replace(level, checks=(*level.checks, *self._join_subset(joined, side, side_level)))
        return joined, level

    def _join_subset(self, joined: Node, side: Node, level: _Level) -> list[str]:
        """Subset checks for a join that may drop rows of ``side``: units kept in ``joined`` vs in ``side``."""
        labels = []
        for unit in level.units:
            label = self._fresh("subset")
            total = AggExpr("count") if unit.unique else AggExpr("count_distinct", Col(unit.column))
            kept = Aggregate(joined, (), (("kept", AggExpr("count_distinct", Col(unit.column))),))
            before = Aggregate(side, (), (("total", total),))
            one = (("__k", Lit(1)),)
            pair = Join(
                Project(kept, (("kept", Col("kept")), *one)), Project(before, (("total", Col("total")), *one)), ("__k",)
            )
            plan = Project(pair, (("kept", Col("kept")), ("left", Call("sub", (Col("total"), Col("kept"))))))
            self.subsets[label] = SubsetCheck(label, plan, unit.minimum, unit.dataset, "join")
            labels.append(label)
        return labels

    def _rename_hidden(self, node: Node, level: _Level) -> tuple[Node, _Level]:
        renames = {h: self._fresh(h[:3]) for h in level.hidden}
        visible = [c for c in infer_schema(node, self.manifest) if c not in renames]
        columns = tuple((c, Col(c)) for c in visible) + tuple((new, Col(old)) for old, new in renames.items())
        units = tuple(replace(u, column=renames.get(u.column, u.column)) for u in level.units)
        for old, new in renames.items():
            if old in self.minimums:
                self.minimums[new] = self.minimums[old]
        magnitudes = {c: frozenset(renames.get(o, o) for o in owners) for c, owners in level.magnitudes.items()}
        renamed = replace(level, hidden=tuple(renames.values()), units=units, magnitudes=magnitudes)
        return Project(node, columns), renamed

    def _union(self, node: Union) -> tuple[Node, _Level]:
        parts = [self.rewrite(i) for i in node.inputs]
        hidden = tuple(dict.fromkeys(h for _, level in parts for h in level.hidden))
        kinds = {level.kind for _, level in parts}
        inputs = []
        for child, level in parts:
            missing = [h for h in hidden if h not in level.hidden]
            if missing:
                visible = [c for c in infer_schema(child, self.manifest) if c not in level.hidden]
                columns = tuple((c, Col(c)) for c in (*visible, *level.hidden))
                child = Project(child, columns + tuple((h, Lit(None)) for h in missing))
            inputs.append(child)
        if "rows" in kinds:
            units = tuple(replace(u, unique=False) for _, level in parts for u in level.units)
            magnitudes: dict[str, frozenset[str]] = {}
            for _, level in parts:
                for name, owners in level.magnitudes.items():
                    magnitudes[name] = magnitudes.get(name, frozenset()) | owners
        checks = tuple(dict.fromkeys(c for _, level in parts for c in level.checks))
        if "rows" in kinds:
            schema = infer_schema(node, self.manifest)
            each = [self._values(child, level) for child, level in parts]
            values = {name: hull([v[name] for v in each], schema[name]) for name in schema}
            domains = {
                name: domain
                for name, domain in parts[0][1].domains.items()
                if all(level.kind == "rows" and level.domains.get(name) == domain for _, level in parts)
            }
            return Union(tuple(inputs)), _Level("rows", hidden, units, magnitudes, checks, values, domains)
        if "aggregate" in kinds:
            return Union(tuple(inputs)), _Level("aggregate", hidden, checks=checks)
        return Union(tuple(inputs)), _Level("public")


def _check_names(node: Node) -> None:
    """Algorithm plans may not name hidden columns nor contain release-only nodes."""
    for n in walk(node):
        names: list[str] = []
        exprs: list[Expr | AggExpr | None] = []
        if isinstance(n, Scan):
            names += n.columns
        elif isinstance(n, Filter):
            exprs.append(n.predicate)
        elif isinstance(n, Project):
            names += [c for c, _ in n.columns]
            exprs += [e for _, e in n.columns]
        elif isinstance(n, Aggregate):
            names += [*n.keys, *(c for c, _ in n.aggs)]
            exprs += [a for _, a in n.aggs]
        elif isinstance(n, Join):
            names += n.on
        elif isinstance(n, Sort):
            names += [k for k, _ in n.keys]
        elif isinstance(n, RELEASE_ONLY):
            raise InvalidPlan(f"{type(n).__name__.lower()} nodes are reserved for the release step")
        while exprs:
            e = exprs.pop()
            if isinstance(e, Col):
                names.append(e.name)
            elif isinstance(e, Call):
                exprs.extend(e.args)
            elif isinstance(e, AggExpr):
                exprs.append(e.arg)
        hidden = [x for x in names if x.startswith(HIDDEN_PREFIX)]
        if hidden:
            raise InvalidPlan(f"column names starting with '_' are reserved ({hidden[0][:40]!r})")


def protect(outputs: Mapping[str, Node], manifest: Manifest, models: Collection[str] = ()) -> dict[str, Protected]:
    """Rewrite every output for release, or refuse the first one that may not leave.

    ``models`` names outputs that are a model's sufficient statistics (built by the server, never released:
    only coefficients leave, under the residual-df rule). Their top aggregate gets the contributor threshold
    and everything below it every rule, but no dominance check: its sums are signed (a score is ~0 at the
    fit), where the (n,k) and p% rules mean nothing.

    Subtrees shared between outputs (``plan.share_subtrees``) stay shared, so the engine computes them once.
    """
    protected: dict[str, Protected] = {}
    rewriter = _Rewriter(manifest)
    for name, node in outputs.items():
        if name in models:
            rewriter.statistics.add(id(node))
        _check_names(node)
        infer_schema(node, manifest)  # InvalidPlan for ill-typed plans, before anything runs
        plan, level = rewriter.rewrite(node)
        if level.kind == "rows":
            datasets = ", ".join(sorted({u.dataset for u in level.units}))
            raise ReleaseRefused(
                f"output {name!r} is row-level data from the personal dataset {datasets}: only aggregates may "
                "leave; group it with group_by(...).agg(...) before returning it"
            )
        labels = {n.label for n in walk(plan) if isinstance(n, Threshold)}
        thresholds = {label: rule for label, rule in rewriter.thresholds.items() if label in labels}
        used = prune_columns(node)[0]  # what the output really reads, for the report
        read = {(n.dataset, c) for n in walk(used) if isinstance(n, Scan) for c in n.columns}
        clamped = {
            dataset: tuple(sorted(c for c in columns if (dataset, c) in read))
            for dataset, columns in sorted(rewriter.clamped.items())
            if any((dataset, c) in read for c in columns)
        }
        dominance = {label: rule for label, rule in rewriter.dominance.items() if label in labels}
        subsets = {label: rewriter.subsets[label] for label in dict.fromkeys(level.checks)}
        minimums = dict(rewriter.minimums)
        table = rewriter.tables.get(id(plan))
        noisy = _noisy_below(plan, rewriter.noisy)
        protected[name] = Protected(
            name, level.kind, plan, thresholds, minimums, clamped, dominance, subsets, table, noisy
        )
    return protected


def _noisy_below(root: Node, registry: Mapping[str, NoisyAggregate]) -> dict[str, NoisyAggregate]:
    """The DP aggregates a plan reads, directly or through other DP aggregates' exact plans."""
    found: dict[str, NoisyAggregate] = {}
    stack = [root]
    while stack:
        for n in walk(stack.pop()):
            if isinstance(n, Input) and n.label not in found:
                found[n.label] = registry[n.label]
                stack.append(found[n.label].exact)
                stack.extend(found[n.label].histograms.values())
    return found
