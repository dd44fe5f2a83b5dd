"""``python -m saferoom.sandbox FD``: start a zygote (see saferoom.sandbox.zygote)."""

from saferoom.sandbox.zygote import main

main()
