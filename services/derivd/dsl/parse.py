"""Program text -> validated Python AST, refusing anything outside the language.

Order of defence, each step before the next can be hurt by hostile input:

1. size: the text's byte length against ``max_source_bytes``;
2. a linear pre-scan for nesting (brackets, chains of unary operators, ``**``
   and conditional expressions) against ``max_nesting_depth``, because
   ``ast.parse`` recurses on such input and can exhaust the C stack;
3. ``ast.parse`` (never ``eval``/``exec``/``compile`` to code), one thread at a time: CPython
   3.11 keeps the AST constructor's recursion depth in interpreter-wide state, so two threads
   building trees at once (a thread switch happens when the garbage collector runs a finalizer)
   corrupt it and ``ast.parse`` raises ``SystemError: AST constructor recursion depth mismatch``.
   Parsing is bounded by ``max_source_bytes`` (milliseconds), so the lock costs little. A tree too
   deep for the constructor (a very long ``a + b + ...`` chain) is a 413 naming
   ``max_nesting_depth``, like every other depth;
4. a walk over a whitelist of node types, with the AST depth measured
   iteratively (a left-leaning chain ``a + b + c + ...`` counts once, since
   the lowering folds it in a loop).
"""

from __future__ import annotations

import ast
import re
import threading

from derivd.errors import LimitExceeded, ParseError

ALLOWED = (
    ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.FunctionDef, ast.Return, ast.For,
    ast.arguments, ast.arg, ast.Name, ast.Load, ast.Store, ast.Constant,
    ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.keyword,
    ast.Subscript, ast.Slice, ast.Attribute, ast.List, ast.Tuple,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.MatMult, ast.Mod, ast.FloorDiv,
    ast.USub, ast.UAdd, ast.Invert, ast.Not, ast.And, ast.Or, ast.BitAnd, ast.BitOr,
    ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq,
)

DESCRIBE = {
    ast.Lambda: "lambda", ast.ListComp: "comprehension", ast.SetComp: "comprehension",
    ast.DictComp: "comprehension", ast.GeneratorExp: "generator expression", ast.JoinedStr: "f-string",
    ast.NamedExpr: "walrus operator (:=)", ast.Starred: "starred argument", ast.Import: "import",
    ast.ImportFrom: "import", ast.While: "while loop", ast.If: "if statement (use `a if c else b` or where)",
    ast.With: "with", ast.Try: "try", ast.ClassDef: "class", ast.Global: "global", ast.Nonlocal: "nonlocal",
    ast.Delete: "del", ast.Dict: "dict", ast.Set: "set", ast.Await: "await", ast.Yield: "yield",
    ast.AsyncFunctionDef: "async def", ast.Raise: "raise", ast.Assert: "assert", ast.Pass: "pass",
    ast.Break: "break", ast.Continue: "continue", ast.AnnAssign: "annotated assignment",
    ast.BitXor: "^ operator", ast.LShift: "<< operator", ast.RShift: ">> operator",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}

AST_LOCK = threading.Lock()
_CHAIN = re.compile(r"(?:[-+~]\s*){2,}|(?:\bnot\b\s*){2,}")


def at(node: ast.AST) -> dict:
    return {"line": getattr(node, "lineno", None), "column": getattr(node, "col_offset", -1) + 1}


def refuse(message: str, node: ast.AST | None = None, code: str | None = None) -> ParseError:
    where = at(node) if node is not None else {}
    if where.get("line") is not None:
        message = f"{message} (line {where['line']}, column {where['column']})"
    return ParseError(message, code=code, **where)


def prescan(text: str, max_depth: int) -> None:
    """Reject nesting that would make ``ast.parse`` recurse deeply: linear time, no parsing."""
    depth, line, col = 0, 1, 0
    for ch in text:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
        elif ch in "([{":
            depth += 1
            if depth > max_depth:
                raise LimitExceeded(
                    f"brackets nest deeper than the limit max_nesting_depth={max_depth} (line {line}, column {col})",
                    limit="max_nesting_depth", value=depth, max=max_depth, line=line, column=col)
        elif ch in ")]}":
            depth = max(0, depth - 1)
    for lineno, src in enumerate(text.split("\n"), 1):
        chains = [m.group(0) for m in _CHAIN.finditer(src)]
        worst = max([len(re.findall(r"[-+~]|not", c)) for c in chains] + [src.count("**"), src.count(" if ")])
        if worst > max_depth:
            raise LimitExceeded(
                f"an expression on line {lineno} nests {worst} operators deep, over the limit "
                f"max_nesting_depth={max_depth}", limit="max_nesting_depth", value=worst, max=max_depth, line=lineno)


