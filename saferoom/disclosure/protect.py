"""The release rewrite: what may leave, and the plan changes that let the engine prove it.

``protect`` walks each output plan once (``Rewriter``), keeping for every node its level (``levels``: public,
personal rows, or protected cells) and, for personal rows, their privacy units, magnitudes and value domains.
A scan of a personal dataset clamps every numeric column to the public bounds the catalog declares and reads
its privacy-unit column into a hidden column (``__u<k>``) that every row-preserving node carries along. Each
rule is a module of its own, called from here where it applies:

    thresholds    an aggregate over personal rows: contributors counted per cell, small cells dropped
    dominance     sums and means of magnitudes in those cells: (n, k) and p% rules
    subsets       a filter, head or join that drops personal rows: the subset rule
    dp_rewrite    an aggregate over a differentially private dataset: cut out, noised by the server

Aggregates of already-protected cells are post-processing and stay releasable. The input plans come from the
sandbox and are hostile: they are type-checked and may not name hidden columns or release-only nodes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

from saferoom.catalog.manifest import Manifest
from saferoom.disclosure import dp_rewrite, subsets, thresholds
from saferoom.disclosure.dp import NoisyAggregate
from saferoom.disclosure.levels import (
    CONTRIBUTORS_PREFIX,
    HIDDEN_PREFIX,
    CellTable,
    DominanceRule,
    Level,
    Protected,
    QuantileRule,
    Selection,
    SubsetCheck,
    ThresholdRule,
    Unit,
    magnitudes_through,
    nullable,
)
from saferoom.engine.functions import Domain, catalog_domain, expr_domain, hull, unknown
from saferoom.engine.optimize import prune_columns
from saferoom.engine.plan import (
    RELEASE_ONLY,
    AggExpr,
    Aggregate,
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

__all__ = [
    "CONTRIBUTORS_PREFIX",
    "HIDDEN_PREFIX",
    "CellTable",
    "DominanceRule",
    "Protected",
    "Rewriter",
    "SubsetCheck",
    "ThresholdRule",
    "protect",
]


class Rewriter:
    """Rewrites plans; a subtree shared by several parents (one object) is rewritten once."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.counter = 0
        self.thresholds: dict[str, ThresholdRule] = {}
        self.minimums: dict[str, int] = {}  # contributor column -> the minimum its cells met
        self.clamped: dict[str, set[str]] = {}  # dataset -> columns clamped to their public bounds
        self.dominance: dict[str, DominanceRule] = {}
        self.quantiles: dict[str, QuantileRule] = {}
        self.subsets: dict[str, SubsetCheck] = {}
        self.conditions: dict[tuple[int, Expr], list[str]] = {}  # (rows, condition) -> its subset checks
        self.selections: dict[str, Selection] = {}  # sets of people for the differencing check, by label
        self.statistics: set[int] = set()  # model statistics: aggregates not checked for dominance
        self.tables: dict[int, CellTable] = {}  # id of a protected aggregate's top node -> its cell table
        self.noisy: dict[str, NoisyAggregate] = {}  # differentially private aggregates, by Input label
        self._done: dict[int, tuple[Node, Node, Level]] = {}

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def rewrite(self, node: Node) -> tuple[Node, Level]:
        if id(node) in self._done:
            _, new, level = self._done[id(node)]
            return new, level
        new, level = self._rewrite(node)
        self._done[id(node)] = (node, new, level)
        return new, level

    def _rewrite(self, node: Node) -> tuple[Node, Level]:
        if isinstance(node, Scan):
            return self._scan(node)
        if isinstance(node, Filter):
            child, level = self.rewrite(node.input)
            if level.kind == "rows" and not self.private(level):  # DP noise covers any subset
                before = set(level.checks)
                level = subsets.at_filter_or_head(self, child, level, node.predicate, None)
                filtered = replace(node, input=child)
                for label in level.checks:  # the filter's own selections: the rows it keeps are ``filtered``
                    if label not in before and label in self.selections:
                        self.selections[label] = replace(self.selections[label], rows=filtered)
                level = subsets.at_conditions(self, child, level, [node.predicate], within_only=True)
                return filtered, level
            return replace(node, input=child), level
        if isinstance(node, Project):
            child, level = self.rewrite(node.input)
            carried = tuple((h, Col(h)) for h in level.hidden)
            magnitudes = magnitudes_through(node.columns, level.magnitudes)
            values = {name: expr_domain(e, level.values) for name, e in node.columns} if level.kind == "rows" else {}
            known = level.domains
            domains = {name: known[e.name] for name, e in node.columns if isinstance(e, Col) and e.name in known}
            if level.kind == "rows" and not self.private(level):  # a computed key, flag or masked value
                level = subsets.at_conditions(self, child, level, [e for _, e in node.columns])
            level = replace(level, magnitudes=magnitudes, values=values, domains=domains)
            return Project(child, node.columns + carried), level
        if isinstance(node, Sort):
            child, level = self.rewrite(node.input)
            return replace(node, input=child), level
        if isinstance(node, Limit):
            child, level = self.rewrite(node.input)
            if level.kind == "rows" and self.private(level):
                # One person's row can push another's out of a head: not a per-person bounded change.
                raise ReleaseRefused(
                    f"head() of rows from {self.names(level)} is not allowed under differential privacy: "
                    "aggregate first, then sort and head the aggregate"
                )
            if level.kind == "rows":
                level = subsets.at_filter_or_head(self, child, level, None, node.n)
            return replace(node, input=child), level
        if isinstance(node, Aggregate):
            return self._aggregate(node)
        if isinstance(node, Join):
            return self._join(node)
        if isinstance(node, Union):
            return self._union(node)
        raise InvalidPlan(f"{type(node).__name__.lower()} nodes are reserved for the release step")

    def _scan(self, node: Scan) -> tuple[Node, Level]:
        info = self.manifest.dataset(node.dataset)
        if info.is_public:
            return node, Level("public")
        assert info.privacy_unit is not None
        hidden = self.fresh("__u")
        columns = node.columns if info.privacy_unit in node.columns else (*node.columns, info.privacy_unit)
        visible: list[tuple[str, Expr]] = []
        for name in node.columns:
            column = info.column(name)
            bounded = column.min is not None and column.max is not None
            if column.type in ("int64", "float64", "date32", "timestamp") and bounded and name != info.privacy_unit:
                # Personal values beyond the public bounds are clamped before anything uses them: one
                # outlier can then move a sum or mean only as far as the bounds allow.
                visible.append((name, Call("clamp", (Col(name), Lit(column.min), Lit(column.max)))))
                self.clamped.setdefault(info.name, set()).add(name)
            else:
                visible.append((name, Col(name)))
        project = Project(Scan(node.dataset, columns), (*visible, (hidden, Col(info.privacy_unit))))
        unit = Unit(hidden, info.name, info.one_row_per_unit, info.policy.min_contributors)
        everyone = f"everyone_{info.name}"
        if everyone not in self.selections:  # how many units the dataset has is public (the catalog says)
            units: Node = Scan(node.dataset, (info.privacy_unit,))
            if not info.one_row_per_unit:
                units = Aggregate(units, (info.privacy_unit,), (("__x", AggExpr("count")),))
            members = Project(units, (("__m", Col(info.privacy_unit)),))
            minimum = info.policy.min_contributors
            scanned = Scan(node.dataset, (info.privacy_unit,))
            distinct = AggExpr("count") if info.one_row_per_unit else AggExpr("count_distinct", Col(info.privacy_unit))
            sizes = Aggregate(scanned, (), (("__n", distinct),))
            self.selections[everyone] = Selection(everyone, info.name, minimum, 0, members, "everyone", sizes=sizes)
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
        return project, Level("rows", (hidden,), (unit,), magnitudes, values=values, domains=domains)

    def private(self, level: Level) -> bool:
        """Whether rows come from a dataset released only under differential privacy."""
        return any(self.manifest.dataset(u.dataset).policy.differential_privacy for u in level.units)

    def _values(self, node: Node, level: Level) -> dict[str, Domain]:
        """The value domains of ``node``'s visible columns: tracked for personal rows, unknown otherwise."""
        if level.kind == "rows":
            return dict(level.values)
        schema = infer_schema(node, self.manifest)
        return {c: unknown(t) for c, t in schema.items() if not c.startswith(HIDDEN_PREFIX)}

    def names(self, level: Level) -> str:
        return ", ".join(sorted({u.dataset for u in level.units}))

    def _aggregate(self, node: Aggregate) -> tuple[Node, Level]:
        child, level = self.rewrite(node.input)
        if level.kind == "public":
            return replace(node, input=child), level
        if level.kind == "aggregate":  # post-processing of cells that already passed their thresholds
            return replace(node, input=child), Level("aggregate", checks=level.checks)
        if self.private(level):
            return dp_rewrite.cut_out(self, node, child, level)
        arguments = [agg.arg for _, agg in node.aggs if agg.arg is not None]
        level = subsets.at_conditions(self, child, level, arguments)  # when(...) inside an aggregate
        return thresholds.protect_cells(self, node, child, level)

    def unit_name(self, unit: Unit) -> str:
        return self.manifest.dataset(unit.dataset).privacy_unit or "unit"

    def _join(self, node: Join) -> tuple[Node, Level]:
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
            lv = nullable(lv, set(lv) - set(node.on)) if node.how in ("right", "full") else lv
            rv = nullable(rv, set(rv)) if node.how in ("left", "full") else rv
            keys = {k: hull([lv[k], rv[k]], lv[k].type if lv[k].type == rv[k].type else "float64") for k in node.on}
            values = {**lv, **{c: d for c, d in rv.items() if c not in node.on}, **keys}
            domains = {**ll.domains, **rl.domains}
            level = Level("rows", ll.hidden + rl.hidden, units, magnitudes, ll.checks + rl.checks, values, domains)
        elif "aggregate" in kinds:
            level = Level("aggregate", ll.hidden + rl.hidden, checks=ll.checks + rl.checks)
        else:
            level = Level("public")
        joined = Join(left, right, node.on, node.how)
        # A join drops the unmatched rows of a side (both for inner, the right for left, the left for right):
        # over personal rows it acts as a filter, and faces the subset rule like one.
        for side, side_level, dropping in ((left, ll, ("inner", "right")), (right, rl, ("inner", "left"))):
            if node.how in dropping and side_level.kind == "rows" and not self.private(side_level):
                level = replace(level, checks=(*level.checks, *subsets.at_join(self, joined, side, side_level)))
        return joined, level

    def _rename_hidden(self, node: Node, level: Level) -> tuple[Node, Level]:
        renames = {h: self.fresh(h[:3]) for h in level.hidden}
        visible = [c for c in infer_schema(node, self.manifest) if c not in renames]
        columns = tuple((c, Col(c)) for c in visible) + tuple((new, Col(old)) for old, new in renames.items())
        units = tuple(replace(u, column=renames.get(u.column, u.column)) for u in level.units)
        for old, new in renames.items():
            if old in self.minimums:
                self.minimums[new] = self.minimums[old]
        magnitudes = {c: frozenset(renames.get(o, o) for o in owners) for c, owners in level.magnitudes.items()}
        renamed = replace(level, hidden=tuple(renames.values()), units=units, magnitudes=magnitudes)
        return Project(node, columns), renamed

    def _union(self, node: Union) -> tuple[Node, Level]:
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
            return Union(tuple(inputs)), Level("rows", hidden, units, magnitudes, checks, values, domains)
        if "aggregate" in kinds:
            return Union(tuple(inputs)), Level("aggregate", hidden, checks=checks)
        return Union(tuple(inputs)), Level("public")


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
    rewriter = Rewriter(manifest)
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
        quantiles = {label: rule for label, rule in rewriter.quantiles.items() if label in labels}
        below = {id(n) for n in walk(plan)}
        selections = tuple(
            s
            for s in rewriter.selections.values()
            if (s.what == "cells" and s.node in below) or (s.what != "cells" and s.label in level.checks)
        )
        sets_of = {s.dataset for s in selections}
        everyone = tuple(s for s in rewriter.selections.values() if s.what == "everyone" and s.dataset in sets_of)
        selections = everyone + selections
        subsets = {label: rewriter.subsets[label] for label in dict.fromkeys(level.checks)}
        minimums = dict(rewriter.minimums)
        table = rewriter.tables.get(id(plan))
        noisy = _noisy_below(plan, rewriter.noisy)
        protected[name] = Protected(
            name,
            level.kind,
            plan,
            thresholds,
            minimums,
            clamped,
            dominance,
            subsets,
            table,
            noisy,
            quantiles,
            selections,
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
