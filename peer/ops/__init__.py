"""Operator tools: ``shoal sync``, ``shoal verify``, ``shoal status`` and ``shoal config``.

They talk to a node's registry endpoint like any runtime does (``?ns=<registry>``), to the
origin registries directly (verify, status) and to the tracker's admin API (status).
"""