def parse(text: str, settings) -> ast.Module:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > settings.max_source_bytes:
        raise LimitExceeded(
            f"program text is {size} bytes, over the limit max_source_bytes={settings.max_source_bytes}",
            limit="max_source_bytes", value=size, max=settings.max_source_bytes)
    if "\x00" in text:
        raise ParseError("program text contains a NUL character")
    prescan(text, settings.max_nesting_depth)
    try:
        with AST_LOCK:
            tree = ast.parse(text, mode="exec")
    except SyntaxError as e:
        raise ParseError(f"syntax error: {e.msg} (line {e.lineno}, column {e.offset})",
                         line=e.lineno, column=e.offset) from None
    except RecursionError:
        raise LimitExceeded(
            "the program nests too deeply for the parser (a very long chain like `a + b + ...` counts "
            f"as deep: split it into statements); limit max_nesting_depth={settings.max_nesting_depth}",
            limit="max_nesting_depth", max=settings.max_nesting_depth) from None
    except (MemoryError, ValueError, OverflowError) as e:
        raise ParseError(f"program could not be parsed: {type(e).__name__}") from None
    validate(tree, settings.max_nesting_depth)
    return tree


def validate(tree: ast.Module, max_depth: int) -> None:
    """Whitelist walk with an explicit stack (no recursion on user input)."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise LimitExceeded(
                f"expressions nest deeper than the limit max_nesting_depth={max_depth} "
                f"(line {at(node)['line']}, column {at(node)['column']})",
                limit="max_nesting_depth", value=depth, max=max_depth, **at(node))
        if not isinstance(node, ALLOWED):
            what = DESCRIBE.get(type(node), type(node).__name__)
            raise refuse(f"{what} is not part of the language", node, code="unsupported_syntax")
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr in ("r_", "c_"):
            for item in node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]:
                if isinstance(item, ast.Slice) and isinstance(item.step, ast.Constant):
                    item.step.argument = True  # np.r_[0:1:5j]: numpy's spelling of a count of points
        _check(node)
        if isinstance(node, (ast.Call, ast.keyword)):  # a string is a call's argument, nothing else
            for arg in (node.args if isinstance(node, ast.Call) else [node.value]):
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    arg.argument = True
        for field, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            for child in children:
                if isinstance(child, ast.AST):
                    # a left operand continues its chain: it does not deepen the expression
                    same_level = isinstance(node, ast.BinOp) and field == "left"
                    stack.append((child, depth if same_level else depth + 1))


def _check(node: ast.AST) -> None:
    if isinstance(node, ast.Constant):
        if node.value is None or node.value is Ellipsis or isinstance(node.value, (bool, int, float)):
            return  # None and ...: subscripts (lowering refuses them anywhere else)
        if isinstance(node.value, str) and getattr(node, "argument", False):
            return  # a call's option (einsum's subscripts, mode="reflect"): never an array, never arithmetic
        if isinstance(node.value, complex):
            if getattr(node, "argument", False) and not node.value.real:
                return
            raise refuse("complex literals are not part of the language: it is real-valued (float64 arrays)", node,
                         code="unsupported_syntax")
        raise refuse(f"literal {type(node.value).__name__} values are not part of the language", node,
                     code="unsupported_syntax")
    if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
        raise refuse(f"attribute .{node.attr} is not allowed", node, code="unsupported_syntax")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, (ast.Name, ast.Attribute)):
            raise refuse("only functions (sin, np.sin) and array methods (x.sum()) can be called, not the value "
                         "of an expression", node, code="unsupported_syntax")
    if isinstance(node, ast.Name) and node.id.startswith("__"):
        raise refuse(f"name {node.id!r} is not allowed", node, code="unsupported_syntax")
    if isinstance(node, ast.FunctionDef):
        a = node.args
        if a.vararg or a.kwarg or a.kwonlyargs or a.defaults or a.posonlyargs or node.decorator_list:
            raise refuse("helpers take plain positional parameters only", node, code="unsupported_syntax")
        if len(node.body) != 1 or not isinstance(node.body[0], ast.Return) or node.body[0].value is None:
            raise refuse("a helper's body is one `return expression`", node, code="unsupported_syntax")
    if isinstance(node, ast.For):
        if node.orelse:
            raise refuse("for ... else is not part of the language", node, code="unsupported_syntax")
        if not isinstance(node.target, ast.Name):
            raise refuse("a loop variable must be a single name", node, code="unsupported_syntax")
        it = node.iter
        if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
                and not it.keywords and 1 <= len(it.args) <= 3):
            raise refuse("loops run over range(N), range(a, b) or range(a, b, step)", node,
                         code="unsupported_syntax")
    if isinstance(node, ast.Assign):
        for t in node.targets:
            names = t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]
            if any(isinstance(n, ast.Subscript) for n in names):
                raise refuse("in-place assignment (y[i] = v) is not part of the language: arrays are values, "
                             "so build the new one: where(arange(len(y)) == i, v, y), or concat([y[:i], "
                             "v[None], y[i + 1:]])", node, code="unsupported_syntax")
            if not all(isinstance(n, ast.Name) for n in names):
                raise refuse("assignment targets are names (or a tuple of names)", node, code="unsupported_syntax")
    if isinstance(node, ast.AugAssign) and not isinstance(node.target, ast.Name):
        raise refuse("augmented assignment targets a name", node, code="unsupported_syntax")
