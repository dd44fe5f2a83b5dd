"""The synthetic city, the memory-mapped catalog and mock data."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from saferoom.catalog import Catalog, generate_catalog, mock_table, schema_of, write_mock_catalog
from saferoom.catalog.generate import DISTRICTS
from saferoom.catalog.manifest import DatasetInfo, Manifest
from saferoom.errors import DatasetNotFound, InvalidRequest


def test_generation_is_deterministic(tmp_path: Path, dp_catalog_dir: Path) -> None:
    generate_catalog(tmp_path / "again", scale=20_000, seed=7)
    generate_catalog(tmp_path / "other", scale=20_000, seed=8)
    for f in ("population.arrow", "housing_transactions.arrow", "bus_stops.arrow", "catalog.json"):
        assert (tmp_path / "again" / f).read_bytes() == (dp_catalog_dir / f).read_bytes()
    other = (tmp_path / "other" / "population.arrow").read_bytes()
    assert other != (dp_catalog_dir / "population.arrow").read_bytes()


def test_personal_datasets_are_differentially_private_by_default(dp_catalog_dir: Path, catalog_dir: Path) -> None:
    default, exact = Manifest.load(dp_catalog_dir), Manifest.load(catalog_dir)
    for name, info in default.datasets.items():
        assert info.policy.differential_privacy == (info.sensitivity == "personal"), name
        assert not exact.datasets[name].policy.differential_privacy
    assert default.dataset("population").policy.max_contributions == 1
    assert default.dataset("housing_transactions").policy.max_contributions == 2


def test_files_match_the_manifest_and_stay_in_bounds(catalog_dir: Path) -> None:
    with Catalog.open(catalog_dir) as catalog:
        assert set(catalog.names()) == {
            "population", "housing_transactions", "bus_stops", "schools", "land_use", "convenience_stores",
        }  # fmt: skip
        for name in catalog.names():
            info, table = catalog.info(name), catalog.table(name)
            assert table.schema.equals(schema_of(info)) and table.num_rows == info.rows
            for column in info.columns:
                values = table.column(column.name)
                if column.categories:
                    assert set(pc.unique(values.cast(pa.string())).to_pylist()) <= set(column.categories)
                    assert pa.types.is_dictionary(values.type)
                elif column.min is not None and column.type != "date32":
                    assert pc.min(values).as_py() >= column.min, (name, column.name)
                    assert pc.max(values).as_py() <= column.max, (name, column.name)


def test_personal_datasets_declare_their_privacy_units(catalog_dir: Path) -> None:
    manifest = Manifest.load(catalog_dir)
    population = manifest.dataset("population")
    assert (population.sensitivity, population.privacy_unit, population.one_row_per_unit) == (
        "personal",
        "person_id",
        True,
    )
    housing = manifest.dataset("housing_transactions")
    assert (housing.privacy_unit, housing.one_row_per_unit) == ("buyer_id", False)
    assert all(manifest.dataset(n).is_public for n in ("bus_stops", "schools", "land_use", "convenience_stores"))
    assert population.policy.min_contributors == 10


def test_the_city_is_plausible(catalog_dir: Path) -> None:
    with Catalog.open(catalog_dir) as catalog:
        people = catalog.table("population")
        adults = people.filter(pc.greater_equal(people["age"], 25))
        income = adults.column("income")
        assert pc.mean(income).as_py() > pc.quantile(income, 0.5)[0].as_py()  # skewed
        prices = catalog.table("housing_transactions").group_by("district").aggregate([("price_per_m2", "mean")])
        by_district = dict(
            zip(prices.column(0).cast(pa.string()).to_pylist(), prices.column(1).to_pylist(), strict=True)
        )
        assert by_district["Siming"] > by_district["Xiang'an"] * 2
        siming = next(d for d in DISTRICTS if d.name == "Siming")
        mask = pc.equal(people["district"].cast(pa.string()), "Siming")
        lat = pc.mean(people.filter(mask)["lat"]).as_py()
        assert abs(lat - siming.lat) < 0.03  # clustered around the district centre
        assert pc.count_distinct(people["person_id"]).as_py() == people.num_rows


def test_datasets_are_memory_mapped_zero_copy(catalog_dir: Path) -> None:
    before = pa.total_allocated_bytes()
    with Catalog.open(catalog_dir) as catalog:
        assert catalog.mapped_bytes() > 1_000_000
        assert pa.total_allocated_bytes() - before < catalog.mapped_bytes() / 10


def test_schema_mismatch_is_refused(tmp_path: Path, catalog_dir: Path) -> None:
    target = tmp_path / "broken"
    target.mkdir()
    for f in catalog_dir.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    data = json.loads((target / "catalog.json").read_text())
    data["datasets"]["bus_stops"]["columns"][0]["type"] = "float64"
    (target / "catalog.json").write_text(json.dumps(data))
    with pytest.raises(InvalidRequest, match="does not match the manifest"):
        Catalog.open(target)


def _copied(catalog_dir: Path, target: Path, dataset: str) -> tuple[Path, DatasetInfo, pa.Table]:
    """A copy of the catalog to tamper with: its directory, and ``dataset``'s declaration and table."""
    target.mkdir()
    for f in catalog_dir.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    info = Manifest.load(target).dataset(dataset)
    return target, info, pa.ipc.open_file(pa.BufferReader((target / info.file).read_bytes())).read_all()


