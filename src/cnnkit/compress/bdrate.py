"""Bjøntegaard delta rate and PSNR (G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves",
VCEG-M33, 2001): the average gap between two rate-distortion curves over the range where both were measured.

BD-rate: log(rate) is fitted as a cubic polynomial of PSNR for each curve; the mean difference of the two fits
over the shared PSNR interval, d, gives the rate change at equal quality, exp(d) - 1 (here in per cent; negative:
the tested codec needs fewer bits). BD-PSNR: PSNR as a cubic of log(rate), mean difference over the shared
log-rate interval, in dB. A cubic needs four points per curve; with three the fit is quadratic (exact through
them), and fewer are refused.
"""

from __future__ import annotations

import numpy as np

from ..errors import CnnkitError


def _mean_gap(x_anchor, y_anchor, x_test, y_test) -> float:
    """Mean of fit_test(x) - fit_anchor(x) over the shared x interval, each fit a polynomial y(x) of degree
    min(3, points - 1)."""
    x_anchor, y_anchor, x_test, y_test = (np.asarray(v, dtype=np.float64) for v in (x_anchor, y_anchor, x_test,
                                                                                        y_test))
    for name, x, y in (("anchor", x_anchor, y_anchor), ("tested", x_test, y_test)):
        if len(x) != len(y) or len(x) < 3:
            raise CnnkitError(f"the {name} curve needs at least 3 (rate, PSNR) points of matching lengths, got "
                              f"{len(x)} and {len(y)}")
        if not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)):
            raise CnnkitError(f"the {name} curve holds a non-finite value")
    low, high = max(x_anchor.min(), x_test.min()), min(x_anchor.max(), x_test.max())
    if not high > low:
        raise CnnkitError(f"the two curves do not overlap (anchor {x_anchor.min():.4g}..{x_anchor.max():.4g}, tested "
                          f"{x_test.min():.4g}..{x_test.max():.4g}): the Bjøntegaard delta is undefined")
    areas = []
    for x, y in ((x_anchor, y_anchor), (x_test, y_test)):
        integral = np.polyint(np.polyfit(x, y, min(3, len(x) - 1)))
        areas.append(np.polyval(integral, high) - np.polyval(integral, low))
    return float((areas[1] - areas[0]) / (high - low))


def bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float:
    """Average rate difference (%) of the tested curve against the anchor at equal PSNR; negative saves bits."""
    if min(np.min(rate_anchor), np.min(rate_test)) <= 0:
        raise CnnkitError("rates must be positive (they are compared on a log scale)")
    gap = _mean_gap(psnr_anchor, np.log(rate_anchor), psnr_test, np.log(rate_test))
    return float((np.exp(gap) - 1) * 100)


def bd_psnr(rate_anchor, psnr_anchor, rate_test, psnr_test) -> float:
    """Average PSNR difference (dB) of the tested curve over the anchor at equal rate; positive is better."""
    if min(np.min(rate_anchor), np.min(rate_test)) <= 0:
        raise CnnkitError("rates must be positive (they are compared on a log scale)")
    return _mean_gap(np.log(rate_anchor), psnr_anchor, np.log(rate_test), psnr_test)
