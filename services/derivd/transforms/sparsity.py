"""Sparsity detection: dependency patterns propagated through the IR, valid for every input value.

Jacobian pattern. Let x be the flat vector of the wrt inputs (n entries). The
pattern of a node v with s entries is a boolean s × n matrix P_v with
P_v[i, j] = 0 only if ∂v_i/∂x_j = 0 for *every* x. A primitive says, for each
input u_k, which entries of u_k each output entry reads: a boolean matrix D_k
(its rule shape, ``Primitive.sparsity``). By the chain rule
∂v/∂x = Σ_k (∂v/∂u_k)(∂u_k/∂x), and ∂v/∂u_k vanishes off D_k, so

    P_v = ⋁_k D_k · P_{u_k}        (boolean matrix products; P_x = [0 … I … 0])

is a pattern of v: global, never one observed at a point.

Hessian pattern (Walther 2008, "Computing sparse Hessians with automatic
differentiation"; Gower & Mello 2012, "A new framework for the computation of
Hessians"). For a scalar f the second-order chain rule over the graph reads

    ∇²f = Σ_v Σ_i  v̄_i · A_iᵀ ∇²φ_{v,i} A_i,

with v̄_i the adjoint of entry i of node v, φ_{v,i} the local function that
computes it from the argument entries it reads, and A_i the Jacobian of those
entries with respect to x. Linear primitives have ∇²φ = 0 and add nothing; a
nonlinear one adds, for every entry i whose adjoint can be nonzero (entries
that reach the output: a backward pass with the transposed D_k), the outer
products (D_k P_{u_k})[i]ᵀ (D_l P_{u_l})[i] for the argument pairs (k, l) its
*curvature* names: exp(u) has (u, u); u·w only (u, w) and (w, u), being linear
in each; u/w has (u, w) and (w, w). The union over all nodes is symmetric and
valid for every x.

Rule shapes, ``Primitive.sparsity = (structure, curvature)``:

==============  =======================================================================
``zero``        derivative zero everywhere (floor, sign, constants): no dependency
``elementwise`` output entry i reads entry i of each input, after broadcasting
``reduce``      an output entry reads every entry of its group along ``axes``
``select``      each output entry is one entry of one input, or 0 (reshape, transpose,
                index, gather, concat, ...): found by running the primitive on entry
                numbers 1..size with the other float inputs 0
``scatter_add`` an output entry sums the entries whose index points at it
``linear``      any map linear in its float inputs (cumsum, ...): its Jacobian is constant,
                so its nonzeros, found by running the primitive once on a batch of unit
                vectors (every primitive takes leading batch axes), are exact everywhere
``matmul``      entry (i, j) reads row i of a and column j of b; curvature pairs only
                a[i, k] with b[k, j], per k
``matrix``      every output entry reads every entry of its (stacked) input matrix
``solve``       x = solve(A, B): column j of x reads all of A and column j of B
``loop``        the final states of a loop, one row per state entry: the body's own
                pattern iterated from the initial states (exactly for short loops, to
                its fixed point for long ones, which contains every iteration's)
``loop_get``    a final state: its rows of the loop's (an element of another tuple: the tuple's one row)
``None``        no declaration: dense (every entry reads every entry; curvature all),
                never wrong
==============  =======================================================================

Curvature is ``()`` (linear), ``"all"``, or a tuple of argument pairs ``(k, l)``.
Non-differentiable primitives (masks, integer ops) carry no dependency.

Integer index arrays (gather, scatter_add) are request constants whose values
are known before anything runs: the pattern uses them, so it is exact for the
request's indices and valid for every value of the differentiated inputs. An
index that is not known falls back to the dense rule.

Patterns are scipy.sparse boolean CSR matrices; a pattern or an intermediate
that would pass ``max_nnz`` entries raises ``PatternTooLarge``, and callers
fall back to dense derivatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from derivd import ops
from derivd.ops.evaluate import eval_primitive
from derivd.ops.registry import FLOAT

ALL = "all"


class PatternTooLarge(Exception):
    """A pattern would pass the entry budget: the caller computes dense derivatives instead."""


def jacobian_pattern(graph, wrt: list, output, constants: dict | None = None,
                     max_nnz: int = 10**7) -> sp.csr_matrix:
    """The (output.size × n) pattern of ∂output/∂wrt (columns: wrt inputs flattened, concatenated)."""
    return _Propagation(graph, wrt, output, constants or {}, max_nnz, curvature=False).jacobian()


def hessian_pattern(graph, wrt: list, output, constants: dict | None = None,
                    max_nnz: int = 10**7) -> sp.csr_matrix:
    """The symmetric (n × n) pattern of ∇²output for a one-element output."""
    return _Propagation(graph, wrt, output, constants or {}, max_nnz, curvature=True).hessian()


# ---------------------------------------------------------------- local dependency maps


@dataclass
class Local:
    """A node's local maps: ``deps[k]`` is D_k (``None``: the identity); ``pairs[(k, l)]`` holds
    two (entries × p) index arrays aligning argument entries whose products are the curvature."""

    deps: dict[int, sp.csr_matrix | None]
    pairs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def _entries(shape) -> np.ndarray:
    return np.arange(math.prod(shape)).reshape(shape)


def _selection(src: np.ndarray, ncols: int) -> sp.csr_matrix:
    """Row r has its one entry in column src[r]; none where src[r] < 0."""
    src = np.asarray(src, dtype=np.int64).ravel()
    keep = src >= 0
    indptr = np.concatenate([[0], np.cumsum(keep)])
    return sp.csr_matrix((np.ones(int(keep.sum()), dtype=bool), src[keep], indptr), shape=(src.size, ncols))


def _groups(groups: np.ndarray, ncols: int) -> sp.csr_matrix:
    """Row r reads the columns ``groups[r, :]`` (distinct within a row)."""
    rows, width = groups.shape
    return sp.csr_matrix((np.ones(rows * width, dtype=bool), groups.ravel(), np.arange(0, rows * width + 1, width)),
                         shape=(rows, ncols))


def _elementwise(node, ks, prop):
    deps = {}
    for k in ks:
        a = node.inputs[k]
        same = a.shape == node.shape
        deps[k] = None if same else _selection(np.broadcast_to(_entries(a.shape), node.shape), a.size)
    return Local(deps)


def _reduce(node, ks, prop):
    (x,) = node.inputs
    reduced = [a + x.ndim for a in node.params["axes"]]
    kept = [i for i in range(x.ndim) if i not in reduced]
    width = math.prod(x.shape[i] for i in reduced)
    prop.budget(node.size * width)
    groups = np.transpose(_entries(x.shape), kept + reduced).reshape(node.size, width)
    return Local({0: _groups(groups, x.size)})


def _select(node, ks, prop):
    """Run the primitive on entry numbers: output value s > 0 means "copies entry s - 1"."""
    prim = ops.get(node.prim)
    params = node.params
    base = _base_arguments(node, prop)
    if base is None:
        return None
    deps = {}
    for k in ks:
        a = node.inputs[k]
        args = list(base)
        args[k] = (np.arange(a.size, dtype=np.float64) + 1.0).reshape(a.shape)
        src = np.asarray(eval_primitive(prim, args, params), dtype=np.float64).ravel().astype(np.int64) - 1
        identity = a.size == node.size and np.array_equal(src, np.arange(node.size))
        deps[k] = None if identity else _selection(src, a.size)
    return Local(deps)


def _base_arguments(node, prop):
    """The arguments a probe run starts from: zeros for the float inputs, the known values of the
    others (indices, masks); None when one of those is not known."""
    base = []
    for a in node.inputs:
        value = np.zeros(a.shape) if a.dtype == FLOAT else prop.known(a)
        if value is None:
            return None
        base.append(value)
    return base


def _linear(node, ks, prop):
    """D_k: the nonzeros of the (constant) Jacobian of a linear map, one run on the identity."""
    prim = ops.get(node.prim)
    base = _base_arguments(node, prop)
    if base is None:
        return None
    deps = {}
    for k in ks:
        a = node.inputs[k]
        prop.budget(node.size * a.size)
        args = list(base)
        args[k] = np.eye(a.size).reshape((a.size,) + a.shape)
        jacobian_t = np.asarray(eval_primitive(prim, args, node.params)).reshape(a.size, node.size)
        deps[k] = sp.csr_matrix(jacobian_t.T != 0)
    return Local(deps)


def _scatter_add(node, ks, prop):
    ct, idx = node.inputs
    idx_value = prop.known(idx)
    if idx_value is None:
        return None
    axis = node.params["axis"]
    # ct's entry j is added into the output entry dest[j]: gather the output's entry numbers.
    dest = eval_primitive(ops.get("gather"), [_entries(node.shape), idx_value], {"axis": axis})
    dest = np.asarray(dest, dtype=np.int64).ravel()
    d = sp.csr_matrix((np.ones(dest.size, dtype=bool), (dest, np.arange(dest.size))), shape=(node.size, ct.size))
    return Local({0: d})


def _matmul(node, ks, prop):
    a, b = node.inputs
    m, k = a.shape[-2:]
    n = b.shape[-1]
    stack = node.shape[:-2]
    prop.budget(node.size * k)
    ia = np.broadcast_to(_entries(a.shape), stack + (m, k))
    ib = np.broadcast_to(_entries(b.shape), stack + (k, n))
    # Output entry (s, i, j) reads a[s, i, :] and b[s, :, j], aligned along the summed index.
    rows_a = np.broadcast_to(ia[..., :, None, :], stack + (m, n, k)).reshape(node.size, k)
    rows_b = np.broadcast_to(np.swapaxes(ib, -1, -2)[..., None, :, :], stack + (m, n, k)).reshape(node.size, k)
    maps = {0: (rows_a, a.size), 1: (rows_b, b.size)}
    return Local({k: _groups(*maps[k]) for k in ks}, {(0, 1): (rows_a, rows_b)})


def _matrix(node, ks, prop):
    (x,) = node.inputs
    stacks = math.prod(x.shape[:-2])
    per = node.size // stacks if stacks else 0
    width = x.shape[-1] * x.shape[-2]
    prop.budget(node.size * width)
    groups = np.repeat(_entries(x.shape).reshape(stacks, width), per, axis=0)
    return Local({0: _groups(groups, x.size)})


def _solve(node, ks, prop):
    a, b = node.inputs
    n, k = node.shape[-2:]
    stack = node.shape[:-2]
    s = math.prod(stack)
    prop.budget(node.size * (n * n + n))
    ia = np.broadcast_to(_entries(a.shape), stack + (n, n)).reshape(s, 1, 1, n * n)
    ib = np.swapaxes(np.broadcast_to(_entries(b.shape), stack + (n, k)).reshape(s, n, k), 1, 2)
    rows_a = np.broadcast_to(ia, (s, n, k, n * n)).reshape(node.size, n * n)
    rows_b = np.broadcast_to(ib[:, None, :, :], (s, n, k, n)).reshape(node.size, n)
    maps = {0: (rows_a, a.size), 1: (rows_b, b.size)}
    return Local({k: _groups(*maps[k]) for k in ks})


def _dense(node, ks, prop):
    deps = {}
    for k in ks:
        a = node.inputs[k]
        prop.budget(node.size * a.size)
        deps[k] = _groups(np.broadcast_to(np.arange(a.size), (node.size, a.size)), a.size)
    return Local(deps)


# A loop of at most this many iterations is iterated exactly; a longer one to its fixed point,
# which takes at most ITERATIONS_MAX steps or falls back to dense.
EXACT_ITERATIONS = 64
ITERATIONS_MAX = 256


def _loop(node, ks, prop):
    """Rows: the final states' entries, state after state. The body's pattern B (outputs over
    carried and captured entries) maps the states' dependence on the loop's own inputs (U entries)
    from one iteration to the next; the counter is unknown, so whatever it indexes is dense."""
    params = node.params
    body, count = params["body"], params["count"]
    if params["collect"]:  # stacks of every state: derivative graphs only, never worth it
        return None
    offsets = np.cumsum([0] + [a.size for a in node.inputs])
    total = int(offsets[-1])
    known = {b.id: prop.known(a) for a, b in zip(node.inputs, body.carried + body.captured) if a.dtype != FLOAT}
    step = _Propagation(body.graph, body.carried + body.captured, body.outputs, {}, prop.max_nnz, curvature=False,
                        known=known).outputs_patterns()

    def block(j):  # input j's entries as columns of U
        a = node.inputs[j]
        return _selection(np.arange(offsets[j], offsets[j] + a.size), total)

    carried = len(body.carried)
    inputs = [block(j) for j in range(len(node.inputs))]

    def advance(states):  # one iteration: what each new state reads, in terms of U
        reads = sp.vstack(states + inputs[carried:]).tocsr()
        return [prop.compose(b, reads) if b is not None else sp.csr_matrix((out.size, total), dtype=bool)
                for out, b in zip(body.outputs, step)]

    states = inputs[:carried]
    if count <= EXACT_ITERATIONS:
        for _ in range(count):
            states = advance(states)
    else:  # the union over iterations grows to a fixed point that holds every iteration's pattern
        for _ in range(ITERATIONS_MAX):
            grown = [_canonical(prop.union([a, b])) for a, b in zip(states, advance(states))]
            if all((a != b).nnz == 0 for a, b in zip(states, grown)):
                break
            states = grown
        else:
            return None  # no fixed point within ITERATIONS_MAX steps: dense
    rows = _canonical(sp.vstack(states)) if states else sp.csr_matrix((0, total), dtype=bool)
    prop.budget(rows.nnz)
    return Local({j: rows[:, offsets[j]:offsets[j + 1]].tocsr() for j in ks})


def _loop_get(node, ks, prop):
    """A final state: its rows of the loop's pattern; or, when the loop fell back to dense (one
    row), that row for every entry."""
    loop = node.inputs[0]
    rows = next(iter(prop.local[loop.id].deps.values())).shape[0]
    if loop.prim != "loop":  # an element of another tuple-valued primitive (eigh, svd, qr): dense, one row
        return Local({0: _selection(np.zeros(node.size, dtype=np.int64), rows)})
    sizes = [c.size for c in loop.params["body"].carried]
    index = node.params["index"]
    if index >= len(sizes) or rows != sum(sizes):
        return Local({0: _selection(np.zeros(node.size, dtype=np.int64), rows)})
    start = sum(sizes[:index])
    return Local({0: _selection(np.arange(start, start + node.size), rows)})


STRUCTURES = {
    "elementwise": _elementwise, "reduce": _reduce, "select": _select, "linear": _linear,
    "scatter_add": _scatter_add,
    "matmul": _matmul, "matrix": _matrix, "solve": _solve, "dense": _dense, "loop": _loop, "loop_get": _loop_get,
}


# ---------------------------------------------------------------- propagation


def _row_nnz(p: sp.csr_matrix) -> np.ndarray:
    return np.diff(p.indptr)


class _Propagation:
    def __init__(self, graph, wrt, output, constants, max_nnz, curvature: bool, known: dict | None = None):
        """``output``: a node, or a list of them (a loop body's outputs); ``known``: values of
        integer nodes by id, known from outside (a loop body's captured index arrays)."""
        outputs = output if isinstance(output, list) else [output]
        self.graph = graph
        self.output = outputs[0]
        self.outputs = outputs
        self.keep = {o.id for o in outputs}  # patterns never dropped
        self.constants = constants
        self.max_nnz = max_nnz
        self.curvature = curvature
        self.n = sum(x.size for x in wrt)
        self.nodes = graph.live_nodes(outputs)
        self.pattern: dict[int, sp.csr_matrix] = {}
        offset = 0
        for x in wrt:  # an integer wrt (a loop body's index array) keeps its columns, which stay empty
            if x.dtype == FLOAT:
                self.pattern[x.id] = _selection(np.arange(offset, offset + x.size), self.n)
            offset += x.size
        self.local: dict[int, Local] = {}
        self.terms: dict[int, tuple] = {}  # node id -> (curvature, its pattern, D_k P_k and P_k per k)
        self._values: dict[int, np.ndarray | None] = dict(known or {})

    # ------------------------------------------------------------ first order

    def budget(self, nnz: int) -> None:
        if nnz > self.max_nnz:
            raise PatternTooLarge(f"a sparsity pattern would hold {nnz} entries (limit max_pattern_nnz="
                                  f"{self.max_nnz})")

    def forward(self) -> None:
        last_use = {}
        for pos, node in enumerate(self.nodes):
            for a in node.inputs:
                last_use[a.id] = pos
        for pos, node in enumerate(self.nodes):
            if node.prim in ("input", "const") or node.dtype != FLOAT:
                continue
            ks = [k for k, a in enumerate(node.inputs) if a.id in self.pattern]
            prim = ops.get(node.prim)
            if not ks or not prim.differentiable:
                continue
            structure, curvature = prim.sparsity or ("dense", ALL)
            if structure == "zero":
                continue
            local = STRUCTURES[structure](node, ks, self) or _dense(node, ks, self)
            inputs = {k: self.pattern[node.inputs[k].id] for k in ks}
            products = {k: self.compose(d, inputs[k]) for k, d in local.deps.items()}
            p = self.union(list(products.values()))
            self.pattern[node.id] = p
            self.local[node.id] = local
            if self.curvature and curvature:
                self.terms[node.id] = (curvature, p, products, inputs)
            for a in node.inputs:
                if last_use.get(a.id) == pos and a.id not in self.keep:
                    self.pattern.pop(a.id, None)

    def compose(self, d, p: sp.csr_matrix) -> sp.csr_matrix:
        if d is None:
            return p
        self.budget(int(_row_nnz(p)[d.indices].sum()))
        return (d @ p).tocsr()

    def union(self, parts: list) -> sp.csr_matrix:
        self.budget(sum(q.nnz for q in parts))
        out = parts[0]
        for q in parts[1:]:
            out = out + q
        return out.tocsr()

    def known(self, node) -> np.ndarray | None:
        """The value of an integer or boolean node computed from constants only (else None)."""
        stack = [node]
        while stack:
            n = stack[-1]
            if n.id in self._values:
                stack.pop()
                continue
            pending = [a for a in n.inputs if a.id not in self._values]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            self._values[n.id] = self._evaluate(n)
        return self._values[node.id]

    def _evaluate(self, n) -> np.ndarray | None:
        params = n.params
        if n.prim == "const":
            return np.asarray(params["value"])
        if n.prim == "input":
            return self.constants.get(params["name"]) if params["role"] == "const" else None
        if n.dtype == FLOAT:
            return None
        args = [self._values[a.id] for a in n.inputs]
        if any(v is None for v in args):
            return None
        with np.errstate(all="ignore"):
            return np.asarray(eval_primitive(ops.get(n.prim), args, params))

    def outputs_patterns(self) -> list[sp.csr_matrix | None]:
        """The pattern of each output (None: it depends on no wrt entry)."""
        self.forward()
        return [self.pattern.get(o.id) for o in self.outputs]

    def jacobian(self) -> sp.csr_matrix:
        self.forward()
        p = self.pattern.get(self.output.id)
        if p is None:
            return sp.csr_matrix((self.output.size, self.n), dtype=bool)
        return _canonical(p)

    # ------------------------------------------------------------ second order

    def hessian(self) -> sp.csr_matrix:
        self.forward()
        reach = self.reach()
        rows, cols = [], []
        total = 0
        for node_id, (curvature, p, products, inputs) in self.terms.items():
            r = reach.get(node_id)
            if r is None or not r.any():
                continue
            sel = np.flatnonzero(r)
            local = self.local[node_id]
            if curvature == ALL:
                factors = [(p[sel], p[sel])]
            else:
                factors = []
                for k, l in curvature:
                    if k not in products or l not in products:
                        continue
                    if (k, l) in local.pairs:
                        ia, ib = local.pairs[(k, l)]
                        factors.append((inputs[k][ia[sel].ravel()], inputs[l][ib[sel].ravel()]))
                    else:
                        factors.append((products[k][sel], products[l][sel]))
            for u, v in factors:
                total += int((_row_nnz(u) * _row_nnz(v)).sum())
                self.budget(total)
                block = (u.T @ v).tocoo()
                rows += [block.row, block.col]
                cols += [block.col, block.row]
        if not rows:
            return sp.csr_matrix((self.n, self.n), dtype=bool)
        r, c = np.concatenate(rows), np.concatenate(cols)
        # Repeated entries are summed, and a sum of booleans is their "or".
        return _canonical(sp.coo_matrix((np.ones(r.size, dtype=bool), (r, c)), shape=(self.n, self.n)).tocsr())

    def reach(self) -> dict[int, np.ndarray]:
        """Entries whose adjoint can be nonzero: those with a path of nonzero partials to the output."""
        reach = {self.output.id: np.ones(self.output.size, dtype=bool)}
        for node in reversed(self.nodes):
            r = reach.get(node.id)
            local = self.local.get(node.id)
            if r is None or local is None:
                continue
            for k, d in local.deps.items():
                a = node.inputs[k]
                ra = r if d is None else (d.T @ r.astype(np.float64)) > 0
                reach[a.id] = ra if a.id not in reach else reach[a.id] | ra
        return reach


def _canonical(p: sp.csr_matrix) -> sp.csr_matrix:
    p = sp.csr_matrix(p, dtype=bool)
    p.sum_duplicates()
    p.eliminate_zeros()
    p.sort_indices()
    return p
