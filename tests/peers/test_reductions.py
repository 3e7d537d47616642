"""Peer agreement for reductions, statistics, contractions and the newer elementwise functions
(see harness.py). Where the peer lacks a rule (autograd: cumprod, median, sort of a matrix), its
side is written with what it has: the same function, not a different one."""

import numpy as np
import pytest

from tests.peers.harness import Case, check

RNG = np.random.default_rng(11)
X = RNG.normal(size=(3, 4))
T = RNG.normal(size=(2, 3, 4))
V = RNG.normal(size=6)
U = RNG.normal(size=6)
B = RNG.normal(size=(4, 5))
S = RNG.normal(size=(4, 4))
P = RNG.normal(size=(2, 4, 3))
A3 = RNG.normal(size=(4, 3))
B3 = RNG.normal(size=(4, 3))
W = RNG.uniform(0.5, 2.0, size=4)
C = np.arange(12.0).reshape((3, 4))


def rows_sorted(np, x):
    """Sort along the last axis of a matrix, one row at a time (autograd sorts vectors only)."""
    return np.stack([np.sort(x[i]) for i in range(x.shape[0])])


def cumprod(np, x):
    return np.stack([np.prod(x[..., : i + 1], axis=-1) for i in range(x.shape[-1])], axis=-1)


