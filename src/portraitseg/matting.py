"""Alpha-matte quality: SAD, MSE, gradient error and MAD against soft (alpha) ground truth.

The definitions and scales are those of Robust Video Matting's evaluation (Lin et al. 2021,
``evaluation/evaluation_metrics.py``), so numbers read like the ones matting papers report.
``pred`` and ``truth`` are float alpha mattes (H, W) in [0, 1]; ``ignore=True`` pixels count
nowhere (see docs/metrics.md for the full text):

* MAD  = mean |pred - truth| x 1e3
* MSE  = mean (pred - truth)^2 x 1e3
* SAD  = sum |pred - truth| / 1e3 ("in thousands": it grows with the image size)
* Grad = sum (|G * pred'| - |G * truth'|)^2 / 1e3, where ' is min-max normalisation of the
  matte to [0, 1], G the first-derivative-of-Gaussian filter pair (sigma 1.4, taps where the
  Gaussian exceeds 1e-2, each filter scaled to unit L2 norm) and |.| the gradient magnitude;
  image borders are replicated.

A perfect prediction scores 0 on each; lower is better. Over a set each metric is averaged
per image (as RVM averages per frame).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

GRAD_SIGMA = 1.4
GRAD_EPSILON = 1e-2
# (key, table label, unit) in the order tables show them.
ALPHA_METRICS: tuple[tuple[str, str, str], ...] = (
    ("sad", "SAD", "sum |error| / 1e3"),
    ("mse", "MSE", "mean squared error x 1e3"),
    ("grad", "Grad", "sum squared gradient-magnitude error / 1e3"),
    ("mad", "MAD", "mean |error| x 1e3"),
)


@dataclass(frozen=True)
class AlphaErrors:
    """One image's matting errors, in the units above (lower is better, 0 = perfect)."""

    sad: float
    mse: float
    grad: float
    mad: float

    @property
    def values(self) -> dict[str, float]:
        return asdict(self)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-(x**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))


def gradient_filters(sigma: float = GRAD_SIGMA,
                     epsilon: float = GRAD_EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """(filter_x, filter_y): Gaussian along one axis times its derivative along the other,
    cut where the Gaussian falls below ``epsilon`` and scaled to unit L2 norm (RVM's filters;
    9x9 for sigma 1.4, microseconds to build, so not cached)."""
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * epsilon))))
    taps = np.arange(-half, half + 1, dtype=np.float64)
    gauss = _gaussian(taps, sigma)
    dgauss = -taps * gauss / sigma**2
    fx = np.outer(gauss, dgauss)  # rows: Gaussian smoothing; columns: derivative (d/dx)
    fx /= np.sqrt((fx**2).sum())
    return fx, np.ascontiguousarray(fx.T)


def _minmax(alpha: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the matte's own range; a constant matte becomes 0 (as cv2.normalize
    with NORM_MINMAX does, which RVM uses)."""
    lo, hi = float(alpha.min()), float(alpha.max())
    if hi - lo <= np.finfo(np.float64).eps:
        return np.zeros(alpha.shape, np.float64)
    return (alpha.astype(np.float64) - lo) / (hi - lo)


def gradient_magnitude(alpha: np.ndarray, sigma: float = GRAD_SIGMA) -> np.ndarray:
    """|G * alpha| with replicated borders (float64)."""
    fx, fy = gradient_filters(sigma)
    a = np.ascontiguousarray(alpha, dtype=np.float64)
    gx = cv2.filter2D(a, -1, fx, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(a, -1, fy, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx**2 + gy**2)


def _check(pred: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None) -> np.ndarray:
    """Validate shapes and values; return the valid-pixel map."""
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"predicted alpha {pred.shape} and true alpha {truth.shape} "
                         "must be equal (H, W) shapes")
    for name, a in (("predicted", pred), ("true", truth)):
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{name} alpha must be float in [0, 1], got {a.dtype}")
        if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            raise ValueError(f"{name} alpha must hold finite values in [0, 1]")
    if ignore is None:
        return np.ones(truth.shape, bool)
    if ignore.shape != truth.shape:
        raise ValueError(f"ignore map {ignore.shape} does not match alpha {truth.shape}")
    return ~ignore.astype(bool)


def alpha_errors(pred: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> AlphaErrors:
    """SAD, MSE, Grad and MAD of one predicted matte against the true one (module docstring).

    Ignored pixels are left out of every sum and mean; the gradients are still computed on
    the whole matte (a filter needs its neighbours), only their errors there are not counted.
    With no valid pixel at all every error is 0: nothing was there to get wrong.
    """
    valid = _check(pred, truth, ignore)
    n = int(np.count_nonzero(valid))
    if n == 0:
        return AlphaErrors(0.0, 0.0, 0.0, 0.0)
    diff = pred.astype(np.float64)[valid] - truth.astype(np.float64)[valid]
    abs_sum = float(np.abs(diff).sum())
    grad_diff = gradient_magnitude(_minmax(pred)) - gradient_magnitude(_minmax(truth))
    return AlphaErrors(
        sad=abs_sum / 1e3,
        mse=float((diff**2).sum()) / n * 1e3,
        grad=float((grad_diff[valid] ** 2).sum()) / 1e3,
        mad=abs_sum / n * 1e3,
    )


def mean_errors(per_image: list[AlphaErrors]) -> dict[str, float]:
    """Each metric averaged over images (NaN when there are none)."""
    if not per_image:
        return {key: float("nan") for key, _, _ in ALPHA_METRICS}
    return {key: float(np.mean([getattr(e, key) for e in per_image])) for key, _, _ in ALPHA_METRICS}
