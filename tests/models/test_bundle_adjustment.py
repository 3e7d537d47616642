"""Bundle-adjustment reprojection residuals (ADBench's camera model) in the DSL, with gathers.

A camera is 11 numbers: a rotation vector r (Rodrigues), a centre c, a focal
length f, a principal point (u0, v0) and radial distortion (k1, k2). Observation
i sees point obs[i, 1] from camera obs[i, 0]: the residual is

    w_i (f · distort(proj(R (X - c))) + (u0, v0) - feature_i),   and 1 - w_i²,

with proj(p) = p[:2] / p[2] and distort(q) = q (1 + k1 |q|² + k2 |q|⁴). The
observation index arrays turn into gathers (a camera and a point are seen many
times, so their derivatives accumulate by scatter-add). The reference is a
separate numpy implementation that rotates with scipy's rotation *matrix*, and
its Jacobian 8th-order finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tests.dsl.support import assert_close, call
from tests.references import fd_jacobian

BA = """
def cross(a, b): return stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1],
                               a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                               a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], axis=1)
def dot3(a, b): return reshape(sum(a * b, axis=1), (-1, 1))
C = cams[obs[:, 0]]
P = X[obs[:, 1]] - C[:, 3:6]
r = C[:, 0:3]
theta = reshape(norm(r, axis=1), (-1, 1))
k = r / where(theta > 0, theta, 1)
Pr = P * cos(theta) + cross(k, P) * sin(theta) + k * dot3(k, P) * (1 - cos(theta))
q = Pr[:, 0:2] / Pr[:, 2:3]
rsq = dot3(q, q)
distorted = q * (1 + C[:, 9:10] * rsq + C[:, 10:11] * rsq ** 2)
proj = distorted * C[:, 6:7] + C[:, 7:9]
[reshape(w, (-1, 1)) * (proj - feats), 1 - w ** 2]
"""


def reference_residuals(cams, X, w, obs, feats):
    """The same residuals with rotation matrices (scipy) and plain loops."""
    err = []
    for i, (ci, pi) in enumerate(obs):
        cam = cams[ci]
        p = Rotation.from_rotvec(cam[0:3]).as_matrix() @ (X[pi] - cam[3:6])
        q = p[:2] / p[2]
        rsq = q @ q
        proj = cam[6] * q * (1 + cam[9] * rsq + cam[10] * rsq**2) + cam[7:9]
        err.append(w[i] * (proj - feats[i]))
    return np.concatenate([np.reshape(err, -1), 1 - w**2])


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(11)
    n_cams, n_pts, n_obs = 3, 6, 14
    cams = np.concatenate([rng.normal(size=(n_cams, 3)) * 0.3, rng.normal(size=(n_cams, 3)) * 0.5 - [0, 0, 5],
                           rng.uniform(0.8, 1.2, (n_cams, 1)), rng.normal(size=(n_cams, 2)) * 0.1,
                           rng.normal(size=(n_cams, 2)) * 0.05], axis=1)
    X = rng.normal(size=(n_pts, 3))
    obs = np.stack([rng.integers(0, n_cams, n_obs), rng.integers(0, n_pts, n_obs)], axis=1)
    obs[:n_pts, 1] = np.arange(n_pts)  # every point seen, several more than once
    at = {"cams": cams, "X": X, "w": rng.uniform(0.5, 1.5, n_obs)}
    return at, {"obs": obs, "feats": rng.normal(size=(n_obs, 2)) * 0.2}


def test_ba_residuals_and_jacobian_against_finite_differences(problem):
    at, constants = problem
    want = reference_residuals(**at, **constants)
    fd = fd_jacobian(lambda **kw: reference_residuals(**kw, **constants), at)
    jacobians = {}
    for mode in ("forward", "reverse"):
        r = call("jacobian", BA, at, constants, mode=mode)
        assert_close(r["value"], want, 1e-12, "residuals")
        assert_close(r["jacobian"], fd, 1e-7, f"{mode} Jacobian vs finite differences of the numpy reference")
        jacobians[mode] = np.asarray(r["jacobian"])
    assert_close(jacobians["forward"], jacobians["reverse"], 1e-12, "forward vs reverse")
    sparse = call("jacobian", BA, at, constants, sparse=True)["jacobian"]
    dense = np.zeros(sparse["shape"])
    dense[np.asarray(sparse["rows"]), np.asarray(sparse["cols"])] = sparse["values"]
    assert_close(dense, jacobians["reverse"], 1e-12, "sparse Jacobian")
    # the structure of bundle adjustment: a reprojection row touches one camera and one point
    n_obs = len(constants["obs"])
    assert np.count_nonzero(np.abs(jacobians["reverse"][: 2 * n_obs]) > 0, axis=1).max() <= 11 + 3 + 1


def test_a_point_seen_by_several_cameras_accumulates_its_gradient(problem):
    """The vjp of a gather is a scatter-add: the gradient of Σ residual² for a point is the sum over
    every observation of it, equal to finite differences of the reference."""
    at, constants = problem
    loss = BA.rstrip().rsplit("\n", 1)[0] + "\nsum((reshape(w, (-1, 1)) * (proj - feats)) ** 2)"
    r = call("gradient", loss, at, constants)

    def ref(**kw):
        return np.sum(reference_residuals(**kw, **constants)[: 2 * len(constants["obs"])] ** 2)

    fd = fd_jacobian(ref, at)[0]
    got = np.concatenate([np.reshape(r["gradient"][k], -1) for k in at])
    assert_close(got, fd, 1e-7, "gradient of the squared reprojection error")
