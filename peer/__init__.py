"""shoal peer: the node every machine runs (registry endpoint, cache, P2P mesh)."""

__version__ = "0.1.0"
