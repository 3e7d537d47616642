"""The IR: typed, shaped SSA graphs (see graph.py)."""

from derivd.ir.graph import Graph, Node  # noqa: F401