@pytest.mark.parametrize("shared", [True, False], ids=["one dictionary", "a dictionary per batch"])
def test_a_category_the_catalog_does_not_declare_is_refused(tmp_path: Path, catalog_dir: Path, shared: bool) -> None:
    """The cost model bounds a group-by on a category by the declared categories: a file holding one more would
    let a job's worst case be exceeded. The undeclared value is not named (it may be personal)."""
    target, info, table = _copied(catalog_dir, tmp_path / "undeclared", "population")
    kind = table.schema.field("district").type
    declared = pa.array(Manifest.load(target).dataset("population").column("district").categories, pa.string())
    districts = table.column("district").to_pylist()
    half = len(districts) // 2
    # Either one dictionary with the value in it, or a delta the second batch adds to the first's dictionary.
    dictionaries = [pa.concat_arrays([declared, pa.array(["Atlantis-Secret-Value"])])] * 2
    if not shared:
        dictionaries[0] = declared
    chunks = []
    for part, dictionary in zip((districts[:half], districts[half:]), dictionaries, strict=True):
        indices = pc.index_in(pa.array(part), value_set=dictionary).cast(pa.int32())
        chunks.append(pa.DictionaryArray.from_arrays(indices, dictionary))
    chunks[1] = pa.DictionaryArray.from_arrays(
        pa.concat_arrays([chunks[1].indices[:-1], pa.array([len(declared)], pa.int32())]), dictionaries[1]
    )
    broken = table.set_column(table.schema.get_field_index("district"), "district", pa.chunked_array(chunks, kind))
    options = pa.ipc.IpcWriteOptions(emit_dictionary_deltas=True)
    with pa.ipc.new_file(str(target / info.file), broken.schema, options=options) as writer:
        writer.write_table(broken, max_chunksize=half)
    with pytest.raises(InvalidRequest, match="1 value\\(s\\) that are not among its 6 declared") as refused:
        Catalog.open(target)
    assert "Atlantis" not in str(refused.value)


def test_unknown_dataset(catalog_dir: Path) -> None:
    with Catalog.open(catalog_dir) as catalog, pytest.raises(DatasetNotFound):
        catalog.table("secret_service")


def test_mock_data_comes_from_the_declared_domain_only(catalog_dir: Path, tmp_path: Path) -> None:
    manifest = Manifest.load(catalog_dir)
    info = manifest.dataset("population")
    mock = mock_table(info, rows=2_000, seed=3)
    assert mock.schema.equals(schema_of(info)) and mock.num_rows == 2_000
    assert mock.equals(mock_table(info, rows=2_000, seed=3))
    with Catalog.open(catalog_dir) as catalog:
        real = set(catalog.table("population").column("income").to_pylist())
    assert real.isdisjoint(set(mock.column("income").to_pylist()))
    write_mock_catalog(manifest, tmp_path / "mock", rows=500)
    with Catalog.open(tmp_path / "mock") as mock_catalog:
        assert mock_catalog.table("housing_transactions").num_rows == 500
        assert "MOCK" in mock_catalog.info("population").description


def test_exact_personal_results_need_an_output_checker_dp_ones_never(
    dp_catalog_dir: Path, checked_catalog_dir: Path, catalog_dir: Path
) -> None:
    dp, checked, rules_alone = (Manifest.load(d) for d in (dp_catalog_dir, checked_catalog_dir, catalog_dir))
    for name, info in checked.datasets.items():
        assert info.policy.checking_required == (info.sensitivity == "personal"), name
        assert info.policy.output_checkers == 1
        assert not dp.datasets[name].policy.checking_required  # a DP release's guarantee needs no person
        assert not rules_alone.datasets[name].policy.checking_required  # tests of the rules on their own


@pytest.mark.parametrize("extra", [0, 1], ids=["60 bytes", "61 bytes"])
def test_text_longer_than_the_cost_model_counts_is_refused_when_opened(
    tmp_path: Path, catalog_dir: Path, extra: int
) -> None:
    """A file written by hand (not by an import, which refuses it) with one text value over ``TEXT_BYTES``: the
    cost model would count it at 60 bytes, so the catalog refuses to open, without naming the value."""
    target, info, table = _copied(catalog_dir, tmp_path / "long-text", "bus_stops")
    names = table.column("name").to_pylist()
    names[-1] = "é" * 30 + "x" * extra  # 60 bytes of UTF-8, or 61
    changed = table.set_column(table.schema.get_field_index("name"), "name", pa.array(names, pa.string()))
    with pa.ipc.new_file(str(target / info.file), changed.schema) as writer:
        writer.write_table(changed)
    if not extra:
        Catalog.open(target).close()
        return
    with pytest.raises(InvalidRequest, match="holds text longer than 60 bytes") as refused:
        Catalog.open(target)
    assert "é" not in str(refused.value)
