"""Bjøntegaard delta rate and PSNR (G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves",
VCEG-M33, 2001): the average gap between two rate-distortion curves over the range where both were measured.

BD-rate: log(rate) as a function of PSNR for each curve; the mean difference of the two over the shared PSNR
interval, d, gives the rate change at equal quality, exp(d) - 1 (here in per cent; negative: the tested codec
needs fewer bits). BD-PSNR: PSNR as a function of log(rate), mean difference over the shared log-rate interval,
in dB.

How the points become a function is the ``method``:

- ``"pchip"`` (the default): piecewise cubic Hermite interpolation through every point, shape-preserving, so the
  function never leaves the range of its neighbouring points. This is what the JCT-VC and JVET common test
  conditions' spreadsheets compute (JCTVC-L1100, JVET-T2010), and the ``bjontegaard`` package's ``"pchip"``,
  which the tests compare against.
- ``"cubic"``: Bjøntegaard's original, one cubic polynomial least-squares fitted to all the points (quadratic,
  exact, with three). On a curve that is not a gentle S - a flat, early-training codec's, whose PSNR barely rises
  over a tripling of the rate - the polynomial swings between the points and can give a BD-rate of the wrong sign:
  on cnnkit's 30-minute Kodak curves it said -75 % (fewer bits) for a codec 1.4 dB below JPEG at every rate,
  where piecewise interpolation says +11 %.

Both refuse curves with fewer than 3 points, non-finite values, no overlap, or PSNR that does not rise with the
rate; the piecewise one also refuses a curve whose PSNR (or rate) repeats, as it is then not a function of it.
"""

from __future__ import annotations

import numpy as np

from ..errors import CnnkitError

METHODS = ("pchip", "cubic")


def check_rises(name: str, x, y) -> None:
    """Refuse points whose second coordinate does not rise with the first (PSNR with rate, or rate with PSNR).

    More bits must buy more PSNR along a rate-distortion curve. Points that do not (models trained for different
    budgets, say) give an integral or an interpolated value with no meaning, and a figure that looks like one."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.any(np.diff(y[np.argsort(x, kind="stable")]) <= 0):
        raise CnnkitError(f"the {name} curve's PSNR does not rise with its rate at every point, so it is not one "
                          "rate-distortion curve (points from models trained for different budgets?); compare "
                          "curves measured alike")


def _checked(name: str, x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 3:
        raise CnnkitError(f"the {name} curve needs at least 3 (rate, PSNR) points of matching lengths, got "
                          f"{x.size} and {y.size}")
    if not np.all(np.isfinite(x)) or not np.all(np.isfinite(y)):
        raise CnnkitError(f"the {name} curve holds a non-finite value")
    check_rises(name, x, y)
    return x, y


def _integral(x: np.ndarray, y: np.ndarray, low: float, high: float, method: str, name: str) -> float:
    """The integral over [low, high] of the function through the points (x, y)."""
    if method == "cubic":
        antiderivative = np.polyint(np.polyfit(x, y, min(3, len(x) - 1)))
        return float(np.polyval(antiderivative, high) - np.polyval(antiderivative, low))
    from scipy.interpolate import PchipInterpolator

    order = np.argsort(x, kind="stable")
    if np.any(np.diff(x[order]) <= 0):
        raise CnnkitError(f"the {name} curve repeats a value ({np.sort(x)}), so it is not a function of it; "
                          "drop or merge the repeated points")
    return float(PchipInterpolator(x[order], y[order]).integrate(low, high))


def overlap(x_anchor, x_test) -> tuple[float, float]:
    """The shared interval of two curves' x values (PSNR for BD-rate, log rate for BD-PSNR)."""
    low, high = max(np.min(x_anchor), np.min(x_test)), min(np.max(x_anchor), np.max(x_test))
    if not high > low:
        raise CnnkitError(f"the two curves do not overlap (anchor {np.min(x_anchor):.4g}..{np.max(x_anchor):.4g}, "
                          f"tested {np.min(x_test):.4g}..{np.max(x_test):.4g}): the Bjøntegaard delta is undefined")
    return float(low), float(high)


def _mean_gap(x_anchor, y_anchor, x_test, y_test, method: str) -> float:
    """Mean of f_test(x) - f_anchor(x) over the shared x interval."""
    if method not in METHODS:
        raise CnnkitError(f"unknown Bjøntegaard method {method!r}; choose one of {', '.join(METHODS)}")
    x_anchor, y_anchor = _checked("anchor", x_anchor, y_anchor)
    x_test, y_test = _checked("tested", x_test, y_test)
    low, high = overlap(x_anchor, x_test)
    anchor = _integral(x_anchor, y_anchor, low, high, method, "anchor")
    tested = _integral(x_test, y_test, low, high, method, "tested")
    return (tested - anchor) / (high - low)


def _positive(*rates) -> None:
    if min(np.min(rate) for rate in rates) <= 0:
        raise CnnkitError("rates must be positive (they are compared on a log scale)")


def bd_rate(rate_anchor, psnr_anchor, rate_test, psnr_test, method: str = "pchip") -> float:
    """Average rate difference (%) of the tested curve against the anchor at equal PSNR; negative saves bits."""
    _positive(rate_anchor, rate_test)
    gap = _mean_gap(psnr_anchor, np.log(rate_anchor), psnr_test, np.log(rate_test), method)
    return float((np.exp(gap) - 1) * 100)


def bd_psnr(rate_anchor, psnr_anchor, rate_test, psnr_test, method: str = "pchip") -> float:
    """Average PSNR difference (dB) of the tested curve over the anchor at equal rate; positive is better."""
    _positive(rate_anchor, rate_test)
    return _mean_gap(np.log(rate_anchor), psnr_anchor, np.log(rate_test), psnr_test, method)
