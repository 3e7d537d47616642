"""The function language: text -> validated AST (parse) -> IR (lower)."""

from derivd.dsl.lower import InputSpec, Program, free_inputs, lower  # noqa: F401
