"""One plan whose release depends only on the data: everyone (released) or one person (refused / suppressed)."""


def run(ctx, keep=1000000000):
    people = ctx.table("population").filter(col("person_id") <= keep)
    return {"stats": people.group_by("district", "sex").agg(n=count(), income=mean("income"))}
