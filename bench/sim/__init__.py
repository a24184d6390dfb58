"""A swarm simulator on virtual time that drives shoal's real scheduler and tracker code.

``bench.sim.network``: the fluid network model; ``bench.sim.config``: a run's settings,
the shipped and earlier versions, the lower bound and the result; ``bench.sim.model``: the
event loop of a ``Simulation``, built in layers (``state``, then ``tracking``, ``peering``,
``origin`` and ``nodes``); ``bench.simulate``: the command line and the report.
"""
