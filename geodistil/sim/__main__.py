"""``python -m geodistil.sim``: the simulated teacher without the ``geodistil`` CLI (used by ``SimServer(subprocess=True)``)."""

from geodistil.sim.server import main

main()
