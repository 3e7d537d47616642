"""softplus, written as max(x, 0) + log1p(e^-|x|): its values against mpmath's log(1 + e^x) from far
below to far above 0, its derivative against the logistic function, and inf/nan at the ends."""

from __future__ import annotations

import mpmath
import numpy as np

from derivd.config import Settings
from derivd.core import Request, Service

X = np.concatenate([np.linspace(-40.0, 40.0, 401), [-745.0, -700.0, -300.0, -1e-300, 0.0, 1e-300, 300.0, 700.0]])


def test_softplus_keeps_its_digits_everywhere_and_its_gradient_is_the_logistic_function():
    mpmath.mp.dps = 50
    want = np.array([float(mpmath.log1p(mpmath.exp(mpmath.mpf(float(x))))) for x in X])
    slope = np.array([float(1 / (1 + mpmath.exp(-mpmath.mpf(float(x))))) for x in X])
    service = Service(Settings(xla_tier="off"))
    req = Request(function={"dsl": "softplus(x)"}, at={"x": X}, wrt=["x"])
    (value,) = [service.compute("evaluate", req)[0]["value"]]
    np.testing.assert_allclose(value, want, rtol=4e-16, atol=1e-307)  # a subnormal may be flushed to 0
    req = Request(function={"dsl": "sum(softplus(x))"}, at={"x": X}, wrt=["x"])
    np.testing.assert_allclose(service.compute("gradient", req)[0]["gradient"]["x"], slope, rtol=4e-16,
                               atol=1e-307)


def test_softplus_of_infinities_and_nan():
    service = Service(Settings(xla_tier="off"))
    req = Request(function={"dsl": "softplus(x)"}, at={"x": np.array([np.inf, -np.inf, np.nan])}, wrt=["x"])
    value = np.asarray(service.compute("evaluate", req)[0]["value"])
    assert value[0] == np.inf and value[1] == 0.0 and np.isnan(value[2])
