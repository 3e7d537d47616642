"""Graph colouring for compressed derivatives, and the matching decompression.

Gebremedhin, Manne, Pothen (2005), "What color is your Jacobian? Graph coloring
for computing derivatives", SIAM Review 47(4). Colours are 0, 1, 2, ...; the
seed matrix of a colouring is S[c, j] = [colour(j) = c].

Jacobians (Curtis, Powell, Reid). Columns j and k are *structurally
orthogonal* when no row of the pattern has entries in both. Give such columns
one colour (a distance-1 colouring of the column intersection graph PᵀP) and
one JVP per colour gives B = J Sᵀ with

    J[r, j] = B[r, colour(j)]        for every (r, j) in the pattern.

Row colouring is the same on Jᵀ: one VJP per colour of the rows, and
J[r, j] = B[colour(r), j].

Hessians (star colouring). For a symmetric H, a *star colouring* of the
adjacency graph of its pattern (off-diagonal entries) is a distance-1
colouring in which every path on four vertices uses at least three colours.
With one HVP per colour, B = H Sᵀ, every entry is read directly:
H[i, i] = B[i, colour(i)], and for i ≠ j

    H[i, j] = B[i, colour(j)]   if j is the only neighbour of i with colour(j),
              B[j, colour(i)]   otherwise,

because in a star colouring one of the two always holds (if i had another
neighbour k with colour(j) and j another neighbour l with colour(i), the path
k-i-j-l would use two colours). Symmetry is exploited, so a star colouring
needs far fewer colours than a distance-1 colouring of H's columns on, e.g.,
arrowhead patterns (2 instead of n).

The greedy algorithms take vertices largest degree first.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from derivd.errors import ShapeError, ValidationFailed


def _adjacency(graph: sp.spmatrix) -> tuple[list[int], list[int]]:
    """CSR of a square boolean matrix without its diagonal, as Python lists for the greedy loops."""
    g = sp.csr_matrix(graph, dtype=bool)
    g.setdiag(False)
    g.eliminate_zeros()
    return g.indptr.tolist(), g.indices.tolist()


def _largest_first(ptr: list[int]) -> list[int]:
    degree = np.diff(np.asarray(ptr))
    return np.argsort(-degree, kind="stable").tolist()


def greedy_coloring(graph: sp.spmatrix) -> np.ndarray:
    """Distance-1 colouring of an undirected graph (adjacency matrix): smallest colour no neighbour has."""
    ptr, adj = _adjacency(graph)
    n = len(ptr) - 1
    color = [-1] * n
    mark = [-1] * (n + 1)
    for v in _largest_first(ptr):
        for w in adj[ptr[v]:ptr[v + 1]]:
            c = color[w]
            if c >= 0:
                mark[c] = v
        c = 0
        while mark[c] == v:
            c += 1
        color[v] = c
    return np.asarray(color, dtype=np.int64)


def column_coloring(pattern: sp.spmatrix) -> np.ndarray:
    """Structurally orthogonal column groups of an (m × n) pattern: a colouring of PᵀP."""
    p = sp.csr_matrix(pattern, dtype=bool)
    return greedy_coloring((p.T @ p).tocsr())


def row_coloring(pattern: sp.spmatrix) -> np.ndarray:
    """Structurally orthogonal row groups: the column colouring of Pᵀ."""
    return column_coloring(sp.csr_matrix(pattern, dtype=bool).T)


def color_columns(rows, cols, shape) -> np.ndarray:
    """Column colouring of a pattern given in COO form (rows, cols, shape): one colour per column."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    m, n = int(shape[0]), int(shape[1])
    if rows.shape != cols.shape or rows.ndim != 1:
        raise ShapeError("pattern rows and cols must be flat arrays of one length")
    if rows.size and (rows.min() < 0 or rows.max() >= m or cols.min() < 0 or cols.max() >= n):
        raise ValidationFailed(f"sparsity pattern has an entry outside the shape {[m, n]}")
    return column_coloring(sp.csr_matrix((np.ones(rows.size, dtype=bool), (rows, cols)), shape=(m, n)))


