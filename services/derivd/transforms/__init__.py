"""Derivative transforms, each from graph to graph: jvp, vjp, taylor, and sparsity patterns.

Each reads every primitive's rules from the registry alike (ops/registry.py, "Rule
interface"); conform.py fits a rule's result to its node's batched shape; loops.py
holds the ``loop`` primitive's rules, which call these transforms on the loop's body.
"""

from derivd.transforms.jvp import jvp  # noqa: F401
from derivd.transforms.vjp import vjp  # noqa: F401
