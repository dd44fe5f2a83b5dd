"""Convenience-store site selection (after the model on Xiamen's open data platform).

Every grid cell with enough adult residents is scored on six factors, each normalised to [0, 1] by its
maximum over all cells:

    score = w_residents * adults + w_income * median income + w_price * median price per m2
          + w_transit * bus stops + w_retail * retail-zoned parcels - w_competition * stores nearby

"Stores nearby" counts existing convenience stores in the cell and its eight neighbours. Personal data
(residents, incomes, housing sales) enters only through per-cell aggregates, so cells with too few people
are suppressed by the server before anything is scored or ranked.
"""

ROW = 4194304  # grid cell ids: one row of cells apart (see grid_cell)


def in_cells(table, cell_m):
    return table.with_columns(cell=grid_cell(col("lat"), col("lon"), meters=cell_m))


def zero_if_missing(name):
    return when(col(name).is_null(), 0).otherwise(col(name))


def share_of_max(name):
    top = "max_" + name
    return when(col(top) > 0, col(name) / col(top)).otherwise(0.0)


def run(
    ctx,
    cell_m=500,
    top=10,
    adult_age=18,
    w_residents=0.30,
    w_income=0.20,
    w_price=0.15,
    w_transit=0.15,
    w_retail=0.10,
    w_competition=0.10,
):
    adults = ctx.table("population").filter(col("age") >= adult_age)
    residents = in_cells(adults, cell_m).group_by("cell").agg(adults=count(), income=median("income"))

    housing = in_cells(ctx.table("housing_transactions"), cell_m).group_by("cell").agg(price_m2=median("price_per_m2"))
    stops = in_cells(ctx.table("bus_stops"), cell_m).group_by("cell").agg(stops=count())
    retail_land = ctx.table("land_use").filter(col("zoning").is_in(["commercial", "mixed_use"]))
    retail = in_cells(retail_land, cell_m).group_by("cell").agg(retail_parcels=count())

    stores = in_cells(ctx.table("convenience_stores"), cell_m).select("cell")
    around = []
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            around.append(stores.with_columns(cell=col("cell") + dr * ROW + dc))
    nearby = around[0].union(*around[1:]).group_by("cell").agg(stores_nearby=count())

    cells = (
        residents.join(housing, on="cell", how="left")
        .join(stops, on="cell", how="left")
        .join(retail, on="cell", how="left")
        .join(nearby, on="cell", how="left")
        .with_columns(
            price_m2=zero_if_missing("price_m2"),
            stops=zero_if_missing("stops"),
            retail_parcels=zero_if_missing("retail_parcels"),
            stores_nearby=zero_if_missing("stores_nearby"),
            one=lit(1),
        )
    )

    factors = ["adults", "income", "price_m2", "stops", "retail_parcels", "stores_nearby"]
    maxima = {}
    for name in factors:
        maxima["max_" + name] = max(name)
    scale = cells.agg(**maxima).with_columns(one=lit(1))

    scored = cells.join(scale, on="one").with_columns(
        score=(
            w_residents * share_of_max("adults")
            + w_income * share_of_max("income")
            + w_price * share_of_max("price_m2")
            + w_transit * share_of_max("stops")
            + w_retail * share_of_max("retail_parcels")
            - w_competition * share_of_max("stores_nearby")
        ).round(4)
    )

    candidates = (
        scored.sort("score", descending=True)
        .head(top)
        .select(
            "cell",
            "score",
            "adults",
            "income",
            "price_m2",
            "stops",
            "retail_parcels",
            "stores_nearby",
            lat=cell_lat(col("cell"), cell_m),
            lon=cell_lon(col("cell"), cell_m),
        )
    )
    summary = cells.agg(cells_scored=count(), adults_covered=sum("adults"))
    return {"candidates": candidates, "summary": summary, "cell_m": cell_m}
