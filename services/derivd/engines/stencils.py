"""Finite-difference stencils: weights for any derivative order on any grid.

The bottom of the three finite-difference modules: weights and their error
terms, knowing no function; ``finite`` applies them to a batched callable,
``finite_answers`` to an endpoint's request.

A stencil for the q-th derivative on offsets s_0..s_{N-1} is a weight vector w
with

    f^(q)(x) ≈ D(h) = h^-q · Σ_j w_j f(x + s_j h).

Expanding f(x + s_j h) in Taylor series,

    D(h) = Σ_k  M_k · h^(k-q) f^(k)(x),     M_k = Σ_j w_j s_j^k / k!,

so D is exact on polynomials of degree ≤ N-1 when the moments satisfy the
(transposed) Vandermonde system M_k = δ_kq for k = 0..N-1. Its solution is
unique for distinct offsets. We compute it with Fornberg's recurrence
(Math. Comp. 51 (1988)): it builds the Lagrange-basis derivatives node by
node, needs no matrix solve and is exact when the offsets are Fractions (the
named families below) and numerically stable in floats (offsets that are only
approximately integral, such as the actual displacements of a rounded grid).

The first non-vanishing moment beyond the system, k* = min{k ≥ N : M_k ≠ 0},
fixes the accuracy order p = k* - q and the leading truncation error

    D(h) - f^(q)(x) = C · h^p · f^(p+q)(x) + O(h^(p+1)),     C = M_{k*}.

Central stencils are symmetric (w_{-s} = (-1)^q w_s), so every other moment
vanishes and they gain one order for free: on the 2r+1 points -r..r their
order is 2r + 2 - 2⌈q/2⌉ (even). The named families take the accuracy order p
the way FiniteDifferences.jl's ``central_fdm`` takes a grid size:

* ``central(p, q)``: offsets -r..r with r = ⌊(q-1)/2⌋ + p/2 (p even);
* ``forward(p, q)``: offsets 0..p+q-1;
* ``backward(p, q)``: offsets -(p+q-1)..0.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from math import factorial

import numpy as np

METHODS = ("central", "forward", "backward")


def fornberg(offsets, q: int) -> list:
    """Weights of the q-th derivative on ``offsets`` (exact in the offsets' field).

    Fornberg's recurrence, with the expansion point 0: ``c[m][j]`` is the weight
    of node j for the m-th derivative using the nodes seen so far. Works for
    Fractions (exact) and floats alike; needs len(offsets) > q and distinct
    offsets.
    """
    nodes = list(offsets)
    n = len(nodes)
    if q < 0 or n <= q:
        raise ValueError(f"derivative order {q} needs more than {n} offsets")
    if len(set(nodes)) != n:
        raise ValueError("stencil offsets must be distinct")
    one = nodes[0] ** 0  # 1 in the offsets' own field
    zero = one - one
    c = [[zero] * n for _ in range(q + 1)]
    c[0][0] = one
    c1 = one
    for i in range(1, n):
        top = min(i, q)
        c2 = one
        for j in range(i):
            c2 = c2 * (nodes[i] - nodes[j])
        # The new node's weights come from node i-1's before they are updated.
        for m in range(top, -1, -1):
            prev = c[m - 1][i - 1] if m > 0 else zero
            c[m][i] = c1 * (m * prev - nodes[i - 1] * c[m][i - 1]) / c2
        for j in range(i):
            c3 = nodes[i] - nodes[j]
            for m in range(top, -1, -1):
                prev = c[m - 1][j] if m > 0 else zero
                c[m][j] = (nodes[i] * c[m][j] - m * prev) / c3
        c1 = c2
    return c[q]


def coefficients(offsets, q: int) -> np.ndarray:
    """Float weights of the q-th derivative on arbitrary (float) offsets."""
    return np.array(fornberg([float(s) for s in offsets], q), dtype=np.float64)


@dataclass(frozen=True)
class Stencil:
    """Exact stencil: ``f^(q)(x) ≈ h^-q Σ weights[j] f(x + offsets[j] h)``."""

    offsets: tuple[Fraction, ...]
    weights: tuple[Fraction, ...]
    q: int

    def moment(self, k: int) -> Fraction:
        """M_k = Σ_j w_j s_j^k / k!, the coefficient of h^(k-q) f^(k) in D(h)."""
        return sum((w * s**k for w, s in zip(self.weights, self.offsets)), Fraction(0)) / factorial(k)

    @property
    def leading_error(self) -> tuple[int, Fraction]:
        """(p, C): D(h) - f^(q) = C h^p f^(p+q) + O(h^(p+1)).

        M_k = δ_kq up to the grid size, so the search starts just above q (zero
        weights dropped from the grid contribute to no moment).
        """
        k = self.q + 1
        while (m := self.moment(k)) == 0:
            k += 1
        return k - self.q, m

    @property
    def accuracy(self) -> int:
        return self.leading_error[0]


def stencil(offsets, q: int) -> Stencil:
    """The exact stencil of the q-th derivative on rational offsets, zero weights dropped."""
    nodes = [Fraction(s) for s in offsets]
    weights = fornberg(nodes, q)
    kept = [(s, w) for s, w in zip(nodes, weights) if w != 0]
    return Stencil(tuple(s for s, _ in kept), tuple(w for _, w in kept), q)


def family_offsets(method: str, p: int, q: int) -> list[int]:
    """Integer grid of the named family with accuracy order p for the q-th derivative."""
    if method not in METHODS:
        raise ValueError(f"unknown finite-difference method {method!r}; expected one of {METHODS}")
    if q < 1 or p < 1:
        raise ValueError("derivative order and accuracy order must be at least 1")
    if method == "central":
        if p % 2:
            raise ValueError(f"central differences have even accuracy orders, not {p}")
        r = (q - 1) // 2 + p // 2
        return list(range(-r, r + 1))
    if method == "forward":
        return list(range(0, p + q))
    return list(range(-(p + q - 1), 1))


@lru_cache(maxsize=None)
def family(method: str, p: int, q: int) -> Stencil:
    """Named stencil (``central``/``forward``/``backward``) of accuracy order p for f^(q)."""
    return stencil(family_offsets(method, p, q), q)


def central(p: int, q: int) -> Stencil:
    return family("central", p, q)


def forward(p: int, q: int) -> Stencil:
    return family("forward", p, q)


def backward(p: int, q: int) -> Stencil:
    return family("backward", p, q)
