"""A deterministic synthetic catalog of a Xiamen-like city.

Six districts with real-ish centres and shares of the population; people live in households clustered around
district sub-centres; incomes are log-normal and differ by district and age; housing prices per m2 differ by
district (Siming highest) and drift upwards over time. The same seed and scale give byte-identical files.

Large datasets are written in record batches of ``CHUNK`` rows, each drawn from its own seeded generator
(``[seed, dataset, chunk]``), so memory stays flat whatever ``scale`` is.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from saferoom.catalog import statistics
from saferoom.catalog.catalog import schema_of
from saferoom.catalog.manifest import Column, DatasetInfo, Manifest, MockSpec, Policy

__all__ = ["CHUNK", "DISTRICTS", "generate_catalog"]

CHUNK = 1_000_000
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class District:
    name: str
    lat: float
    lon: float
    share: float  # of the population
    income: float  # median adult income, yuan per year
    price_m2: float  # median housing price per m2, yuan (2019)
    spread: float  # degrees: how far people live from the sub-centres


DISTRICTS = (
    District("Siming", 24.462, 118.108, 0.19, 82_000, 68_000, 0.016),
    District("Huli", 24.512, 118.146, 0.20, 76_000, 58_000, 0.018),
    District("Jimei", 24.600, 118.070, 0.19, 60_000, 36_000, 0.028),
    District("Haicang", 24.490, 117.990, 0.13, 58_000, 34_000, 0.026),
    District("Tong'an", 24.730, 118.150, 0.17, 48_000, 24_000, 0.040),
    District("Xiang'an", 24.620, 118.250, 0.12, 45_000, 22_000, 0.040),
)
DISTRICT_NAMES = tuple(d.name for d in DISTRICTS)
_SHARES = np.array([d.share for d in DISTRICTS]) / sum(d.share for d in DISTRICTS)
_CENTRE = np.array([[d.lat, d.lon] for d in DISTRICTS])
_SPREAD = np.array([d.spread for d in DISTRICTS])
# Each district has three sub-centres (offsets in degrees) weighted 0.5 / 0.3 / 0.2.
_SUB_OFFSETS = np.array([[0.0, 0.0], [0.018, -0.022], [-0.015, 0.024]])
_SUB_WEIGHTS = np.array([0.5, 0.3, 0.2])

LAT = (24.30, 24.95)
LON = (117.80, 118.45)
EDUCATION = ("primary", "junior_secondary", "senior_secondary", "vocational", "bachelor", "postgraduate")
SEX = ("female", "male")
SCHOOL_LEVELS = ("kindergarten", "primary", "junior_secondary", "senior_secondary")
ZONING = ("residential", "commercial", "mixed_use", "industrial", "green", "public_service", "transport")
BRANDS = ("Meiyijia", "FamilyMart", "7-Eleven", "Lawson", "Tianfu")
EPOCH = dt.date(1970, 1, 1)


def _days(day: dt.date) -> int:
    return (day - EPOCH).days


def _categories(rng: np.random.Generator, n: int, p: np.ndarray | None, k: int) -> np.ndarray:
    indices: np.ndarray = rng.choice(k, size=n, p=p).astype(np.int32)
    return indices


def _dict(indices: np.ndarray, categories: tuple[str, ...]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(categories, pa.string()))


def _locate(rng: np.random.Generator, district: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Points clustered around the sub-centres of each row's district."""
    sub = rng.choice(3, size=district.size, p=_SUB_WEIGHTS)
    centre = _CENTRE[district] + _SUB_OFFSETS[sub] * (_SPREAD[district, None] / 0.02)
    noise = rng.standard_normal((district.size, 2)) * (_SPREAD[district, None] * scale)
    lat = np.clip(centre[:, 0] + noise[:, 0], *LAT)
    lon = np.clip(centre[:, 1] + noise[:, 1] * 1.1, *LON)
    return lat, lon


