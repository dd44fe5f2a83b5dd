"""The seed's second use case: a synthetic register of small enterprises and their yearly records, as CSV files.

Fujian's financial-service cloud platform builds a credit profile of each small enterprise for lenders from
registration, tax, social-insurance, import/export and administrative-penalty records ("一企一档"). This writes
what such departments would export, as CSV files for ``saferoom datasets import`` with the declarations beside
this module (``enterprises.toml``, ``enterprise_years.toml``): the privacy unit is the enterprise. Deterministic
for a seed; written in chunks, so memory stays flat at ``--enterprises 1000000``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from saferoom.catalog.generate import DISTRICT_NAMES

__all__ = ["DECLARATIONS", "INDUSTRIES", "YEARS", "generate_enterprises"]

DECLARATIONS = Path(__file__).resolve().parent  # enterprises.toml, enterprise_years.toml
INDUSTRIES = (
    "manufacturing",
    "wholesale_retail",
    "construction",
    "transport_logistics",
    "hospitality",
    "software_it",
    "agriculture",
    "business_services",
)
_INDUSTRY_SHARES = np.array([0.22, 0.25, 0.10, 0.08, 0.10, 0.08, 0.05, 0.12])
_INDUSTRY_REVENUE = np.array([15.2, 14.6, 15.0, 14.4, 13.6, 14.8, 13.4, 13.9])  # log yuan, median revenue
_DISTRICT_SHARES = np.array([0.24, 0.26, 0.15, 0.12, 0.12, 0.11])
YEARS = (2021, 2022, 2023, 2024, 2025)
CHUNK = 200_000
EPOCH = dt.date(1970, 1, 1)
_FIRST_DAY = (dt.date(1995, 1, 1) - EPOCH).days
_LAST_DAY = (dt.date(2024, 12, 31) - EPOCH).days


def revenue_band(revenue: np.ndarray) -> np.ndarray:
    """Bands 1..10 of annual revenue: under 100k yuan, then each band 2.5 times the previous (10: >= ~38M)."""
    band: np.ndarray = np.clip(np.floor(np.log(np.maximum(revenue, 1) / 100_000) / np.log(2.5)) + 2, 1, 10)
    return band.astype(np.int64)


def _register(rng: np.random.Generator, start: int, n: int) -> dict[str, np.ndarray]:
    industry = rng.choice(len(INDUSTRIES), size=n, p=_INDUSTRY_SHARES / _INDUSTRY_SHARES.sum())
    district = rng.choice(len(DISTRICT_NAMES), size=n, p=_DISTRICT_SHARES / _DISTRICT_SHARES.sum())
    employees = np.clip(np.round(rng.lognormal(2.2, 0.9, n)), 1, 1000).astype(np.int64)
    capital = np.clip(np.round(rng.lognormal(13.5, 1.1, n), -3), 10_000, 1e9)
    return {
        "enterprise_id": np.arange(start + 1, start + n + 1, dtype=np.int64),
        "industry": industry,
        "district": district,
        "registered": rng.integers(_FIRST_DAY, _LAST_DAY + 1, n),
        "registered_capital": capital,
        "employees": employees,
    }


def generate_enterprises(out: Path, enterprises: int = 20_000, seed: int = 11) -> list[Path]:
    """Write ``enterprises.csv`` (the register) and ``enterprise_years.csv`` (one row per enterprise and year)."""
    if not 100 <= enterprises <= 10_000_000:
        raise ValueError("enterprises must be between 100 and 10,000,000")
    out.mkdir(parents=True, exist_ok=True)
    register_path, years_path = out / "enterprises.csv", out / "enterprise_years.csv"
    industries = np.array(INDUSTRIES, dtype=object)
    districts = np.array(DISTRICT_NAMES, dtype=object)
    register_writer = years_writer = None
    try:
        for chunk, start in enumerate(range(0, enterprises, CHUNK)):
            rng = np.random.default_rng([seed, chunk])
            n = min(CHUNK, enterprises - start)
            r = _register(rng, start, n)
            register = pa.table(
                {
                    "enterprise_id": r["enterprise_id"],
                    "industry": industries[r["industry"]],
                    "district": districts[r["district"]],
                    "registered": pa.array(r["registered"].astype(np.int32), pa.date32()),
                    "registered_capital": r["registered_capital"],
                    "employees": r["employees"],
                }
            )
            if register_writer is None:
                register_writer = pacsv.CSVWriter(str(register_path), register.schema)
            register_writer.write_table(register)
            # A latent health of each enterprise drives its revenue, arrears and penalties together.
            health = rng.normal(0, 1, n)
            for year in YEARS:
                revenue = np.round(
                    np.exp(_INDUSTRY_REVENUE[r["industry"]] + 0.5 * health + rng.normal(0, 0.35, n))
                    * (1.04 ** (year - YEARS[0])),
                    0,
                )
                revenue = np.clip(revenue, 0, 5e9)
                risk = 1 / (1 + np.exp(2.2 + 1.1 * health - 0.25 * (r["employees"] < 5)))
                arrears = rng.random(n) < risk
                penalties = np.minimum(rng.poisson(0.15 + 0.6 * risk), 20).astype(np.int64)
                insured = np.minimum(r["employees"], np.round(r["employees"] * rng.uniform(0.5, 1.0, n))).astype(
                    np.int64
                )
                export = np.where(rng.random(n) < 0.18, np.round(revenue * rng.uniform(0.05, 0.6, n), 0), 0.0)
                records = pa.table(
                    {
                        "enterprise_id": r["enterprise_id"],
                        "year": np.full(n, year, dtype=np.int64),
                        "industry": industries[r["industry"]],
                        "district": districts[r["district"]],
                        "revenue": revenue,
                        "revenue_band": revenue_band(revenue),
                        "tax_paid": np.round(revenue * rng.uniform(0.01, 0.06, n), 0),
                        "tax_arrears": arrears,
                        "insured_employees": insured,
                        "export_value": export,
                        "penalties": penalties,
                    }
                )
                if years_writer is None:
                    years_writer = pacsv.CSVWriter(str(years_path), records.schema)
                years_writer.write_table(records)
    finally:
        for writer in (register_writer, years_writer):
            if writer is not None:
                writer.close()
    return [register_path, years_path]