CASES = [
    # arguments of the reductions
    Case("sum(sum(X, axis=1, keepdims=True) * X)",
         lambda np, X: np.sum(np.sum(X, axis=1, keepdims=True) * X), {"X": X}),
    Case("sum(sum(T, axis=(0, 2)) ** 2)", lambda np, T: np.sum(np.sum(T, axis=(0, 2)) ** 2), {"T": T}),
    Case("sum(sum(T, (0, 2), keepdims=True) * T)",
         lambda np, T: np.sum(np.sum(T, (0, 2), keepdims=True) * T), {"T": T}),
    Case("sum(mean(T, axis=(1, 2), keepdims=True) * T)",
         lambda np, T: np.sum(np.mean(T, axis=(1, 2), keepdims=True) * T), {"T": T}),
    Case("sum(mean(X, 0) ** 2)", lambda np, X: np.sum(np.mean(X, 0) ** 2), {"X": X}),
    Case("sum(prod(X, axis=0, keepdims=True) * X)",
         lambda np, X: np.sum(np.prod(X, axis=0, keepdims=True) * X), {"X": X}),
    Case("sum(max(X, axis=1, keepdims=True) * X)",
         lambda np, X: np.sum(np.max(X, axis=1, keepdims=True) * X), {"X": X}),
    Case("sum(min(T, axis=(0, 1)) ** 2)", lambda np, T: np.sum(np.min(T, axis=(0, 1)) ** 2), {"T": T}),
    Case("sum(logsumexp(X, axis=0, keepdims=True) * X)",
         lambda np, X: np.sum(np.log(np.sum(np.exp(X), axis=0, keepdims=True)) * X), {"X": X}),
    Case("sum(logsumexp(X, axis=1, b=W))", lambda np, X, W: np.sum(np.log(np.sum(W * np.exp(X), axis=1))),
         {"X": X, "W": W}),
    # statistics
    Case("sum(var(X, axis=1) * X[:, 0])", lambda np, X: np.sum(np.var(X, axis=1) * X[:, 0]), {"X": X}),
    Case("var(X, ddof=1)", lambda np, X: np.var(X, ddof=1), {"X": X}),
    Case("sum(var(T, axis=(0, 2), keepdims=True) * T)", lambda np, T: np.sum(np.var(T, axis=(0, 2), keepdims=True) * T),
         {"T": T}),
    Case("sum(std(X, axis=0, keepdims=True) * X)",
         lambda np, X: np.sum(np.std(X, axis=0, keepdims=True) * X), {"X": X}),
    Case("std(V, ddof=1)", lambda np, V: np.std(V, ddof=1), {"V": V}),
    Case("sum(average(X, axis=1, weights=W) ** 2)", lambda np, X, W: np.sum((np.sum(X * W, axis=1) / np.sum(W)) ** 2),
         {"X": X, "W": W}),
    Case("average(X, weights=X * X)", lambda np, X: np.sum(X * X * X) / np.sum(X * X), {"X": X}),
    Case("sum(ptp(X, axis=1) ** 2)", lambda np, X: np.sum((np.max(X, axis=1) - np.min(X, axis=1)) ** 2), {"X": X}),
    Case("sum(cumprod(X, axis=1) ** 2)", lambda np, X: np.sum(cumprod(np, X) ** 2), {"X": X}),
    Case("sum(cumprod(V) * V)", lambda np, V: np.sum(cumprod(np, V) * V), {"V": V}),
    Case("sum(diff(X, axis=0) ** 3)", lambda np, X: np.sum(np.diff(X, axis=0) ** 3), {"X": X}),
    Case("sum(diff(V, n=2) ** 3)", lambda np, V: np.sum(np.diff(V, n=2) ** 3), {"V": V}),
    Case("sum(sort(V) * arange(6))", lambda np, V: np.sum(np.sort(V) * np.arange(6)), {"V": V}),
    Case("sum(sort(X) * C)", lambda np, X, C: np.sum(rows_sorted(np, X) * C), {"X": X}, {"C": C}),
    Case("median(V) ** 2", lambda np, V: (0.5 * (np.sort(V)[2] + np.sort(V)[3])) ** 2, {"V": V}),
    Case("sum(median(X, axis=1) ** 2)",
         lambda np, X: np.sum((0.5 * (rows_sorted(np, X)[:, 1] + rows_sorted(np, X)[:, 2])) ** 2), {"X": X}),
    Case("sum(median(X, axis=0, keepdims=True) * X)",
         lambda np, X: np.sum(rows_sorted(np, X.T)[:, 1] * X), {"X": X}),
    Case("quantile(V, 0.3) ** 2", lambda np, V: (np.sort(V)[1] + 0.5 * (np.sort(V)[2] - np.sort(V)[1])) ** 2, {"V": V}),
    Case("sum(percentile(V, [10, 90]) ** 2)",
         lambda np, V: (np.sort(V)[0] + 0.5 * (np.sort(V)[1] - np.sort(V)[0])) ** 2
         + (np.sort(V)[5] - 0.5 * (np.sort(V)[5] - np.sort(V)[4])) ** 2, {"V": V}),
    # contractions
    Case("sum(einsum('ij,jk->ik', X, B) ** 2)", lambda np, X, B: np.sum(np.einsum('ij,jk->ik', X, B) ** 2),
         {"X": X, "B": B}),
    Case("einsum('ij,ij', X, X * X)", lambda np, X: np.einsum('ij,ij', X, X * X), {"X": X}),
    Case("sum(einsum('ii->i', S) ** 3)", lambda np, S: np.sum(np.diag(S) ** 3), {"S": S}),
    Case("einsum('ii', S) ** 2", lambda np, S: np.trace(S) ** 2, {"S": S}),
    Case("sum(sin(einsum('...ij,...jk->...ik', T, B)))",
         lambda np, T, B: np.sum(np.sin(np.einsum('...ij,...jk->...ik', T, B))),
         {"T": T, "B": B}),
    Case("sum(einsum('bij,bjk', T, P) ** 2)",
         lambda np, T, P: np.sum(np.einsum('bij,bjk', T, P) ** 2), {"T": T, "P": P}),
    Case("sum(einsum('ij,jk,kl->il', X, S, B) ** 2)",
         lambda np, X, S, B: np.sum(np.einsum('ij,jk,kl->il', X, S, B) ** 2),
         {"X": X, "S": S, "B": B}),
    Case("sum(einsum('i,j->ij', V[:3], U[:4]) * einsum('bij->ij', T))",
         lambda np, V, U, T: np.sum(np.einsum('i,j->ij', V[:3], U[:4]) * np.einsum('bij->ij', T)),
         {"V": V, "U": U, "T": T}),
    Case("sum(tensordot(T, P, ([0, 2], [0, 1])) ** 2)",
         lambda np, T, P: np.sum(np.tensordot(T, P, ([0, 2], [0, 1])) ** 2), {"T": T, "P": P}),
    Case("sum(tensordot(X, B, 1) ** 2)", lambda np, X, B: np.sum(np.tensordot(X, B, 1) ** 2), {"X": X, "B": B}),
    Case("tensordot(X, X * X)", lambda np, X: np.tensordot(X, X * X), {"X": X}),
    Case("sum(inner(T, X) ** 2)", lambda np, T, X: np.sum(np.inner(T, X) ** 2), {"T": T, "X": X}),
    Case("sum(kron(X, S) ** 2)", lambda np, X, S: np.sum(np.kron(X, S) ** 2), {"X": X, "S": S}),
    Case("sum(cross(A3, B3) ** 2)", lambda np, A3, B3: np.sum(np.cross(A3, B3) ** 2), {"A3": A3, "B3": B3}),
    Case("sum(cross(B3, A3, axisc=0) * B3.T)",
         lambda np, B3, A3: np.sum(np.cross(B3, A3, axisc=0) * B3.T), {"B3": B3, "A3": A3}),
    Case("sum(cross(Y, A3, axisa=0) ** 2)", lambda np, Y, A3: np.sum(np.cross(Y.T, A3) ** 2),
         {"Y": X[:, :4], "A3": A3}),
    # elementwise
    Case("sum(logaddexp(X, W) ** 2)", lambda np, X, W: np.sum(np.logaddexp(X, W) ** 2), {"X": X, "W": W}),
    Case("sum(logaddexp2(V, U) * V)", lambda np, V, U: np.sum(np.logaddexp2(V, U) * V), {"V": V, "U": U}),
    Case("sum(fmax(V, U) ** 2 + fmin(V, U) ** 3)",
         lambda np, V, U: np.sum(np.maximum(V, U) ** 2 + np.minimum(V, U) ** 3), {"V": V, "U": U}),
    Case("sum(sinc(V) * V)", lambda np, V: np.sum(np.sin(np.pi * V) / (np.pi * V) * V), {"V": V}),
    Case("sum(deg2rad(V) * radians(U) + rad2deg(V) * degrees(U))",
         lambda np, V, U: np.sum(np.deg2rad(V) * np.radians(U) + np.rad2deg(V) * np.degrees(U)), {"V": V, "U": U}),
    Case("sum(heaviside(V, U) * U + V)", lambda np, V, U: np.sum(np.where(V > 0, 1.0, 0.0) * U + V),
         {"V": V, "U": U}),
    Case("sum(nan_to_num(V) ** 2)", lambda np, V: np.sum(V ** 2), {"V": V}),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradient_matches_the_peer(case):
    check(case)
