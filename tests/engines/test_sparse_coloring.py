"""Colourings and their decompression (engines/coloring.py), against brute-force definitions.

* a column (row) colouring is valid when no two columns (rows) of one colour share a row (column);
* a star colouring is a distance-1 colouring in which every path on four vertices uses at
  least three colours: checked by enumerating all such paths;
* the incremental star colouring gives exactly the colours of a plain transcription of
  GMP 2005 Algorithm 4.1 (three nested neighbour loops);
* decompression recovers every entry of random matrices with the pattern, bit for bit
  (each entry is read from a sum holding only itself).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from derivd.engines import coloring
from derivd.errors import ValidationFailed


def random_pattern(seed: int, m: int, n: int, density: float) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(rng.random((m, n)) < density)


def random_symmetric(seed: int, n: int, density: float) -> sp.csr_matrix:
    p = random_pattern(seed, n, n, density)
    return sp.csr_matrix(((p + p.T) + sp.eye(n, dtype=bool)).astype(bool))


def tridiagonal(n: int) -> sp.csr_matrix:
    return sp.csr_matrix(sp.diags([np.ones(n - 1), np.ones(n), np.ones(n - 1)], [-1, 0, 1]).astype(bool))


def arrowhead(n: int) -> sp.csr_matrix:
    a = np.eye(n, dtype=bool)
    a[-1, :] = a[:, -1] = True
    return sp.csr_matrix(a)


def assert_structurally_orthogonal(p: sp.csr_matrix, colors: np.ndarray) -> None:
    coo = p.tocoo()
    pairs = set(zip(coo.row.tolist(), colors[coo.col].tolist()))
    assert len(pairs) == p.nnz, "two columns of one colour share a row"


def assert_star(p: sp.csr_matrix, colors: np.ndarray) -> None:
    g = p.tolil()
    g.setdiag(False)
    adj = [set(r) for r in g.rows]
    n = len(adj)
    for v in range(n):
        for w in adj[v]:
            assert colors[v] != colors[w], "adjacent vertices share a colour"
    for a in range(n):
        for b in adj[a]:
            for c in adj[b] - {a}:
                for d in adj[c] - {a, b}:
                    assert len({colors[a], colors[b], colors[c], colors[d]}) >= 3, (a, b, c, d)


def star_reference(p: sp.csr_matrix) -> np.ndarray:
    """GMP 2005 Algorithm 4.1, transcribed: the slow, obvious form."""
    g = sp.csr_matrix(p + p.T, dtype=bool).tolil()
    g.setdiag(False)
    adj = [list(r) for r in g.rows]
    order = np.argsort(-np.array([len(a) for a in adj]), kind="stable")
    color = [-1] * len(adj)
    for v in order:
        forbidden = set()
        for w in adj[v]:
            if color[w] >= 0:
                forbidden.add(color[w])
            for x in adj[w]:
                if x == v or color[x] < 0:
                    continue
                if color[w] < 0:
                    forbidden.add(color[x])
                elif any(y != w and color[y] == color[w] for y in adj[x]):
                    forbidden.add(color[x])
        c = 0
        while c in forbidden:
            c += 1
        color[v] = c
    return np.array(color)


patterns = st.builds(random_pattern, st.integers(0, 10**6), st.integers(1, 25), st.integers(1, 25),
                     st.sampled_from([0.05, 0.15, 0.4]))
symmetric = st.builds(random_symmetric, st.integers(0, 10**6), st.integers(1, 30), st.sampled_from([0.03, 0.08, 0.2]))


@settings(max_examples=30, deadline=None)
@given(patterns, st.integers(0, 10**6))
def test_column_and_row_colourings_are_valid_and_decompress(p, seed):
    rng = np.random.default_rng(seed)
    jac = sp.csr_matrix((rng.standard_normal(p.nnz), p.indices, p.indptr), shape=p.shape).toarray()
    rows, cols = p.nonzero()
    c = coloring.column_coloring(p)
    assert_structurally_orthogonal(p, c)
    np.testing.assert_array_equal(coloring.decompress_columns(rows, cols, c, jac @ coloring.seeds(c).T),
                                  jac[rows, cols])
    r = coloring.row_coloring(p)
    assert_structurally_orthogonal(sp.csr_matrix(p.T), r)
    np.testing.assert_array_equal(coloring.decompress_rows(rows, cols, r, coloring.seeds(r) @ jac),
                                  jac[rows, cols])
    # a colour count can never beat the longest row (its columns conflict pairwise)
    assert c.max() + 1 >= np.diff(p.indptr).max(initial=1)


@settings(max_examples=30, deadline=None)
@given(symmetric, st.integers(0, 10**6))
def test_star_colouring_is_a_star_colouring_and_decompresses(p, seed):
    colors = coloring.star_coloring(p)
    assert_star(p, colors)
    np.testing.assert_array_equal(colors, star_reference(p))
    rng = np.random.default_rng(seed)
    upper = sp.triu(sp.csr_matrix((rng.standard_normal(p.nnz), p.indices, p.indptr), shape=p.shape))
    h = (upper + sp.triu(upper, 1).T).toarray()
    rows, cols = p.nonzero()
    got = (h @ coloring.seeds(colors).T).reshape(-1)[coloring.star_sources(rows, cols, colors)]
    np.testing.assert_array_equal(got, h[rows, cols])


@pytest.mark.parametrize("n", [5, 200])
def test_known_colour_counts(n):
    assert coloring.star_coloring(tridiagonal(n)).max() + 1 == 3
    assert coloring.column_coloring(tridiagonal(n)).max() + 1 == 3  # distance-2 on a path
    assert coloring.star_coloring(arrowhead(n)).max() + 1 == 2  # the hub, then every leaf together
    assert coloring.column_coloring(arrowhead(n)).max() + 1 == n  # the dense row joins every column
    bidiagonal = sp.csr_matrix(sp.diags([np.ones(n), np.ones(n - 1)], [0, 1]).astype(bool))
    assert coloring.column_coloring(bidiagonal).max() + 1 == 2
    assert coloring.column_coloring(sp.eye(n, format="csr", dtype=bool)).max() + 1 == 1


def test_color_columns_coo_form_for_black_boxes():
    p = random_pattern(3, 12, 9, 0.2)
    rows, cols = p.nonzero()
    colors = coloring.color_columns(rows, cols, p.shape)
    assert_structurally_orthogonal(p, colors)
    with pytest.raises(ValidationFailed):
        coloring.color_columns([0, 12], [0, 1], (12, 9))


def test_star_brute_force_checker_rejects_a_bicoloured_path():
    path = tridiagonal(4)
    with pytest.raises(AssertionError):
        assert_star(path, np.array([0, 1, 0, 1]))
    assert_star(path, np.array([0, 1, 2, 0]))
