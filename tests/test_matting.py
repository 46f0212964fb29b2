"""Matting errors (SAD, MSE, Grad, MAD) on hand-computed arrays."""

from __future__ import annotations

import numpy as np
import pytest

from portraitseg.matting import AlphaErrors, alpha_errors, gradient_filters, gradient_magnitude, mean_errors


def test_sad_mse_mad_by_hand() -> None:
    pred = np.array([[0.0, 0.5], [1.0, 1.0]], np.float32)
    truth = np.array([[0.0, 1.0], [0.5, 1.0]], np.float32)
    # Errors 0, -0.5, +0.5, 0: |e| sums to 1.0 and e^2 to 0.5 over 4 pixels.
    e = alpha_errors(pred, truth)
    assert e.sad == pytest.approx(1.0 / 1e3)
    assert e.mad == pytest.approx(1.0 / 4 * 1e3)
    assert e.mse == pytest.approx(0.5 / 4 * 1e3)
    # Ignoring the top-right pixel leaves |e| = 0.5 and e^2 = 0.25 over 3 pixels.
    ignore = np.array([[False, True], [False, False]])
    e = alpha_errors(pred, truth, ignore)
    assert (e.sad, e.mad, e.mse) == pytest.approx((0.5 / 1e3, 0.5 / 3 * 1e3, 0.25 / 3 * 1e3))


def test_perfect_prediction_scores_zero_and_errors_are_positive_otherwise() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((40, 30)).astype(np.float32)
    assert alpha_errors(truth, truth.copy()) == AlphaErrors(0.0, 0.0, 0.0, 0.0)
    worse = alpha_errors(np.clip(truth + 0.1, 0, 1), truth)
    assert worse.sad > 0 and worse.mse > 0 and worse.mad > 0 and worse.grad > 0
    # SAD is the same sum as MAD, in other units: SAD = MAD x pixels / 1e6.
    assert worse.sad == pytest.approx(worse.mad * truth.size / 1e6)


def test_gradient_filters_are_rvms() -> None:
    fx, fy = gradient_filters()
    # sigma 1.4, cut at 1e-2: half-size ceil(1.4 * sqrt(-2 ln(sqrt(2 pi) 1.4 0.01))) = ceil(3.62) = 4.
    assert fx.shape == (9, 9) and np.array_equal(fy, fx.T)
    assert (fx**2).sum() == pytest.approx(1.0)
    assert fx.sum(axis=1) == pytest.approx(np.zeros(9), abs=1e-12)  # a derivative: flat -> 0
    assert fx[4, 5] < 0 < fx[4, 3]  # -x * gaussian along x


def test_gradient_error_of_a_step_edge_by_hand() -> None:
    """Truth: a vertical 0 -> 1 step (column 10 of 20), prediction: empty. Grad is then the
    truth's own squared gradient magnitude summed, /1e3, which along a row is a 1-D sum."""
    h, w, c = 6, 20, 10
    truth = np.zeros((h, w), np.float32)
    truth[:, c:] = 1.0
    taps = np.arange(-4, 5, dtype=np.float64)
    gauss = np.exp(-(taps**2) / (2 * 1.4**2)) / (1.4 * np.sqrt(2 * np.pi))
    dgauss = -taps * gauss / 1.4**2
    norm = np.sqrt((gauss**2).sum() * (dgauss**2).sum())  # of the 2-D filter = outer product
    # Correlation at column x: Gaussian rows sum to gauss.sum() (the image is constant along y),
    # derivative taps j with x + j >= c see the 1s (replicated borders just continue the step).
    response = [gauss.sum() * dgauss[taps >= c - x].sum() / norm for x in range(w)]
    expected = h * float(np.sum(np.square(response))) / 1e3
    e = alpha_errors(np.zeros_like(truth), truth)
    assert e.grad == pytest.approx(expected, rel=1e-9)
    assert e.grad > 0
    # The y-derivative of a vertical edge is 0: all the magnitude comes from x.
    assert gradient_magnitude(truth)[:, c] == pytest.approx(np.full(h, abs(response[c])))


def test_gradient_error_uses_min_max_normalised_mattes() -> None:
    """RVM normalises each matte to its own [0, 1] range first: a half-strength copy of the
    truth has the same shape, hence no gradient error (but MAD sees the difference)."""
    truth = np.zeros((16, 16), np.float32)
    truth[4:12, 4:12] = 1.0
    e = alpha_errors(truth * 0.5, truth)
    assert e.grad == pytest.approx(0.0, abs=1e-12)
    assert e.mad == pytest.approx(0.5 * 64 / 256 * 1e3)
    # A constant matte normalises to 0 (as cv2.normalize does), so no division by zero.
    assert alpha_errors(np.full((8, 8), 0.3, np.float32), np.zeros((8, 8), np.float32)).grad == 0.0


def test_all_ignored_scores_zero_and_bad_input_raises() -> None:
    a = np.ones((4, 4), np.float32)
    assert alpha_errors(a, np.zeros_like(a), np.ones((4, 4), bool)) == AlphaErrors(0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="must be equal"):
        alpha_errors(a, np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        alpha_errors(a * 255, a)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        alpha_errors(np.full((4, 4), np.nan, np.float32), a)
    with pytest.raises(ValueError, match="float"):
        alpha_errors(a.astype(np.uint8), a)
    with pytest.raises(ValueError, match="ignore map"):
        alpha_errors(a, a, np.zeros((2, 2), bool))


def test_mean_errors_averages_per_image() -> None:
    means = mean_errors([AlphaErrors(1.0, 2.0, 3.0, 4.0), AlphaErrors(3.0, 4.0, 5.0, 6.0)])
    assert means == {"sad": 2.0, "mse": 3.0, "grad": 4.0, "mad": 5.0}
    assert all(np.isnan(v) for v in mean_errors([]).values())