def _ages(rng: np.random.Generator, n: int) -> np.ndarray:
    bands = np.array([[0, 15], [15, 25], [25, 45], [45, 65], [65, 96]])
    band = rng.choice(5, size=n, p=[0.14, 0.12, 0.36, 0.27, 0.11])
    ages: np.ndarray = rng.integers(bands[band, 0], bands[band, 1]).astype(np.int64)
    return ages


def _population_chunk(rng: np.random.Generator, start: int, n: int) -> pa.RecordBatch:
    sizes = rng.choice(np.arange(1, 7), size=n, p=[0.16, 0.28, 0.27, 0.17, 0.08, 0.04])
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n) + 1]
    household = np.repeat(np.arange(sizes.size), sizes)[:n]
    size = np.repeat(sizes, sizes)[:n]
    h_district = _categories(rng, sizes.size, _SHARES, len(DISTRICTS))
    h_lat, h_lon = _locate(rng, h_district)
    district = h_district[household]
    jitter = rng.standard_normal((n, 2)) * 0.0001  # ~10 m: members of a household live together
    lat = np.clip(h_lat[household] + jitter[:, 0], *LAT)
    lon = np.clip(h_lon[household] + jitter[:, 1], *LON)

    age = _ages(rng, n)
    sex = _categories(rng, n, np.array([0.49, 0.51]), 2)
    median = np.array([d.income for d in DISTRICTS])[district]
    life = np.select([age < 16, age < 23, age < 30, age < 55, age < 65], [0.0, 0.25, 0.8, 1.15, 0.95], 0.55)
    income = np.where(age < 16, 0.0, median * life * rng.lognormal(0.0, 0.65, n))
    income = np.round(np.clip(income, 0.0, 5_000_000.0), 2)

    # Education by age and district: the island districts have more graduates.
    urban = np.isin(district, [0, 1])
    levels = np.where(
        age < 12,
        0,
        np.where(
            age < 15,
            1,
            rng.choice(6, size=n, p=[0.12, 0.26, 0.2, 0.14, 0.22, 0.06]),
        ),
    )
    levels = np.where(urban & (age >= 22) & (rng.random(n) < 0.15), np.maximum(levels, 4), levels)
    return pa.record_batch(
        [
            pa.array(np.arange(start + 1, start + n + 1, dtype=np.int64)),
            pa.array(start + household.astype(np.int64) + 1),
            _dict(district, DISTRICT_NAMES),
            pa.array(age),
            _dict(sex, SEX),
            pa.array(size.astype(np.int64)),
            pa.array(income),
            pa.array(lat),
            pa.array(lon),
            _dict(levels.astype(np.int32), EDUCATION),
        ],
        names=[
            "person_id",
            "household_id",
            "district",
            "age",
            "sex",
            "household_size",
            "income",
            "lat",
            "lon",
            "education",
        ],
    )


def _housing_chunk(rng: np.random.Generator, start: int, n: int, persons: int) -> pa.RecordBatch:
    district = _categories(rng, n, _SHARES, len(DISTRICTS))
    lat, lon = _locate(rng, district)
    first, last = _days(dt.date(2019, 1, 1)), _days(dt.date(2025, 12, 31))
    day = rng.integers(first, last + 1, size=n)
    years = (day - first) / 365.25
    base = np.array([d.price_m2 for d in DISTRICTS])[district]
    price_m2 = np.clip(base * (1.03**years) * rng.lognormal(0.0, 0.18, n), 5_000.0, 250_000.0)
    area = np.clip(rng.lognormal(np.log(88.0), 0.35, n), 20.0, 400.0)
    # Buyers are drawn with replacement: some people appear in several transactions.
    buyer = rng.integers(1, persons + 1, size=n, dtype=np.int64)
    return pa.record_batch(
        [
            pa.array(np.arange(start + 1, start + n + 1, dtype=np.int64)),
            pa.array(buyer),
            _dict(district, DISTRICT_NAMES),
            pa.array(day.astype(np.int32), pa.date32()),
            pa.array(np.round(price_m2 * area, 0)),
            pa.array(np.round(area, 1)),
            pa.array(np.round(price_m2, 0)),
            pa.array(lat),
            pa.array(lon),
        ],
        names=[
            "transaction_id",
            "buyer_id",
            "district",
            "date",
            "price",
            "area_m2",
            "price_per_m2",
            "lat",
            "lon",
        ],
    )


