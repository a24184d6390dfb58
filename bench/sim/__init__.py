"""A swarm simulator on virtual time that drives shoal's real scheduler and tracker code.

``bench.sim.network``: the fluid network model; ``bench.sim.model``: the nodes, the
tracker and the event loop; ``bench.simulate``: the command line and the report.
"""
