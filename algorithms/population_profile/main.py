"""Population profile: persons by district, age band and sex; adult income median and mean by district."""


def run(ctx, band_years=10):
    people = ctx.table("population")
    banded = people.with_columns(age_band=((col("age") // band_years) * band_years).cast("int"))
    profile = banded.group_by("district", "age_band", "sex").agg(persons=count()).sort(["district", "age_band", "sex"])
    income = (
        people.filter(col("age") >= 18)
        .group_by("district")
        .agg(adults=count(), median_income=median("income"), mean_income=mean("income"))
        .with_columns(median_income=col("median_income").round(0), mean_income=col("mean_income").round(0))
        .sort("median_income", descending=True)
    )
    return {"age_sex_by_district": profile, "income_by_district": income}
