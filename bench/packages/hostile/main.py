def run(ctx, attack="loop"):
    if attack == "loop":
        n = 0
        while True:
            n = n + 1
    if attack == "memory":
        blocks = []
        while True:
            blocks.append("x" * (64 * 1024 * 1024))
    if attack == "engine":
        a = ctx.table("population").select("district", "income")
        b = ctx.table("population").select("district", "age")
        pairs = a.join(b, on="district")
        return {"pairs": pairs.join(pairs.select("district"), on="district").group_by("district").agg(n=count())}
    if attack == "flood":
        for _ in range(1000000):
            print("flood " * 100)
        return {"o" + str(i): "x" * 60000 for i in range(64)}
    return {"depth": deep(0)}


def deep(n):
    return deep(n + 1)
