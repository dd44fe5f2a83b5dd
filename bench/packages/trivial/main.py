def run(ctx):
    return {"stops": ctx.table("bus_stops").agg(n=count())}
