"""Validated AST -> IR graph, by partial evaluation.

Shapes are static, so the lowering evaluates everything that does not depend
on input values: loop bounds, indices, shapes, axes and integer arithmetic
on them are Python values; everything else becomes graph nodes.

Loops are unrolled: ``for i in range(N)`` lowers its body N times with ``i``
bound to a static int, so loop-carried names are ordinary rebinding and the
derivative transforms see straight-line code (reverse mode stores each step's
intermediates: memory proportional to N). The limits bound the cost: total
iterations (``max_loop_iterations``), graph nodes (``max_graph_nodes``) and
the size of every intermediate (``max_intermediate_bytes``), all checked
while lowering, before anything runs. Helpers are inlined at each call.
"""

from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass, field

import numpy as np

from derivd.dsl.library import Library
from derivd.dsl import indexing, names
from derivd.dsl.loops import NotUniform, lower_loop
from derivd.dsl.parse import at, parse, refuse
from derivd.errors import DerivdError, LimitExceeded, ProgramError, ShapeError, UnknownName, ValidationFailed
from derivd.ir.graph import Graph, Node
from derivd.ops import apply
from derivd.ops.registry import BOOL, FLOAT, INT

INT_MAX = 2**63 - 1
CONSTANTS = {"pi": math.pi, "e": math.e, "True": True, "False": False}
# The contract's functions (CONTRACT §1): a helper may not take their names. Functions the language
# gained beyond them (var, cross, sort...) a helper may shadow, as a Python def would, so programs
# that define their own keep working.
RESERVED = frozenset((
    "abs sign sqrt cbrt exp exp2 expm1 log log2 log10 log1p sin cos tan asin acos atan sinh cosh tanh "
    "asinh acosh atanh erf erfc sigmoid softplus relu square reciprocal floor ceil round atan2 hypot "
    "maximum minimum pow clip sum prod mean max min logsumexp norm softmax where dot matmul outer "
    "transpose trace diag reshape concat concatenate stack zeros ones eye arange len solve inv det slogdet "
    "cholesky range"
).split())

BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow",
          ast.Mod: "mod", ast.FloorDiv: "floordiv", ast.BitAnd: "and", ast.BitOr: "or"}
STATIC_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                 ast.Div: operator.truediv, ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv,
                 ast.BitAnd: operator.and_, ast.BitOr: operator.or_}
COMPARE = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}
STATIC_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
                  ast.Eq: operator.eq, ast.NotEq: operator.ne}


@dataclass(frozen=True)
class InputSpec:
    """An input's signature. ``mask``: the values of a boolean constant the program indexes with
    (``x[mask]``): a static mask whose True count fixes the result's shape, so it is lowered as the
    integer positions it selects and its content is part of the tape key (cache/keys.py)."""

    shape: tuple[int, ...]
    dtype: str  # "f8" | "i8" | "b1"
    role: str  # "at" | "const"
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass
class Program:
    """A lowered program: its graph, its one output node, and the inputs it uses."""

    graph: Graph
    output: Node
    inputs: list[str]


@dataclass
class Helper:
    node: ast.FunctionDef
    visible: dict  # helpers defined before this one (so no recursion)


def free_inputs(text: str, settings) -> list[str]:
    """Names a program reads that it neither assigns nor defines: its inputs, in the order the source
    first reads them."""
    tree = parse(text, settings)
    assigned, defined, seen = set(), set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            defined.add(node.name)
            assigned.update(a.arg for a in node.args.args)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            assigned.add(node.id)
    lib = Library(None)
    loads = sorted((node.lineno, node.col_offset, node.id) for node in ast.walk(tree)  # ast.walk is breadth-first
                   if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load))
    for _, _, n in loads:
        if n not in assigned and n not in defined and not builtin(n, lib) and n != "range" and n not in seen:
            seen.append(n)
    return seen


def builtin(name: str, lib: Library) -> bool:
    """A name the language defines: a constant, a function, a namespace (np) or a dtype word (float)."""
    return name in CONSTANTS or lib.known(name) or name in names.ROOTS or name in names.FLOAT_DTYPES