def star_coloring(pattern: sp.spmatrix) -> np.ndarray:
    """Greedy star colouring of a symmetric (n × n) pattern (GMP 2005, Algorithm 4.1).

    Vertex v may not take the colour of a coloured neighbour w; nor, through an
    uncoloured neighbour w, the colour of any coloured neighbour x of w (so two
    vertices sharing an uncoloured neighbour differ); nor, through a coloured
    neighbour w, the colour of a neighbour x of w that has another neighbour
    coloured like w (that would make the two-coloured path v-w-x-y).

    The sets the rule reads are kept up to date as colours are given, so each
    vertex costs the sizes of its neighbours' sets instead of a walk over
    three-edge paths: ``seen[x]`` is the colours of x's coloured neighbours,
    ``count[x][c]`` how many have colour c, and ``risky[w]`` (w coloured) the
    colours of the coloured neighbours x of w with ``count[x][colour(w)] >= 2``.
    """
    p = sp.csr_matrix(pattern, dtype=bool)
    ptr, adj = _adjacency(p + p.T)
    n = len(ptr) - 1
    color = [-1] * n
    seen: list[set] = [set() for _ in range(n)]
    count: list[dict] = [{} for _ in range(n)]
    risky: list[set] = [set() for _ in range(n)]
    for v in _largest_first(ptr):
        nbrs = adj[ptr[v]:ptr[v + 1]]
        forbidden = set()
        for w in nbrs:
            cw = color[w]
            if cw < 0:
                forbidden |= seen[w]
            else:
                forbidden.add(cw)
                forbidden |= risky[w]
        c = 0
        while c in forbidden:
            c += 1
        color[v] = c
        for x in nbrs:
            seen[x].add(c)
            k = count[x].get(c, 0) + 1
            count[x][c] = k
            if k == 2 and color[x] >= 0:  # x now has two neighbours coloured c
                for w in adj[ptr[x]:ptr[x + 1]]:
                    if color[w] == c:
                        risky[w].add(color[x])
        for w in nbrs:  # v is now a coloured neighbour of w
            cw = color[w]
            if cw >= 0 and count[v].get(cw, 0) >= 2:
                risky[w].add(c)
        risky[v] = {color[x] for x in nbrs if color[x] >= 0 and count[x].get(c, 0) >= 2}
    return np.asarray(color, dtype=np.int64)


def seeds(colors: np.ndarray) -> np.ndarray:
    """The (c × n) seed matrix: row c is the indicator of the columns of colour c."""
    colors = np.asarray(colors, dtype=np.int64)
    s = np.zeros((int(colors.max()) + 1 if colors.size else 0, colors.size))
    s[colors, np.arange(colors.size)] = 1.0
    return s


def decompress_columns(rows: np.ndarray, cols: np.ndarray, colors: np.ndarray, compressed: np.ndarray) -> np.ndarray:
    """Entries J[rows, cols] from B = J Sᵀ, (m × c), of a column colouring."""
    return compressed[rows, colors[cols]]


def decompress_rows(rows: np.ndarray, cols: np.ndarray, colors: np.ndarray, compressed: np.ndarray) -> np.ndarray:
    """Entries J[rows, cols] from B = S J, (c × n), of a row colouring."""
    return compressed[colors[rows], cols]


def star_sources(rows: np.ndarray, cols: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Where each entry H[rows, cols] of a symmetric pattern is read in B = H Sᵀ (n × c) of a star
    colouring, as flat indices into B (C order): they depend on the pattern and the colouring only,
    so a plan computes them once and each Hessian is ``B.reshape(-1)[sources]``."""
    ncolors = int(colors.max()) + 1 if colors.size else 1
    source = rows * ncolors + colors[rows]  # the diagonal: H[i, i] is B[i, colour(i)]
    off = rows != cols
    i, j = rows[off], cols[off]
    # (i, colour) keys of the off-diagonal entries: their multiplicity is how many
    # neighbours of i have that colour
    keys = np.sort(i * ncolors + colors[j])

    def neighbours_colored(vertex, colour):
        q = vertex * ncolors + colour
        return np.searchsorted(keys, q, side="right") - np.searchsorted(keys, q, side="left")

    direct = neighbours_colored(i, colors[j]) == 1
    if not (neighbours_colored(j[~direct], colors[i[~direct]]) == 1).all():
        raise AssertionError("not a star colouring: an entry can be read from neither side")
    source[off] = np.where(direct, i * ncolors + colors[j], j * ncolors + colors[i])
    return source