def _points(rng: np.random.Generator, n: int, spread: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    district = _categories(rng, n, _SHARES, len(DISTRICTS))
    lat, lon = _locate(rng, district, spread)
    return district, lat, lon


def _bus_stops(rng: np.random.Generator, n: int) -> pa.RecordBatch:
    district, lat, lon = _points(rng, n, 1.3)
    return pa.record_batch(
        [
            pa.array(np.arange(1, n + 1, dtype=np.int64)),
            pa.array([f"{DISTRICT_NAMES[d]} Stop {i + 1}" for i, d in enumerate(district)], pa.string()),
            _dict(district, DISTRICT_NAMES),
            pa.array(lat),
            pa.array(lon),
            pa.array(np.minimum(rng.poisson(3.0, n) + 1, 30).astype(np.int64)),
        ],
        names=["stop_id", "name", "district", "lat", "lon", "routes"],
    )


def _schools(rng: np.random.Generator, n: int) -> pa.RecordBatch:
    district, lat, lon = _points(rng, n, 1.2)
    level = _categories(rng, n, np.array([0.35, 0.35, 0.18, 0.12]), 4)
    capacity = np.array([300, 1200, 1500, 2000])[level] * rng.uniform(0.5, 1.5, n)
    return pa.record_batch(
        [
            pa.array(np.arange(1, n + 1, dtype=np.int64)),
            pa.array([f"{DISTRICT_NAMES[d]} School {i + 1}" for i, d in enumerate(district)], pa.string()),
            _dict(district, DISTRICT_NAMES),
            _dict(level, SCHOOL_LEVELS),
            pa.array(np.round(capacity).astype(np.int64)),
            pa.array(lat),
            pa.array(lon),
        ],
        names=["school_id", "name", "district", "level", "capacity", "lat", "lon"],
    )


def _land_use(rng: np.random.Generator, n: int) -> pa.RecordBatch:
    district, lat, lon = _points(rng, n, 1.4)
    zoning = _categories(rng, n, np.array([0.42, 0.12, 0.1, 0.12, 0.1, 0.08, 0.06]), len(ZONING))
    return pa.record_batch(
        [
            pa.array(np.arange(1, n + 1, dtype=np.int64)),
            _dict(district, DISTRICT_NAMES),
            _dict(zoning, ZONING),
            pa.array(np.round(np.clip(rng.lognormal(np.log(12_000), 0.8, n), 500, 500_000), 0)),
            pa.array(lat),
            pa.array(lon),
        ],
        names=["parcel_id", "district", "zoning", "area_m2", "lat", "lon"],
    )


def _stores(rng: np.random.Generator, n: int) -> pa.RecordBatch:
    district, lat, lon = _points(rng, n, 0.9)
    opened = rng.integers(_days(dt.date(2005, 1, 1)), _days(dt.date(2025, 12, 31)) + 1, size=n)
    return pa.record_batch(
        [
            pa.array(np.arange(1, n + 1, dtype=np.int64)),
            _dict(_categories(rng, n, np.array([0.4, 0.2, 0.15, 0.1, 0.15]), len(BRANDS)), BRANDS),
            _dict(district, DISTRICT_NAMES),
            pa.array(lat),
            pa.array(lon),
            pa.array(opened.astype(np.int32), pa.date32()),
        ],
        names=["store_id", "brand", "district", "lat", "lon", "opened"],
    )


def _coord_columns() -> tuple[Column, Column]:
    return (
        Column("lat", "float64", "latitude (WGS 84)", "degrees", LAT[0], LAT[1]),
        Column("lon", "float64", "longitude (WGS 84)", "degrees", LON[0], LON[1]),
    )


def _district_column(what: str) -> Column:
    return Column("district", "string", f"district of the {what}", categories=DISTRICT_NAMES)


def _infos(scale: int, differential_privacy: bool = True, output_checking: bool | None = None) -> list[DatasetInfo]:
    dp = differential_privacy
    # A person checks exact personal results before they leave; a DP release's guarantee needs nobody.
    checking = "required" if (not dp if output_checking is None else output_checking) else "none"
    lat, lon = _coord_columns()
    days = (float(_days(dt.date(2019, 1, 1))), float(_days(dt.date(2025, 12, 31))))
    return [
        DatasetInfo(
            "population",
            "Registered residents, one row per person, with household, age, sex, income, education and home "
            "location (synthetic).",
            "population.arrow",
            scale,
            "personal",
            (
                Column("person_id", "int64", "person identifier (the privacy unit)", None, 1, float(scale)),
                Column("household_id", "int64", "household identifier", None, 1, float(scale)),
                _district_column("home"),
                Column("age", "int64", "age in completed years", "years", 0, 100),
                Column("sex", "string", "registered sex", categories=SEX),
                Column("household_size", "int64", "people in the household", "persons", 1, 6),
                Column("income", "float64", "annual income before tax", "yuan/year", 0, 5_000_000, magnitude=True),
                lat,
                lon,
                Column("education", "string", "highest completed or current level", categories=EDUCATION),
            ),
            privacy_unit="person_id",
            one_row_per_unit=True,
            policy=Policy(min_contributors=10, differential_privacy=dp, max_contributions=1, output_checking=checking),
            # Incomes differ by district and age; education by age; homes cluster within each district.
            mock=MockSpec(
                structure=(
                    ("district", "lat+lon"),
                    ("district", "income"),
                    ("age", "income"),
                    ("age", "education"),
                ),
                bins=48,  # income: (district, age, income) is one 3-way marginal, 7 x 102 x 49 cells
                joint=(("lat", "lon"),),
            ),
        ),
        DatasetInfo(
            "housing_transactions",
            "Registered sales of residential property 2019-2025: price, area and location; a buyer may "
            "appear in several transactions (synthetic).",
            "housing_transactions.arrow",
            max(100, scale // 20),
            "personal",
            (
                Column("transaction_id", "int64", "transaction identifier", None, 1, float(max(100, scale // 20))),
                Column("buyer_id", "int64", "person_id of the buyer (the privacy unit)", None, 1, float(scale)),
                _district_column("property"),
                Column("date", "date32", "registration date", "days since 1970-01-01", *days),
                Column("price", "float64", "total price", "yuan", 100_000, 100_000_000, magnitude=True),
                Column("area_m2", "float64", "floor area", "m2", 20, 400),
                Column("price_per_m2", "float64", "price per square metre", "yuan/m2", 5_000, 250_000, magnitude=True),
                lat,
                lon,
            ),
            privacy_unit="buyer_id",
            one_row_per_unit=False,
            policy=Policy(min_contributors=10, differential_privacy=dp, max_contributions=2, output_checking=checking),
            # Prices differ by district (and drift over time); the price per m2 is a price divided by an area.
            mock=MockSpec(
                structure=(("district", "lat+lon"), ("district", "price"), ("price", "area_m2"), ("district", "date")),
                joint=(("lat", "lon"),),
                derived=(("price_per_m2", "price / area_m2"),),
                bins=32,  # 20 times fewer rows than persons: coarser bins, ~1 km places
                joint_bins=65,
            ),
        ),
        DatasetInfo(
            "bus_stops",
            "Public transport stops with the number of routes serving them (public).",
            "bus_stops.arrow",
            max(200, scale // 250),
            "public",
            (
                Column("stop_id", "int64", "stop identifier"),
                Column("name", "string", "stop name"),
                _district_column("stop"),
                lat,
                lon,
                Column("routes", "int64", "bus routes serving the stop", "routes", 1, 30),
            ),
        ),
        DatasetInfo(
            "schools",
            "Schools and kindergartens with their capacity (public).",
            "schools.arrow",
            max(50, scale // 2000),
            "public",
            (
                Column("school_id", "int64", "school identifier"),
                Column("name", "string", "school name"),
                _district_column("school"),
                Column("level", "string", "school level", categories=SCHOOL_LEVELS),
                Column("capacity", "int64", "pupil places", "pupils", 0, 5000),
                lat,
                lon,
            ),
        ),
        DatasetInfo(
            "land_use",
            "Planning parcels from the published regulatory plans, with their zoning (public).",
            "land_use.arrow",
            max(200, scale // 50),
            "public",
            (
                Column("parcel_id", "int64", "parcel identifier"),
                _district_column("parcel"),
                Column("zoning", "string", "permitted use", categories=ZONING),
                Column("area_m2", "float64", "parcel area", "m2", 500, 500_000),
                lat,
                lon,
            ),
        ),
        DatasetInfo(
            "convenience_stores",
            "Existing convenience stores by brand and opening date (public).",
            "convenience_stores.arrow",
            max(100, scale // 800),
            "public",
            (
                Column("store_id", "int64", "store identifier"),
                Column("brand", "string", "store brand", categories=BRANDS),
                _district_column("store"),
                lat,
                lon,
                Column(
                    "opened",
                    "date32",
                    "opening date",
                    "days since 1970-01-01",
                    float(_days(dt.date(2005, 1, 1))),
                    days[1],
                ),
            ),
        ),
    ]


def generate_catalog(
    out: Path,
    scale: int = 1_000_000,
    seed: int = 7,
    progress: Progress | None = None,
    differential_privacy: bool = True,
    output_checking: bool | None = None,
) -> Manifest:
    """Write the synthetic city to ``out`` (Arrow IPC files + catalog.json) and return its manifest.

    Personal datasets release only differentially private results unless ``differential_privacy`` is false
    (then the exact rules apply: thresholds, dominance, subsets, secondary suppression). Exact personal results
    are held for an output checker (``output_checking = "required"``) unless ``output_checking`` is false
    (tests of the rules on their own); differentially private ones never are (true forces it on them too).
    """
    if scale < 1_000:
        raise ValueError("scale must be at least 1,000 persons")
    out.mkdir(parents=True, exist_ok=True)
    infos = _infos(scale, differential_privacy, output_checking)
    chunked = {
        "population": lambda rng, start, n: _population_chunk(rng, start, n),
        "housing_transactions": lambda rng, start, n: _housing_chunk(rng, start, n, scale),
    }
    single = {
        "bus_stops": _bus_stops,
        "schools": _schools,
        "land_use": _land_use,
        "convenience_stores": _stores,
    }
    for index, info in enumerate(infos):
        schema = schema_of(info)
        path = out / info.file
        found = statistics.Statistics(schema)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            if info.name in chunked:
                for chunk, start in enumerate(range(0, info.rows, CHUNK)):
                    rng = np.random.default_rng([seed, index, chunk])
                    n = min(CHUNK, info.rows - start)
                    batch = chunked[info.name](rng, start, n).cast(schema)
                    writer.write_batch(batch)
                    found.add(batch)
                    if progress:
                        progress(info.name, start + n, info.rows)
            else:
                rng = np.random.default_rng([seed, index, 0])
                batch = single[info.name](rng, info.rows).cast(schema)
                writer.write_batch(batch)
                found.add(batch)
                if progress:
                    progress(info.name, info.rows, info.rows)
        with open(path, "rb") as written:  # the statistics are bound to the bytes as written
            digest = hashlib.file_digest(written, "sha256").hexdigest()
        (out / statistics.sidecar(info.file)).write_text(statistics.to_text(digest, found.result()), encoding="utf-8")
    manifest = Manifest(name="xiamen-synthetic", datasets={i.name: i for i in infos}, seed=seed, scale=scale)
    manifest.save(out)
    return manifest