def check_input_names(inputs: dict[str, InputSpec]) -> None:
    """An input named like a builtin would be shadowed by it (or shadow it): refused, named."""
    lib = Library(None)
    for name, spec in inputs.items():
        if builtin(name, lib):
            what = "a constant" if name in CONSTANTS else "a namespace" if name in names.ROOTS else (
                "a dtype" if name in names.FLOAT_DTYPES else "a function")
            field = "at" if spec.role == "at" else "constants"
            raise ValidationFailed(f"input {name!r} in `{field}` has the name of {what} of the language; "
                                   "rename it", name=name, field=field)


def lower(text: str, inputs: dict[str, InputSpec], settings) -> Program:
    tree = parse(text, settings)
    check_input_names(inputs)
    lo = Lowerer(inputs, settings)
    try:
        output = lo.program(tree)
    except RecursionError:  # nesting the pre-scan and the helper-depth limit could not see, combined
        raise LimitExceeded("the program nests too deeply to lower (limit max_nesting_depth)",
                            limit="max_nesting_depth", max=settings.max_nesting_depth) from None
    return Program(lo.graph, output, [n for n in lo.graph.inputs])


class Lowerer:
    def __init__(self, inputs: dict[str, InputSpec], settings):
        self.specs = inputs
        self.settings = settings
        self.graph = Graph(settings)
        self.lib = Library(self)
        self.iterations = 0
        self.helpers: dict[str, Helper] = {}
        self.defined: set[str] = set()  # every helper of the program, visible or not
        self.tree: ast.Module | None = None
        self.depth = 0  # helper calls being inlined, one inside the other
        self.uniform = False  # lowering a loop body once for every iteration (dsl/loops.py)

    @classmethod
    def child(cls, lo: Lowerer) -> Lowerer:
        """A lowerer for a loop body: a fresh graph, the same inputs, helpers and program."""
        sub = cls(lo.specs, lo.settings)
        sub.helpers, sub.defined, sub.tree, sub.uniform = lo.helpers, lo.defined, lo.tree, True
        return sub

    def loaded_outside(self, s: ast.stmt) -> set[str]:
        """Names the program reads anywhere but inside ``s``."""
        names, stack = set(), [self.tree]
        while stack:
            node = stack.pop()
            if node is s:
                continue
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                names.add(node.id)
            stack.extend(ast.iter_child_nodes(node))
        return names

    # ------------------------------------------------------------ values

    def node(self, v) -> Node:
        if isinstance(v, Node):
            return v
        if isinstance(v, (bool, int, float)):
            return self.graph.const(v)
        if isinstance(v, list):
            parts = [self.node(x) for x in v]
            if not parts:
                raise ShapeError("an empty list is not an array")
            return self.lib.f_stack(parts)
        if isinstance(v, str):
            raise ProgramError(f"a string ({v!r:.40}) is only an argument such as mode=\"reflect\", not an array",
                               code="type_error")
        if v is Ellipsis:
            raise ProgramError("... is only a subscript (x[..., 0]), not an array", code="type_error")
        raise ProgramError(f"expected an array, got a {type(v).__name__}", code="type_error")

    def static_int(self, v, what: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            got = f"an array of shape {list(v.shape)}" if isinstance(v, Node) else repr(v)
            raise ProgramError(f"{what} must be a static integer, got {got}", code="type_error")
        return v

    def check_int(self, v):
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > INT_MAX:
            raise LimitExceeded(f"integer {v if abs(v) < 10**30 else 'of ' + str(v.bit_length()) + ' bits'} "
                                f"does not fit in int64", limit="int64", max=INT_MAX)
        if isinstance(v, float) and not math.isfinite(v):
            raise LimitExceeded("constant expression overflows float64", limit="float64")
        return v

    # ------------------------------------------------------------ statements

    def program(self, tree: ast.Module) -> Node:
        self.tree = tree
        body = tree.body
        if not body:
            raise refuse("the program is empty: it needs an output expression")
        *stmts, last = body
        env: dict = {}
        for s in stmts:
            self.statement(s, env)
        if isinstance(last, ast.Return):
            out_expr = last.value
        elif isinstance(last, ast.Expr):
            out_expr = last.value
        else:
            raise refuse("the program must end with an output expression (or `return expr`)", last)
        if out_expr is None:
            raise refuse("return needs an expression", last)
        out = self.output(out_expr, env)
        self.graph.outputs = [out]
        return out

    def output(self, expr: ast.expr, env) -> Node:
        """A list or tuple output is flattened and concatenated; anything else is kept shaped."""
        value = self.expr(expr, env)
        if isinstance(value, (tuple, list)):
            if not value:
                raise refuse("the output list is empty", expr)
            parts = [self.lib.flat(self.lib.as_float(self.node(v))) for v in value]
            return parts[0] if len(parts) == 1 else apply("concat", *parts, axis=-1)
        return self.lib.as_float(self.node(value))

    def statement(self, s: ast.stmt, env: dict) -> None:
        try:
            if isinstance(s, ast.Assign):
                value = self.expr(s.value, env)
                for target in s.targets:
                    self.bind(target, value, env)
            elif isinstance(s, ast.AugAssign):
                current = self.lookup(s.target.id, s.target, env)
                env[s.target.id] = self.binop(s.op, current, self.expr(s.value, env))
            elif isinstance(s, ast.FunctionDef):
                if s.name in CONSTANTS or s.name in RESERVED:
                    raise refuse(f"helper name {s.name!r} shadows a builtin", s)
                self.helpers[s.name] = Helper(s, dict(self.helpers))
                self.defined.add(s.name)
            elif isinstance(s, ast.For):
                self.loop(s, env)
            elif isinstance(s, ast.Expr):
                raise refuse("an expression statement before the end has no effect; assign it or make it "
                             "the last line", s)
            elif isinstance(s, ast.Return):
                raise refuse("return must be the last line", s)
            else:
                raise refuse(f"{type(s).__name__} is not part of the language", s)
        except DerivdError as e:
            raise locate(e, s)

    def bind(self, target, value, env):
        if isinstance(target, ast.Name):
            if target.id in CONSTANTS:
                raise refuse(f"cannot assign to {target.id}", target)
            env[target.id] = value
            return
        names = target.elts
        if not isinstance(value, (tuple, list)) or len(value) != len(names):
            n = len(value) if isinstance(value, (tuple, list)) else 1
            raise refuse(f"cannot unpack {n} value(s) into {len(names)} names", target)
        for t, v in zip(names, value):
            self.bind(t, v, env)

    def loop(self, s: ast.For, env: dict) -> None:
        bounds = [self.static_int(self.expr(a, env), "a range bound") for a in s.iter.args]
        if len(bounds) == 3 and bounds[2] == 0:
            raise refuse("range() step must not be zero", s.iter)
        steps = range(*bounds)
        if lower_loop(self, s, env, steps):
            return
        limit = self.settings.max_loop_iterations
        if self.iterations + len(steps) > limit:
            raise LimitExceeded(
                f"loops would run {self.iterations + len(steps)} iterations in total, over the limit "
                f"max_loop_iterations={limit}", limit="max_loop_iterations",
                value=self.iterations + len(steps), max=limit, **at(s))
        self.iterations += len(steps)
        for i in steps:
            env[s.target.id] = i
            for stmt in s.body:
                self.statement(stmt, env)

    # ------------------------------------------------------------ expressions

    def expr(self, e: ast.expr, env: dict):
        try:
            return self._expr(e, env)
        except DerivdError as err:
            raise locate(err, e)

    def _expr(self, e, env):
        if isinstance(e, ast.Constant):
            if e.value is None:
                raise refuse("None is only a subscript, where it adds an axis (x[None, :])", e,
                             code="unsupported_syntax")
            if isinstance(e.value, str) or e.value is Ellipsis:
                return e.value
            return self.check_int(e.value)
        if isinstance(e, ast.Name):
            return self.lookup(e.id, e, env)
        if isinstance(e, ast.BinOp):
            return self.binop_chain(e, env)
        if isinstance(e, ast.UnaryOp):
            v = self.expr(e.operand, env)
            return self.unary(e.op, v)
        if isinstance(e, ast.BoolOp):
            values = [self.expr(v, env) for v in e.values]
            op = ast.BitAnd() if isinstance(e.op, ast.And) else ast.BitOr()
            out = values[0]
            for v in values[1:]:
                out = self.binop(op, out, v)
            return out
        if isinstance(e, ast.Compare):
            return self.compare(e, env)
        if isinstance(e, ast.IfExp):
            c, a, b = self.expr(e.test, env), self.expr(e.body, env), self.expr(e.orelse, env)
            if isinstance(c, bool):
                return a if c else b
            if self.uniform and _shape_of(a) != _shape_of(b):
                raise NotUniform  # unrolled, a condition on the loop variable picks one shape, not both
            return apply("where", self.node(c), self.node(a), self.node(b))
        if isinstance(e, ast.Call):
            return self.call(e, env)
        if isinstance(e, ast.Subscript):
            return self.subscript(e, env)
        if isinstance(e, ast.Attribute):
            return self.attribute(e, env)
        if isinstance(e, ast.Tuple):
            return tuple(self.expr(x, env) for x in e.elts)
        if isinstance(e, ast.List):
            return [self.expr(x, env) for x in e.elts]
        raise refuse(f"{type(e).__name__} is not part of the language", e)

    def lookup(self, name, e, env):
        if name in env:
            return env[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        spec = self.specs.get(name)
        if spec is None:
            if name in self.helpers or self.lib.known(name):
                raise refuse(f"{name!r} is a function; call it", e, code="type_error")
            if name in names.ROOTS:
                raise refuse(f"{name!r} is a namespace: use its functions ({name}.sin(x))", e, code="type_error")
            hint = names.suggest(name, set(env) | set(self.specs) | set(self.helpers) | set(CONSTANTS)
                                 | self.lib.names())
            raise UnknownName(f"name {name!r} is not bound: pass it in `at` or `constants`, or assign it{hint}",
                              name=name, **at(e))
        return self.graph.input(name, spec.shape, spec.dtype, spec.role)

    def binop_chain(self, e: ast.BinOp, env):
        """Evaluate a left-leaning chain a + b - c ... iteratively (no recursion per term)."""
        spine = []
        while isinstance(e, ast.BinOp):
            spine.append(e)
            e = e.left
        value = self.expr(e, env)
        for node in reversed(spine):
            try:
                value = self.binop(node.op, value, self.expr(node.right, env))
            except DerivdError as err:
                raise locate(err, node)
        return value

    def binop(self, op, a, b):
        if isinstance(op, ast.MatMult):
            return self.lib.f_matmul(a, b)
        if _static(a) and _static(b):
            return self.static_binop(op, a, b)
        if isinstance(op, ast.Pow) and _static(b) and not isinstance(b, bool):
            return self.power(self.node(a), b)
        name = BINOPS[type(op)]
        a, b = self.node(a), self.node(b)
        if name in ("and", "or"):
            if a.dtype != BOOL or b.dtype != BOOL:
                raise ProgramError(f"& and | combine masks (comparisons), got {_dt(a)} and {_dt(b)}",
                                       code="type_error")
        elif a.dtype == BOOL or b.dtype == BOOL:
            a, b = self.lib.as_float(a), self.lib.as_float(b)
        if name in ("div", "pow"):
            a, b = self.lib.as_float(a), self.lib.as_float(b)
        return apply(name, a, b)

    def power(self, x: Node, p):
        """x ** p for a static p: small integer powers become multiplications (exact, fast)."""
        if p == 2:
            return apply("square", self.lib.as_float(x))
        if p == 1:
            return self.lib.as_float(x)
        if p == 0.5:
            return apply("sqrt", self.lib.as_float(x))
        if p == -1:
            return apply("reciprocal", self.lib.as_float(x))
        if p == 3:
            x = self.lib.as_float(x)
            return apply("square", x) * x
        return apply("pow", self.lib.as_float(x), float(p))

    def static_binop(self, op, a, b):
        if isinstance(op, ast.Pow):
            return self.static_pow(a, b)
        if isinstance(op, (ast.BitAnd, ast.BitOr)) and not (isinstance(a, bool) and isinstance(b, bool)):
            raise ProgramError("& and | combine masks or booleans", code="type_error")
        try:
            return self.check_int(STATIC_BINOPS[type(op)](a, b))
        except ZeroDivisionError:
            if isinstance(op, ast.Div):
                return self.node(float(a)) / self.node(float(b))  # numpy semantics: inf or nan
            raise ProgramError("integer division or modulo by zero", code="zero_division")
        except OverflowError:
            raise LimitExceeded("constant expression overflows float64", limit="float64") from None

    def static_pow(self, a, b):
        if isinstance(a, int) and isinstance(b, int) and b >= 0:
            bits = abs(a).bit_length() * b if abs(a) > 1 else 0
            if bits > 64:
                raise LimitExceeded(f"constant {a} ** {b} is too large to represent (limit int64)",
                                    limit="int64", max=INT_MAX)
            return self.check_int(a ** b)
        try:
            fa, fb = float(a), float(b)
            if abs(fa) > 1 and fb * math.log10(abs(fa)) > 308:
                raise LimitExceeded(f"constant {a} ** {b} is too large to represent (limit float64)",
                                    limit="float64")
            result = math.pow(fa, fb)
        except (OverflowError, ValueError, ZeroDivisionError):
            return apply("pow", self.node(float(a)), self.node(float(b)))  # numpy semantics
        return self.check_int(result)

    def unary(self, op, v):
        if isinstance(v, (list, tuple)):
            v = self.node(v)  # a list is an array; a tuple is refused there
        if isinstance(op, ast.UAdd):
            return v
        if isinstance(op, ast.USub):
            if _static(v):
                return self.check_int(-v)
            if v.dtype == INT:  # stays an integer (an index: -i)
                return apply("sub", self.node(0), v)
            return apply("neg", self.lib.as_float(v) if v.dtype == BOOL else v)
        if _static(v):
            if isinstance(v, bool):
                return not v
            raise ProgramError("~ and not apply to masks or booleans", code="type_error")
        if v.dtype != BOOL:
            raise ProgramError(f"~ and not apply to masks, got {_dt(v)}", code="type_error")
        return apply("not", v)

    def compare(self, e: ast.Compare, env):
        left = self.expr(e.left, env)
        result = None
        for op, right_e in zip(e.ops, e.comparators):
            right = self.expr(right_e, env)
            if _static(left) and _static(right):
                r = STATIC_COMPARE[type(op)](left, right)
            else:
                r = apply(COMPARE[type(op)], self.node(left), self.node(right))
            result = r if result is None else self.binop(ast.BitAnd(), result, r)
            left = right
        return result

    # ------------------------------------------------------------ calls

    def arguments(self, e: ast.Call, env):
        """A call's arguments; a literal None among them is numpy's None (``axis=None``: all axes)."""
        def value(a):
            return None if isinstance(a, ast.Constant) and a.value is None else self.expr(a, env)

        args = [value(a) for a in e.args]
        kwargs = {k.arg: value(k.value) for k in e.keywords}
        if None in kwargs:
            raise refuse("**kwargs are not part of the language", e, code="unsupported_syntax")
        return args, kwargs

    def call(self, e: ast.Call, env):
        if isinstance(e.func, ast.Attribute):
            path = names.dotted(e.func)
            if path is not None and path[0] in names.ROOTS and path[0] not in env:
                return self.namespace_call(path, e, env)
            return self.method_call(e, env)
        name = e.func.id
        if name in env:
            raise refuse(f"{name!r} is a value, not a function", e, code="type_error")
        args, kwargs = self.arguments(e, env)
        helper = self.helpers.get(name)
        if helper is not None:
            return self.inline(helper, args, kwargs, e)
        if name == "range":
            raise refuse("range() is only for `for` loops", e)
        if name in self.defined:
            raise refuse(f"helper {name}() is not visible here: a helper calls only helpers defined before it, "
                         "so there is no recursion", e, code="recursion")
        if name in self.specs:
            raise refuse(f"{name!r} is an input, not a function", e, code="type_error")
        if not self.lib.known(name):
            raise self.unknown_function(name, e)
        return self.library_call(name, args, kwargs, e)

    def library_call(self, name, args, kwargs, e, shown=None):
        try:
            return self.lib.call(name, args, kwargs)
        except TypeError as err:
            raise refuse(f"bad arguments to {shown or name}(): {_type_error(err)}", e, code="bad_arguments") from None

    def unknown_function(self, name, e, prefix=("np",), shown=None) -> DerivdError:
        """The refusal of a function the language does not have: complex, numpy's, or a near miss."""
        shown = shown or name
        if name in names.COMPLEX or name.split(".")[0] == "fft":
            return names.real_valued(f"{shown}()")
        if name in names.MEMBERS.get(prefix, ()):
            module = names.NAMESPACES[prefix].__name__
            return ProgramError(f"{module}'s `{name}` is not part of the language", code="unsupported_function",
                                name=name, **at(e))
        hint = names.suggest(name, self.lib.names() | set(self.helpers))
        return UnknownName(f"unknown function {shown!r}{hint}", name=name, **at(e))

    def namespace_call(self, path, e, env):
        """``np.sin(x)``, ``scipy.special.expit(x)``: the language's function of that name, when the
        module the prefix stands for has one (dsl/names.py)."""
        found = names.split(path)
        shown = ".".join(path)
        if found is None:
            if "fft" in path:
                raise names.real_valued(f"{shown}()")
            raise refuse(f"`{shown}` is not part of the language", e, code="unsupported_function")
        prefix, name = found
        if shown in {".".join(k) for k in names.DIFFERENT}:
            raise refuse(names.DIFFERENT[path], e, code="unsupported_function")
        if not (self.lib.known(name) and name in names.MEMBERS[prefix]):
            if self.lib.known(name):
                homes = [".".join(p + (name,)) for p in names.NAMESPACES if name in names.MEMBERS[p]
                         and p[0] == path[0]]
                where = f"; it is {homes[0]}" if homes else f"; call it as {name}()"
                raise UnknownName(f"{'.'.join(prefix)} has no function `{name}`{where}", name=shown, **at(e))
            raise self.unknown_function(name, e, prefix, shown)
        args, kwargs = names.numpy_arguments(name, *self.arguments(e, env))
        for key, value in names.DEFAULTS.get(names.default_key(prefix, name), {}).items():
            kwargs.setdefault(key, value)
        return self.library_call(name, args, kwargs, e, shown)

    def method_call(self, e: ast.Call, env):
        """``x.sum(axis=0)`` is ``sum(x, axis=0)``: numpy's array methods that are language functions."""
        name = e.func.attr
        x = self.expr(e.func.value, env)
        if not isinstance(x, Node):
            raise refuse(f".{name}() is a method of arrays, not of {_kind(x)}", e, code="type_error")
        if name == "astype":
            return self.astype(x, e, env)
        args, kwargs = self.arguments(e, env)
        if name in ("reshape", "transpose") and len(args) > 1:  # x.reshape(2, 3), x.transpose(1, 0)
            args = [tuple(args)]
        if name in names.ARRAY_METHODS and self.lib.known(name):
            args, kwargs = names.numpy_arguments(name, [x] + args, kwargs)
            return self.library_call(name, args, kwargs, e, f"x.{name}")
        if self.lib.known(name):
            raise refuse(f"arrays have no method .{name}(); call {name}(x)", e, code="unsupported_function")
        if name in names.ARRAY_METHODS:
            raise refuse(f"numpy's method .{name}() is not part of the language", e, code="unsupported_function")
        hint = names.suggest(name, {m for m in names.ARRAY_METHODS if self.lib.known(m)} | {"astype"})
        raise refuse(f"arrays have no method .{name}(){hint}", e, code="unknown_name")

    def astype(self, x, e, env):
        """``x.astype(float)``: the only dtype a differentiable value has (integers and masks become floats)."""
        if len(e.args) != 1 or e.keywords:
            raise refuse("astype() takes one dtype: astype(float)", e, code="bad_arguments")
        path = names.dotted(e.args[0])
        word = path[-1] if path else None
        if word in names.FLOAT_DTYPES:
            return self.lib.as_float(x)
        raise refuse("astype() converts to float only (float, np.float64): integer or boolean values "
                     "have no derivative", e, code="unsupported_function")

    def inline(self, helper: Helper, args, kwargs, e):
        params = [a.arg for a in helper.node.args.args]
        if kwargs or len(args) != len(params):
            raise refuse(f"{helper.node.name}() takes {len(params)} positional argument(s), got {len(args)}", e,
                         code="bad_arguments")
        limit = self.settings.max_nesting_depth
        if self.depth >= limit:
            raise LimitExceeded(f"helpers call helpers more than {limit} deep (limit max_nesting_depth)",
                                limit="max_nesting_depth", value=self.depth + 1, max=limit, **at(e))
        saved = self.helpers
        self.helpers = helper.visible
        self.depth += 1
        try:
            return self.expr(helper.node.body[0].value, dict(zip(params, args)))
        finally:
            self.helpers = saved
            self.depth -= 1

    # ------------------------------------------------------------ indexing

    def attribute(self, e: ast.Attribute, env):
        path = names.dotted(e)
        if path is not None and path[0] in names.ROOTS and path[0] not in env:
            return self.namespace_attribute(path, e)
        v = self.expr(e.value, env)
        if _static(v) or isinstance(v, (tuple, list)):
            raise refuse(f".{e.attr} applies to arrays", e, code="type_error")
        if not isinstance(v, Node):
            raise refuse(f".{e.attr} applies to arrays, not to {_kind(v)}", e, code="type_error")
        if e.attr == "T":
            return self.lib.f_transpose(v)
        if e.attr == "shape":
            return tuple(v.shape)
        if e.attr == "ndim":
            return v.ndim
        if e.attr == "size":
            return v.size
        if e.attr in ("real", "imag"):
            raise names.real_valued(f".{e.attr}")
        if e.attr in names.ARRAY_METHODS:
            raise refuse(f".{e.attr} is a method; call it: x.{e.attr}()", e, code="type_error")
        hint = names.suggest(e.attr, ATTRIBUTES | {m for m in names.ARRAY_METHODS if self.lib.known(m)})
        raise refuse(f"arrays have no attribute .{e.attr}{hint}", e, code="unknown_name")

    def namespace_attribute(self, path, e):
        """``np.pi``, ``np.newaxis`` (a value); ``np.sin`` without a call is refused."""
        shown = ".".join(path)
        if len(path) == 2 and path[1] in names.NAMESPACE_CONSTANTS:
            return names.NAMESPACE_CONSTANTS[path[1]]
        found = names.split(path)
        if found is not None and self.lib.known(found[1]) and found[1] in names.MEMBERS[found[0]]:
            raise refuse(f"{shown} is a function; call it", e, code="type_error")
        if tuple(path) in names.NAMESPACES:
            raise refuse(f"{shown} is a namespace: use its functions", e, code="type_error")
        raise refuse(f"`{shown}` is not part of the language", e, code="unsupported_function")

    def subscript(self, e: ast.Subscript, env):
        path = names.dotted(e.value)
        if path is not None and len(path) == 2 and path[0] in names.ROOTS and path[0] not in env \
                and path[1] in ("r_", "c_"):
            raw = e.slice.elts if isinstance(e.slice, ast.Tuple) else [e.slice]
            return self.lib.concatenator(path[1], [self.concatenator_item(r, env) for r in raw])
        return indexing.subscript(self, e, env)

    def concatenator_item(self, r, env):
        """An item of ``np.r_[...]``: a slice of static numbers as ``arange`` (a complex step ``nj``:
        ``linspace`` of n, numpy's spelling), else the value."""
        if not isinstance(r, ast.Slice):
            return self.expr(r, env)
        step = r.step
        if isinstance(step, ast.Constant) and isinstance(step.value, complex) and not step.value.real:
            start, stop = (0.0 if p is None else self.expr(p, env) for p in (r.lower, r.upper))
            return self.lib.f_linspace(start, stop, self.check_int(int(abs(step.value))))
        start, stop, step = (None if p is None else self.expr(p, env) for p in (r.lower, r.upper, r.step))
        if stop is None:
            raise refuse("a slice in np.r_[...] needs its stop", r, code="bad_arguments")
        return self.lib.f_arange(0 if start is None else start, stop, 1 if step is None else step)


ATTRIBUTES = {"T", "shape", "ndim", "size"}


def _kind(v) -> str:
    return "a number" if _static(v) else "a tuple" if isinstance(v, tuple) else "a list" if isinstance(
        v, list) else "a string" if isinstance(v, str) else type(v).__name__


def _static(v) -> bool:
    return isinstance(v, (bool, int, float))


def _shape_of(v):
    return v.shape if isinstance(v, Node) else () if _static(v) else None


def _dt(node: Node) -> str:
    return {FLOAT: "float64", INT: "int64", BOOL: "a mask"}[node.dtype]


def _type_error(err: TypeError) -> str:
    msg = str(err)
    return msg.split(") ", 1)[-1] if ") " in msg else msg


def locate(err: DerivdError, node: ast.AST) -> DerivdError:
    """Attach the innermost line and column to an error raised while lowering ``node``."""
    if "line" not in err.detail and getattr(node, "lineno", None) is not None:
        where = at(node)
        err.detail.update(where)
        err.message = f"{err.message} (line {where['line']}, column {where['column']})"
        err.args = (err.message,)
    return err
