"""Special functions the purchase models need, finite where scipy's are not.

:func:`hyp2f1` is scipy's Gauss hypergeometric function with :func:`hyp2f1_series` (the Gauss
series summed directly) wherever scipy returns NaN or inf; it never returns inf, and returns NaN
only where the series does not converge within its term budget. All arguments broadcast; results
are float64 arrays of at least one dimension.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import hyp2f1 as _scipy_hyp2f1

SERIES_MAX_TERMS = 50_000
"""Term budget of :func:`hyp2f1_series`; enough for z <= 0.999 at the parameters BG/NBD meets."""

SERIES_REL_TOL = 1e-17
"""The series stops once a term is below this share of the running sum."""


def hyp2f1_series(A: Any, B: Any, C: Any, z: Any) -> np.ndarray:
    """The Gauss series ``sum_k (A)_k (B)_k / ((C)_k k!) z^k``, vectorised, for 0 <= z < 1.

    NaN where it has not converged after :data:`SERIES_MAX_TERMS` terms or overflows."""
    a_, b_, c_, z_ = (np.ravel(v) for v in np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (A, B, C, z))))
    total = np.ones_like(a_)
    term = np.ones_like(a_)
    active = np.ones(a_.shape, dtype=bool)
    with np.errstate(all="ignore"):
        for k in range(SERIES_MAX_TERMS):
            term = np.where(active, term * (a_ + k) * (b_ + k) / ((c_ + k) * (k + 1)) * z_, 0.0)
            total = total + term
            active &= np.isfinite(total) & (np.abs(term) > SERIES_REL_TOL * np.abs(total))
            if not active.any():
                break
    active |= ~np.isfinite(total)
    return np.where(active, np.nan, total)


def hyp2f1(A: Any, B: Any, C: Any, z: Any) -> np.ndarray:
    """scipy's hyp2f1, with the Gauss series summed directly where scipy returns NaN or inf. scipy
    fails e.g. at 2F1(-2.5, 2; 1002.5; 0.96) (NaN) and 2F1(-2.5, 2; 102.5; 0.98) (inf, true ~0.98):
    the large-c regime of heavy buyers, where the series converges (0 <= z < 1)."""
    A, B, C, z = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (A, B, C, z)))
    with np.errstate(all="ignore"):
        h = np.array(_scipy_hyp2f1(A, B, C, z), dtype=np.float64, ndmin=1)
    bad = ~np.isfinite(h).ravel()
    if bad.any():
        flat = h.ravel().copy()
        flat[bad] = hyp2f1_series(*(v.ravel()[bad] for v in (A, B, C, z)))
        h = flat.reshape(h.shape)
    return h
