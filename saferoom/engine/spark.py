"""The scale-out engine: the same plans as ``ArrowEngine``, as Spark Connect DataFrame operations.

Every node and expression becomes DataFrame operations and Spark SQL built-in functions, sent to the cluster as
a relational plan (protobuf) by ``pyspark.sql.connect``: no Python UDF, no pickled function, no saferoom code
runs on the cluster. Only what a plan returns comes back (as Arrow); Threshold drop counts come back as one
number per label.

Where Spark and the Arrow engine differ, this module follows the registry's semantics (``engine.functions``),
except where noted:
    Sort      ties are broken by the remaining columns (ascending, nulls last) so that a head is deterministic;
              Arrow keeps input order among ties (a stable sort)
    Limit     without a Sort above it: some n rows (Spark has no input order)
    Bound     keeps, per value of the column, the n rows that come first when ordered by all their other
              columns (a choice that depends only on that unit's own rows); Arrow keeps the first n in input
              order
    cast_str  of a float: Spark's formatting ("1.0"); Arrow writes "1"
    extremes  on NaN, +-infinity, -0.0, integers beyond 2**53 and grid cells outside any map, is_in, pow,
              round, cell_lat and cell_lon may differ (both engines stay total; ordinary values agree, as
              tests/spark/test_spark_totality.py checks); comparisons follow IEEE on both (NaN equals nothing)
Floating-point functions (cos, asin, pow, ...) are Java's rather than C's: results may differ in the last bit.

The session runs with ANSI mode off (set per session, whatever the cluster's default), as the Arrow engine
behaves: no expression fails because of the values it meets (an error that depends on data would tell the
researcher something about a row). Integer arithmetic wraps around; division and modulo by zero are null; casts
are gated explicitly (text that is not a number, a float beyond int64: null) so both engines agree exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa

from saferoom.catalog.manifest import Manifest
from saferoom.engine.arrow import Execution
from saferoom.engine.expressions import (  # the same cast gates on both engines
    COL_OFFSET,
    DAY_MAX,
    DAY_MIN,
    EARTH_RADIUS_M,
    FLOAT_TEXT,
    INT_TEXT,
    M_PER_DEG_LAT,
    M_PER_DEG_LON,
    ROW_FACTOR,
    ROW_OFFSET,
    TIMESTAMP,
    TS_MAX,
    TS_MIN,
    bounds_of,
    date_of,
    date_unit_of,
    digits_of,
    histogram_of,
    meters_of,
    timestamp_of,
)
from saferoom.engine.functions import check_engine
from saferoom.engine.optimize import prune_columns
from saferoom.engine.plan import (
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
    Scan,
    Sort,
    Threshold,
    Union,
    walk,
)
from saferoom.engine.schema import Schema, agg_type, expr_type, node_schema
from saferoom.errors import InvalidPlan, Unavailable

if TYPE_CHECKING:
    from pyspark.sql.connect.session import SparkSession

# pyspark's annotations mix its classic and Connect classes; columns and frames are typed loosely here.
Column: TypeAlias = Any
DataFrame: TypeAlias = Any

__all__ = ["KERNELS", "SESSION_CONF", "SparkEngine", "connect", "spark_type"]

# Set on every session: the semantics the translation relies on.
SESSION_CONF = {
    "spark.sql.ansi.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.caseSensitive": "true",
}
_SPARK_TYPES = {
    "int64": "bigint",
    "float64": "double",
    "string": "string",
    "bool": "boolean",
    "date32": "date",
    "timestamp": "timestamp_ntz",  # wall-clock time, no time zone, as Arrow's timestamp[s] without one
}
_EXACT = 2.0**52  # every double at least this large is an integer
_RAD = math.pi / 180.0


def spark_type(logical: str) -> str:
    """The Spark SQL type of a catalog logical type."""
    return _SPARK_TYPES.get(logical, "string")


def connect(url: str) -> SparkSession:
    """A Spark Connect session (``sc://host:port/;use_ssl=true;token=...``) with ``SESSION_CONF`` applied."""
    from pyspark.errors import PySparkException
    from pyspark.sql.connect.session import SparkSession

    try:
        session = SparkSession.builder.remote(url).create()
        for key, value in SESSION_CONF.items():
            session.conf.set(key, value)
    except PySparkException as exc:
        raise Unavailable(f"cannot reach the Spark Connect endpoint: {_short(exc)}") from None
    return session


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _name(name: str) -> str:
    """A column name as Spark's resolver reads it (quoted: names may hold dots)."""
    return "`" + name.replace("`", "``") + "`"


class SparkEngine:
    """Executes plans on a Spark cluster through a Spark Connect ``session``.

    ``locations``: dataset name -> the Parquet directory the cluster reads it from. Datasets not listed there
    come from ``local`` (Arrow tables, sent with the plan as a local relation: only small public ones should
    be); ``inputs`` are the tables supplied for ``Input`` nodes.
    """

    def __init__(
        self,
        session: SparkSession,
        manifest: Manifest,
        locations: Mapping[str, str],
        inputs: Mapping[str, pa.Table] | None = None,
        local: Callable[[str], pa.Table] | None = None,
    ) -> None:
        self._session = session
        self._manifest = manifest
        self._locations = dict(locations)
        self._inputs = dict(inputs or {})
        self._local = local

    def execute(self, plan: Node) -> Execution:
        return self.execute_all([plan])[0]

    def execute_all(self, plans: list[Node]) -> list[Execution]:
        """Execute several plans, one Spark action each (plus one small count per Threshold)."""
        from pyspark.errors import PySparkException

        try:
            run = _Run(self._session, self._manifest, self._locations, self._inputs, self._local)
            try:
                return [run.execute(root) for root in prune_columns(*plans)]
            finally:
                run.release()
        except RecursionError:
            raise InvalidPlan("the plan is nested too deeply") from None
        except PySparkException as exc:
            if _unreachable(exc):
                raise Unavailable(f"the Spark cluster is unavailable: {_short(exc)}") from None
            raise InvalidPlan(f"the engine could not execute the plan: {_short(exc)}") from None


def _unreachable(exc: BaseException) -> bool:
    from pyspark.errors import RetriesExceeded
    from pyspark.errors.exceptions.connect import SparkConnectGrpcException

    return isinstance(exc, RetriesExceeded) or (
        isinstance(exc, SparkConnectGrpcException) and "UNAVAILABLE" in str(exc).upper()
    )


class _Run:
    """One execution: a DataFrame per node (shared subtrees are one DataFrame), Threshold inputs cached."""

    def __init__(
        self,
        session: SparkSession,
        manifest: Manifest,
        locations: dict[str, str],
        inputs: dict[str, pa.Table],
        local: Callable[[str], pa.Table] | None,
    ) -> None:
        import pyspark.sql.connect.functions as F

        self.F: Any = F
        self._session = session
        self._manifest = manifest
        self._locations = locations
        self._inputs = inputs
        self._local = local
        self._frames: dict[int, tuple[DataFrame, Schema]] = {}
        self._dropped: dict[int, tuple[str, int]] = {}
        self._cached: list[DataFrame] = []

    def release(self) -> None:
        """Drop what this run cached on the cluster."""
        for frame in self._cached:
            frame.unpersist()

    def execute(self, root: Node) -> Execution:
        frame, schema = self.frame(root)
        dropped = {self._dropped[id(n)][0]: self._dropped[id(n)][1] for n in walk(root) if id(n) in self._dropped}
        return Execution(_normalize(frame.toArrow(), schema), dropped)

    # ------------------------------------------------------------------ nodes

    def frame(self, node: Node) -> tuple[DataFrame, Schema]:
        if id(node) not in self._frames:
            self._frames[id(node)] = self._translate(node)
        return self._frames[id(node)]

    def _translate(self, node: Node) -> tuple[DataFrame, Schema]:
        F = self.F
        if isinstance(node, Scan):
            return self._scan(node)
        if isinstance(node, Input):
            return self._input(node)
        if isinstance(node, Union):
            parts = [self.frame(i) for i in node.inputs]
            schema = node_schema(node, [s for _, s in parts], self._manifest)
            order = list(parts[0][1])
            frames = [self._cast(df, s, schema).select(*[_name(c) for c in order]) for df, s in parts]
            out = frames[0]
            for other in frames[1:]:
                out = out.unionByName(other)
            return out, schema
        if isinstance(node, Join):
            (left, ls), (right, rs) = self.frame(node.left), self.frame(node.right)
            schema = node_schema(node, [ls, rs], self._manifest)
            for key in node.on:  # an int key against a float key: compare as floats, as Spark would
                if ls[key] != rs[key] and "null" not in (ls[key], rs[key]):
                    left = left.withColumn(key, F.col(_name(key)).cast("double"))
                    right = right.withColumn(key, F.col(_name(key)).cast("double"))
                    schema[key] = "float64"
            joined = left.join(right, on=list(node.on), how={"full": "outer"}.get(node.how, node.how))
            return joined.select(*[_name(c) for c in schema]), schema
        df, below = self.frame(node.input)
        schema = node_schema(node, [below], self._manifest)
        if isinstance(node, Filter):
            return df.filter(self._bool(node.predicate, below)), schema
        if isinstance(node, Project):
            columns = [self.expr(e, below)[0].alias(name) for name, e in node.columns]
            return df.select(*columns), schema
        if isinstance(node, Aggregate):
            return self._aggregate(df, below, node), schema
        if isinstance(node, Sort):
            keys = [k for k, _ in node.keys]
            order = [F.col(_name(k)).desc_nulls_last() if d else F.col(_name(k)).asc_nulls_last() for k, d in node.keys]
            order += [F.col(_name(c)).asc_nulls_last() for c in schema if c not in keys]
            return df.orderBy(*order), schema
        if isinstance(node, Limit):
            return df.limit(node.n), schema
        if isinstance(node, Bound):
            from pyspark.sql.connect.window import Window

            others = [F.col(_name(c)).asc_nulls_last() for c in schema if c != node.column]
            window = Window.partitionBy(F.col(_name(node.column))).orderBy(*(others or [F.lit(1)]))
            rank = "__bound_rank"
            ranked = df.withColumn(rank, F.row_number().over(window))
            return ranked.filter(F.col(rank) <= node.n).drop(rank), schema
        assert isinstance(node, Threshold)
        cached = df.persist()
        self._cached.append(cached)
        keep = F.coalesce(F.col(_name(node.column)) >= F.lit(node.minimum), F.lit(False))
        dropped = cached.filter(~keep).count()
        self._dropped[id(node)] = (node.label, int(dropped))
        return cached.filter(keep), schema

    def _scan(self, node: Scan) -> tuple[DataFrame, Schema]:
        info = self._manifest.dataset(node.dataset)
        schema = node_schema(node, [], self._manifest)
        location = self._locations.get(node.dataset)
        if location is not None:
            ddl = ", ".join(f"{_name(c.name)} {spark_type(c.type)}" for c in info.columns)
            df = self._session.read.schema(ddl).parquet(location)
        elif self._local is not None:
            table = self._local(node.dataset).select(list(node.columns))
            df = self._local_frame(table, schema)
        else:
            raise InvalidPlan(f"dataset {node.dataset!r} is not available to the Spark engine")
        return df.select(*[_name(c) for c in node.columns]), schema

    def _input(self, node: Input) -> tuple[DataFrame, Schema]:
        supplied = self._inputs.get(node.label)
        names = [name for name, _ in node.columns]
        if supplied is None or supplied.column_names != names:
            raise InvalidPlan(f"no table was supplied for input {node.label!r}")
        schema = dict(node.columns)
        return self._local_frame(supplied, schema), schema

    def _local_frame(self, table: pa.Table, schema: Schema) -> DataFrame:
        """A small Arrow table sent to the cluster inside the plan (a local relation)."""
        plain = pa.table(
            [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns],
            names=table.column_names,
        )
        ddl = ", ".join(f"{_name(n)} {spark_type(t)}" for n, t in schema.items())
        if plain.num_rows == 0 or any(pa.types.is_null(t) for t in plain.schema.types):
            plain = pa.table(
                [c.cast(_arrow_type(schema[n])) for n, c in zip(plain.column_names, plain.columns, strict=True)],
                names=plain.column_names,
            )
        return self._session.createDataFrame(plain, schema=ddl)

    def _cast(self, df: DataFrame, have: Schema, want: Schema) -> DataFrame:
        F = self.F
        changed = [c for c in have if have[c] != want[c]]
        for name in changed:
            df = df.withColumn(name, F.col(_name(name)).cast(spark_type(want[name])))
        return df

    def _aggregate(self, df: DataFrame, schema: Schema, node: Aggregate) -> DataFrame:
        F = self.F
        for key in node.keys:
            if key not in schema:
                raise InvalidPlan(f"unknown group key {key!r}")
        columns = [self.agg(a, schema).alias(name) for name, a in node.aggs]
        keys = [F.col(_name(k)) for k in node.keys]
        if not columns:  # only the distinct keys (or one row of nothing)
            grouped = df.groupBy(*keys).agg(F.count(F.lit(1)).alias("__rows")) if keys else df.agg(F.count(F.lit(1)))
            return grouped.select(*keys)
        return df.groupBy(*keys).agg(*columns) if keys else df.agg(*columns)

    # ------------------------------------------------------------------ expressions

    def agg(self, agg: AggExpr, schema: Schema) -> Column:
        F = self.F
        agg_type(agg, schema)  # refuses what the Arrow engine refuses
        if agg.arg is None:
            return F.count(F.lit(1))
        x, t = self.expr(agg.arg, schema)
        if agg.fn == "count":
            return F.count(x)
        if agg.fn == "count_distinct":
            return F.count_distinct(x)
        if agg.fn == "sum":
            return F.sum(x)
        if agg.fn == "mean":
            return F.avg(x)
        if agg.fn == "std":
            return F.stddev_samp(self._float(x, t))
        if agg.fn in ("median", "quantile"):
            q = 0.5 if agg.fn == "median" else float(agg.q or 0.0)
            return F.percentile(self._float(x, t), F.lit(q))  # exact, linear interpolation
        if agg.fn == "min":
            return F.min(x)
        if agg.fn == "max":
            return F.max(x)
        raise InvalidPlan(f"unknown aggregate {agg.fn!r}")

    def _bool(self, expr: Expr, schema: Schema) -> Column:
        column, t = self.expr(expr, schema)
        if t not in ("bool", "null"):
            raise InvalidPlan(f"filter needs a true/false condition, got {t}")
        return column if t == "bool" else column.cast("boolean")

    def _float(self, column: Column, t: str) -> Column:
        return column if t == "float64" else column.cast("double")

    def _floor(self, x: Column) -> Column:
        """floor of a double, as a double (Spark's floor returns a long)."""
        F = self.F
        return F.when(F.abs(x) < F.lit(_EXACT), F.floor(x).cast("double")).otherwise(x)

    def _ceil(self, x: Column) -> Column:
        F = self.F
        return F.when(F.abs(x) < F.lit(_EXACT), F.ceil(x).cast("double")).otherwise(x)

    def _trunc(self, x: Column) -> Column:
        F = self.F
        return F.when(F.abs(x) < F.lit(_EXACT), x.cast("bigint").cast("double")).otherwise(x)

    def _round(self, x: Column, digits: int) -> Column:
        """Half away from zero, computed as Arrow does: on the binary value scaled by 10**digits."""
        F = self.F
        scale = F.lit(10.0 ** abs(digits))
        scaled = x if digits == 0 else (x * scale if digits > 0 else x / scale)
        whole = self._trunc(scaled)
        away = F.when(F.abs(scaled - whole) >= F.lit(0.5), F.signum(scaled)).otherwise(F.lit(0.0))
        rounded = whole + away
        back = rounded if digits == 0 else (rounded / scale if digits > 0 else rounded * scale)
        exact = F.isnan(scaled) | F.abs(scaled).eqNullSafe(F.lit(math.inf)) | (scaled == whole)
        return F.when(exact, x).otherwise(back)

    def expr(self, expr: Expr, schema: Schema) -> tuple[Column, str]:
        """The Spark column for ``expr`` over rows of ``schema``, and its logical type."""
        F = self.F
        if isinstance(expr, Col):
            return F.col(_name(expr.name)), expr_type(expr, schema)
        if isinstance(expr, Lit):
            t = expr_type(expr, schema)
            value = F.lit(expr.value)
            return (value.cast("bigint") if t == "int64" else value), t
        args = [self.expr(a, schema) for a in expr.args]
        placeholders = {f"\0{i}": t for i, (_, t) in enumerate(args)}
        typed = Call(expr.fn, tuple(a if isinstance(a, Lit) else Col(f"\0{i}") for i, a in enumerate(expr.args)))
        out = expr_type(typed, placeholders)
        return self._call(expr, [c for c, _ in args], [t for _, t in args], out), out

    def _call(self, expr: Call, a: list[Column], t: list[str], out: str) -> Column:
        """A function call, through the translation registered for it in ``KERNELS``."""
        kernel = KERNELS.get(expr.fn)
        if kernel is None:
            raise InvalidPlan(f"unknown function {expr.fn!r}")
        fl = [self._float(c, k) for c, k in zip(a, t, strict=True)]
        return kernel(_Args(self, self.F, expr, a, t, fl, out))

    def _case(self, x: _Args) -> Column:
        F = self.F
        *pairs, otherwise = x.a
        kinds = x.t[:-1][0::2]
        result = None
        for i in range(0, len(pairs), 2):
            cond = pairs[i] if kinds[i // 2] == "bool" else pairs[i].cast("boolean")
            value = pairs[i + 1]
            result = F.when(cond, value) if result is None else result.when(cond, value)
        assert result is not None
        column: Column = result.otherwise(otherwise)
        return column.cast(spark_type(x.out)) if x.out != "null" else column

    def _round_call(self, x: _Args) -> Column:
        digits = digits_of(_literal(x.expr.args[1])) if len(x.expr.args) > 1 else 0
        if x.t[0] == "int64" and digits >= 0:
            return x.a[0]
        return self._round(x.fl[0], digits)

    def _cast_int(self, x: _Args) -> Column:
        F, a, t = self.F, x.a, x.t
        if t[0] == "string":
            text = F.trim(a[0])
            digits = F.regexp_replace(F.regexp_replace(text, r"\.[0-9]*$", ""), r"^\+", "")
            return F.when(text.rlike(INT_TEXT), digits.cast("bigint"))
        if t[0] == "float64":  # NaN compares greater than everything in Spark: outside, null
            inside = (a[0] >= F.lit(-(2.0**63))) & (a[0] < F.lit(2.0**63))
            return F.when(inside, a[0].cast("bigint"))
        if t[0] == "date32":
            return self._days(a[0])
        if t[0] == "timestamp":
            return self._seconds(a[0])
        return a[0].cast("bigint")

    def _days(self, date: Column) -> Column:
        """A date's days since 1970-01-01 (bigint), null outside years 1 to 9999 (as on Arrow)."""
        F = self.F
        days = F.unix_date(date).cast("bigint")
        return F.when((days >= F.lit(DAY_MIN)) & (days <= F.lit(DAY_MAX)), days)

    def _seconds(self, moment: Column) -> Column:
        """A timestamp's seconds since 1970-01-01 00:00:00 (bigint), null outside years 1 to 9999. The session's
        time zone is UTC, so the instant of a wall-clock time is that time in UTC."""
        F = self.F
        seconds = F.unix_seconds(moment.cast("timestamp")).cast("bigint")
        return F.when((seconds >= F.lit(TS_MIN)) & (seconds <= F.lit(TS_MAX)), seconds)

    def _from_seconds(self, seconds: Column) -> Column:
        return self.F.timestamp_seconds(seconds).cast("timestamp_ntz")

    def _in_years(self, value: Column, t: str = "date32") -> Column:
        inside = self._seconds(value) if t == "timestamp" else self._days(value)
        return self.F.when(inside.isNotNull(), value)

    def _date_trunc(self, x: _Args) -> Column:
        F, t = self.F, x.t[0]
        unit = date_unit_of(_literal(x.expr.args[1]), timestamp=t == "timestamp")
        if t == "timestamp":
            return F.date_trunc(unit, self._in_years(x.a[0], t)).cast("timestamp_ntz")
        return F.trunc(self._in_years(x.a[0]), unit)

    def _date_part(self, x: _Args) -> Column:
        F = self.F
        d = self._in_years(x.a[0], x.t[0])
        part = {
            "year": F.year,
            "month": F.month,
            "day": F.dayofmonth,
            "hour": F.hour,
            "minute": F.minute,
            "second": F.second,
        }.get(x.expr.fn)
        if part is None:  # weekday: Spark's dayofweek is 1 = Sunday .. 7 = Saturday; ISO's 1 = Monday
            return ((F.dayofweek(d) + F.lit(5)) % F.lit(7) + F.lit(1)).cast("bigint")
        return part(d).cast("bigint")

    def _add_days(self, x: _Args) -> Column:
        F = self.F
        span = DAY_MAX - DAY_MIN
        n = x.a[1].cast("bigint")
        n = F.when((n >= F.lit(-span)) & (n <= F.lit(span)), n)
        days = self._days(x.a[0]) + n
        inside = (days >= F.lit(DAY_MIN)) & (days <= F.lit(DAY_MAX))
        return F.date_from_unix_date(F.when(inside, days).cast("int"))

    def _cast_float(self, x: _Args) -> Column:
        F, a, t = self.F, x.a, x.t
        if t[0] == "string":
            text = F.trim(a[0])
            return F.when(text.rlike(FLOAT_TEXT), text.cast("double"))
        return a[0].cast("double")

    def _grid_cell(self, x: _Args) -> Column:
        F, fl = self.F, x.fl
        meters = _meters(x.expr.args[2])
        row = self._floor(fl[0] * F.lit(M_PER_DEG_LAT) / F.lit(meters))
        col = self._floor(fl[1] * self._lon_scale(row, meters) / F.lit(meters))
        cell = (row + F.lit(float(ROW_OFFSET))) * F.lit(float(ROW_FACTOR)) + (col + F.lit(float(COL_OFFSET)))
        inside = (cell >= F.lit(-(2.0**63))) & (cell < F.lit(2.0**63))  # NaN, +-inf, beyond int64: null
        return F.when(inside, cell.cast("bigint"))

    def _cell_centre(self, x: _Args) -> Column:
        F = self.F
        meters = _meters(x.expr.args[1])
        cell = x.a[0].cast("bigint")
        quotient = (cell.cast("double") / F.lit(float(ROW_FACTOR))).cast("bigint")  # truncates, exactly
        row = (quotient - F.lit(ROW_OFFSET)).cast("double")
        if x.expr.fn == "cell_lat":
            return (row + F.lit(0.5)) * F.lit(meters) / F.lit(M_PER_DEG_LAT)
        col = (cell - quotient * F.lit(ROW_FACTOR) - F.lit(COL_OFFSET)).cast("double")
        return (col + F.lit(0.5)) * F.lit(meters) / self._lon_scale(row, meters)

    def _distance(self, x: _Args) -> Column:
        F, fl = self.F, x.fl
        p1, p2 = fl[0] * F.lit(_RAD), fl[2] * F.lit(_RAD)
        dlat = p2 - p1
        dlon = (fl[3] - fl[1]) * F.lit(_RAD)
        h = F.pow(F.sin(dlat / F.lit(2.0)), F.lit(2.0)) + F.cos(p1) * F.cos(p2) * F.pow(
            F.sin(dlon / F.lit(2.0)), F.lit(2.0)
        )
        h = F.when(h > F.lit(1.0), F.lit(1.0)).otherwise(h)
        return F.asin(F.sqrt(h)) * F.lit(2.0 * EARTH_RADIUS_M)

    def _histogram(self, x: _Args) -> Column:
        F, fl = self.F, x.fl
        start, stop, bins = _histogram_args(x.expr)
        width = (stop - start) / bins
        index = self._floor((fl[0] - F.lit(start)) / F.lit(width))
        last = F.lit(float(bins - 1))
        index = F.when(index < F.lit(0.0), F.lit(0.0)).when(index > last, last).otherwise(index)
        return F.when(~F.isnan(fl[0]), index * F.lit(width) + F.lit(start))  # NaN has no bin: null

    def _lon_scale(self, row: Column, meters: float) -> Column:
        F = self.F
        ref_lat = (row + F.lit(0.5)) * F.lit(meters) / F.lit(M_PER_DEG_LAT)
        return F.cos(ref_lat * F.lit(_RAD)) * F.lit(M_PER_DEG_LON)

    def _is_in(self, expr: Call, x: Column) -> Column:
        """Like Arrow's is_in: a null matches a null among the values; otherwise never null."""
        F = self.F
        items = [_literal(v) for v in expr.args[1:]]
        kinds = {type(i) for i in items if i is not None}
        if len(kinds - {int, float}) > 1 or (kinds & {str} and kinds - {str}):
            raise InvalidPlan("is_in values must all be numbers or all be strings")
        values = [i for i in items if i is not None]
        matched = F.coalesce(x.isin(values), F.lit(False)) if values else F.lit(False)
        return F.when(x.isNull(), F.lit(None in items)).otherwise(matched)

    def _clamp(self, expr: Call, x: Column, t: str) -> Column:
        F = self.F
        lo, hi = bounds_of(_literal(expr.args[1]), _literal(expr.args[2]))
        low: Column
        high: Column
        if t == "timestamp":  # bounds in seconds since 1970-01-01 00:00:00
            seconds = F.unix_seconds(x.cast("timestamp")).cast("bigint")
            lowest, highest = max(math.ceil(lo), -(2**63)), min(math.floor(hi), 2**63 - 1)
            if lowest > highest:
                return F.lit(None).cast("timestamp_ntz")
            low, high = F.lit(lowest).cast("bigint"), F.lit(highest).cast("bigint")
            clamped = F.when(seconds < low, low).when(seconds > high, high).otherwise(seconds)
            return self._from_seconds(clamped)
        if t == "date32":  # bounds in days since 1970-01-01
            days = F.unix_date(x).cast("bigint")
            lowest, highest = math.ceil(max(lo, -(2.0**31))), math.floor(min(hi, 2.0**31 - 1))
            if lowest > highest:
                return F.lit(None).cast("date")
            clamped = F.when(days < F.lit(lowest), F.lit(lowest)).when(days > F.lit(highest), F.lit(highest))
            return F.date_from_unix_date(clamped.otherwise(days).cast("int"))
        if t == "int64":  # the integers within the bounds (none: null), as on Arrow
            lowest, highest = max(math.ceil(lo), -(2**63)), min(math.floor(hi), 2**63 - 1)
            if lowest > highest:
                return F.lit(None).cast("bigint")
            low, high = F.lit(lowest).cast("bigint"), F.lit(highest).cast("bigint")
        else:  # NaN becomes null (Spark orders NaN above every number: test it first)
            low, high = F.lit(float(lo)), F.lit(float(hi))
            return F.when(F.isnan(x), F.lit(None).cast("double")).when(x < low, low).when(x > high, high).otherwise(x)
        return F.when(x < low, low).when(x > high, high).otherwise(x)


@dataclass(frozen=True)
class _Args:
    """What a translation gets: the run (for its helpers), pyspark's functions, the call, its argument
    columns and types, the arguments as doubles, and the result type."""

    run: _Run
    F: Any
    expr: Call
    a: list[Column]
    t: list[str]
    fl: list[Column]
    out: str


def _compare(op: Callable[[Column, Column], Column], on_nan: bool = False) -> Callable[[_Args], Column]:
    """A comparison with IEEE NaN semantics, as on Arrow (Spark's NaN equals NaN and is above every number)."""

    def compare(x: _Args) -> Column:
        F, (a, b) = x.F, x.a
        floats = [c for c, t in zip(x.a, x.t, strict=True) if t == "float64"]
        if not floats:
            return op(a, b)
        nan = F.isnan(floats[0]) if len(floats) == 1 else F.isnan(floats[0]) | F.isnan(floats[1])
        both = (x.fl[0], x.fl[1]) if len(floats) == 1 else (a, b)  # an integer beside a float: as doubles
        return F.when(nan & a.isNotNull() & b.isNotNull(), F.lit(on_nan)).otherwise(op(*both))

    return compare


def _pair(x: _Args, i: int, j: int) -> _Args:
    """The arguments ``i`` and ``j`` of a call, as a call of two."""
    return _Args(x.run, x.F, x.expr, [x.a[i], x.a[j]], [x.t[i], x.t[j]], [x.fl[i], x.fl[j]], x.out)


def _logic(x: _Args) -> Column:
    b = [c if k == "bool" else c.cast("boolean") for c, k in zip(x.a, x.t, strict=True)]
    return ~b[0] if x.expr.fn == "not" else (b[0] & b[1] if x.expr.fn == "and" else b[0] | b[1])


# The Spark translation of every function of the registry (``engine.functions``), by name; checked below.
KERNELS: dict[str, Callable[[_Args], Column]] = {
    "add": lambda x: x.a[0] + x.a[1],
    "sub": lambda x: x.a[0] - x.a[1],
    "mul": lambda x: x.a[0] * x.a[1],
    "div": lambda x: x.F.try_divide(x.fl[0], x.fl[1]),
    "mod": lambda x: x.F.try_mod(x.fl[0], x.fl[1]) if x.out == "float64" else x.F.try_mod(x.a[0], x.a[1]),
    "pow": lambda x: x.F.pow(x.fl[0], x.fl[1]),
    "neg": lambda x: -x.a[0],
    "abs": lambda x: x.F.abs(x.a[0]),
    "floor": lambda x: x.run._floor(x.fl[0]),
    "ceil": lambda x: x.run._ceil(x.fl[0]),
    "round": lambda x: x.run._round_call(x),
    "sqrt": lambda x: x.F.sqrt(x.fl[0]),
    "log": lambda x: x.F.when((x.fl[0] > x.F.lit(0.0)) & ~x.F.isnan(x.fl[0]), x.F.ln(x.fl[0])),
    "exp": lambda x: x.F.exp(x.fl[0]),
    "sin": lambda x: x.F.sin(x.fl[0]),
    "cos": lambda x: x.F.cos(x.fl[0]),
    "radians": lambda x: x.fl[0] * x.F.lit(_RAD),
    "eq": _compare(lambda p, q: p == q),
    "ne": _compare(lambda p, q: p != q, on_nan=True),
    "lt": _compare(lambda p, q: p < q),
    "le": _compare(lambda p, q: p <= q),
    "gt": _compare(lambda p, q: p > q),
    "ge": _compare(lambda p, q: p >= q),
    "and": _logic,
    "or": _logic,
    "not": _logic,
    "is_null": lambda x: x.a[0].isNull(),
    "is_in": lambda x: x.run._is_in(x.expr, x.a[0]),
    "between": lambda x: _compare(lambda p, q: p >= q)(_pair(x, 0, 1)) & _compare(lambda p, q: p <= q)(_pair(x, 0, 2)),
    "clamp": lambda x: x.run._clamp(x.expr, x.a[0], x.t[0]),
    "case": lambda x: x.run._case(x),
    "cast_int": lambda x: x.run._cast_int(x),
    "cast_float": lambda x: x.run._cast_float(x),
    "cast_str": lambda x: (x.run._in_years(x.a[0], x.t[0]) if x.t[0] in ("date32", "timestamp") else x.a[0]).cast(
        "string"
    ),
    "grid_cell": lambda x: x.run._grid_cell(x),
    "cell_lat": lambda x: x.run._cell_centre(x),
    "cell_lon": lambda x: x.run._cell_centre(x),
    "distance_m": lambda x: x.run._distance(x),
    "histogram": lambda x: x.run._histogram(x),
    "date": lambda x: x.F.lit(date_of([_literal(a) for a in x.expr.args])),
    "year": lambda x: x.run._date_part(x),
    "month": lambda x: x.run._date_part(x),
    "day": lambda x: x.run._date_part(x),
    "weekday": lambda x: x.run._date_part(x),
    "date_trunc": lambda x: x.run._date_trunc(x),
    "days_between": lambda x: x.run._days(x.a[1]) - x.run._days(x.a[0]),
    "add_days": lambda x: x.run._add_days(x),
    "timestamp": lambda x: x.F.lit(
        timestamp_of([_literal(a) for a in x.expr.args]).isoformat(sep=" ")  # text: no time zone applied
    ).cast("timestamp_ntz"),
    "hour": lambda x: x.run._date_part(x),
    "minute": lambda x: x.run._date_part(x),
    "second": lambda x: x.run._date_part(x),
    "to_date": lambda x: x.run._in_years(x.a[0], x.t[0]).cast("date"),
    "seconds_between": lambda x: x.run._seconds(x.a[1]) - x.run._seconds(x.a[0]),
}
check_engine("Spark", KERNELS)


def _literal(expr: Expr) -> Any:
    if not isinstance(expr, Lit):
        raise InvalidPlan("expected a literal value")
    return expr.value


def _meters(expr: Expr) -> float:
    return meters_of(_literal(expr))


def _histogram_args(expr: Call) -> tuple[float, float, int]:
    return histogram_of(*(_literal(v) for v in expr.args[1:]))


_ARROW = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date32": pa.date32(),
    "timestamp": TIMESTAMP,
}


def _arrow_type(logical: str) -> pa.DataType:
    return _ARROW.get(logical, pa.string())


def _normalize(table: pa.Table, schema: Schema) -> pa.Table:
    """Spark's Arrow result in the Arrow engine's types: plain nullable columns, large strings made small."""
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        t = column.type
        if schema.get(name) == "null":  # only nulls (Spark may have given them a type)
            column = pa.chunked_array([pa.nulls(len(column))], pa.null())
        elif pa.types.is_large_string(t):
            column = column.cast(pa.string())
        elif pa.types.is_integer(t) and t != pa.int64():
            column = column.cast(pa.int64())
        elif pa.types.is_timestamp(t) and t != TIMESTAMP:  # Spark's microseconds: whole seconds here
            column = column.cast(pa.timestamp(t.unit)).cast(TIMESTAMP, safe=False)
        elif pa.types.is_null(t) and schema.get(name, "null") != "null":
            column = column.cast(_arrow_type(schema[name]))
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)
