def run(ctx, query="groupby"):
    people = ctx.table("population")
    if query == "groupby":
        out = people.group_by("district").agg(n=count(), income=mean("income"))
    elif query == "filter_groupby":
        out = people.filter(col("age") >= 18).group_by("district").agg(n=count())
    elif query == "histogram":
        out = people.with_columns(band=histogram(col("income"), 0, 1000000, 20)).group_by("band").agg(n=count())
    elif query == "median":
        out = people.group_by("district").agg(median_income=median("income"))
    else:
        stops = ctx.table("bus_stops").group_by("district").agg(stops=count())
        out = (
            people.group_by("district")
            .agg(n=count(), income=mean("income"))
            .join(stops, on="district", how="left")
            .with_columns(per_stop=col("n") / col("stops"))
        )
    return {"result": out}
