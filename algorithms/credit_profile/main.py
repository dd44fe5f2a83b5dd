"""Credit profile ("一企一档"): what a lender may learn about small enterprises by industry and district.

Released under differential privacy only (noisy counts, shares and medians). A logistic credit-risk model
(``Table.logit``) is available only on datasets under the exact rules: the server has no differentially
private model fit yet, so this package does not ask for one.
"""


def run(ctx, year=2025):
    records = ctx.table("enterprise_years").filter(col("year") == year)
    flagged = records.with_columns(at_risk=(col("tax_arrears") | (col("penalties") > 0)).cast("int"))
    risk = (
        flagged.group_by("industry", "district")
        .agg(enterprises=count(), at_risk_share=mean("at_risk"), median_revenue_band=median("revenue_band"))
        .with_columns(at_risk_share=col("at_risk_share").round(3))
        .sort(["industry", "district"])
    )
    register = (
        ctx.table("enterprises")
        .group_by("industry")
        .agg(enterprises=count(), median_employees=median("employees"))
        .sort("industry")
    )
    return {"risk_by_industry_district": risk, "register_by_industry": register}
