"""Segmentation metrics for binary person masks, with an ``ignore`` map.

Definitions (pred, truth and ignore are boolean (H, W) arrays; ignore=True pixels count nowhere):

* confusion counts over valid pixels: ``tp`` person predicted as person, ``fp`` background
  predicted as person, ``fn`` person predicted as background, ``tn`` background as background;
* pixel accuracy ``(tp + tn) / (tp + fp + fn + tn)``;
* person IoU ``tp / (tp + fp + fn)``; background IoU ``tn / (tn + fn + fp)``;
  mIoU = mean of the two;
* boundary F1, see :func:`boundary_counts`.

A ratio whose denominator is zero (e.g. person IoU on an image with no person that the model
also leaves empty) is 1.0: nothing was there to get wrong.

Two aggregations over a set (:class:`Aggregate`): *over all pixels* sums the counts of every
image and then takes ratios (the headline numbers: big images and big people weigh more), and
*per image* averages each image's own ratios (every image weighs the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

BOUNDARY_LONG_SIDE = 512  # boundary F1 is measured at this resolution, so it is size-independent
BOUNDARY_TOLERANCE_PX = 3  # a boundary pixel matches if the other boundary is within this distance
METRIC_NAMES = ("pixel_accuracy", "person_iou", "background_iou", "miou", "boundary_f1")


def _ratio(num: int, den: int) -> float:
    return float(num) / float(den) if den > 0 else 1.0


@dataclass
class Confusion:
    """Pixel confusion counts for the person class (background is the complement)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def pixel_accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.total)

    @property
    def person_iou(self) -> float:
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def background_iou(self) -> float:
        return _ratio(self.tn, self.tn + self.fn + self.fp)

    @property
    def miou(self) -> float:
        return 0.5 * (self.person_iou + self.background_iou)


def batch_confusion(pred, truth, valid) -> Confusion:
    """Confusion counts of boolean arrays of any (equal) shape, e.g. a whole (N,1,H,W) batch.

    Array-API duck typing (``&``, ``~``, ``.sum()``): works on NumPy arrays and on torch tensors
    without copying them off their device -- training validates on the GPU with it. ``valid``
    is the complement of the ignore map.
    """
    tp = int((pred & truth & valid).sum())
    fp = int((pred & ~truth & valid).sum())
    fn = int((~pred & truth & valid).sum())
    tn = int(valid.sum()) - tp - fp - fn
    return Confusion(tp, fp, fn, tn)


@dataclass
class BoundaryCounts:
    """Boundary matches: predicted boundary pixels near a true one (precision side) and true
    boundary pixels near a predicted one (recall side)."""

    pred_matched: int = 0
    pred_total: int = 0
    true_matched: int = 0
    true_total: int = 0

    def __add__(self, other: BoundaryCounts) -> BoundaryCounts:
        return BoundaryCounts(
            self.pred_matched + other.pred_matched,
            self.pred_total + other.pred_total,
            self.true_matched + other.true_matched,
            self.true_total + other.true_total,
        )

    @property
    def precision(self) -> float:
        return _ratio(self.pred_matched, self.pred_total)

    @property
    def recall(self) -> float:
        return _ratio(self.true_matched, self.true_total)

    @property
    def f1(self) -> float:
        if self.pred_total == 0 and self.true_total == 0:
            return 1.0  # no contour in either mask: nothing to get wrong
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _check_masks(pred: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None) -> np.ndarray:
    """Validate shapes; return the valid-pixel map."""
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} must be equal (H, W) shapes")
    if ignore is None:
        return np.ones(truth.shape, dtype=bool)
    if ignore.shape != truth.shape:
        raise ValueError(f"ignore map {ignore.shape} does not match truth {truth.shape}")
    return ~ignore.astype(bool)


def confusion(pred: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> Confusion:
    """Confusion counts of boolean person masks, skipping ``ignore`` pixels."""
    valid = _check_masks(pred, truth, ignore)
    pred, truth = pred.astype(bool), truth.astype(bool)
    tp = int(np.count_nonzero(pred & truth & valid))
    fp = int(np.count_nonzero(pred & ~truth & valid))
    fn = int(np.count_nonzero(~pred & truth & valid))
    tn = int(np.count_nonzero(valid)) - tp - fp - fn
    return Confusion(tp, fp, fn, tn)


def mask_iou(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """Person IoU of one image (the one IoU of the package: evaluation, export verification,
    temporal smoothing). Boolean masks are used as they are; float maps are thresholded,
    ``pred > threshold`` and ``truth > 0.5``. Two empty masks agree perfectly (1.0)."""
    p = pred if pred.dtype == bool else pred > threshold
    t = truth if truth.dtype == bool else truth > 0.5
    return confusion(p, t).person_iou


def _resize_long_side(mask: np.ndarray, long_side: int) -> np.ndarray:
    h, w = mask.shape
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """Person pixels with a background pixel in their 3x3 neighbourhood (mask XOR eroded mask).

    Pixels outside the image do not count as background (OpenCV's erosion border), so a
    person cut by the frame has no contour along the frame edge.
    """
    m = mask.astype(np.uint8)
    eroded = cv2.erode(m, np.ones((3, 3), np.uint8))
    return (m ^ eroded).astype(bool)


def boundary_counts(
    pred: np.ndarray,
    truth: np.ndarray,
    ignore: np.ndarray | None = None,
    long_side: int = BOUNDARY_LONG_SIDE,
    tolerance: int = BOUNDARY_TOLERANCE_PX,
) -> BoundaryCounts:
    """Boundary F1 counts (after Perazzi et al., DAVIS 2016), defined as follows.

    1. ``pred``, ``truth`` and ``ignore`` are resized (nearest) so the long side is
       ``long_side`` (512) px, which makes the pixel tolerance mean the same on every image.
    2. The boundary of a mask is :func:`mask_boundary`: person pixels whose 3x3 neighbourhood
       holds a background pixel.
    3. A predicted boundary pixel is matched if a true boundary pixel lies within ``tolerance``
       (3) px, i.e. inside the true boundary dilated with a 7x7 disk; symmetrically a true
       boundary pixel is matched if a predicted boundary pixel lies within 3 px.
    4. Boundary pixels on ``ignore`` pixels are not counted (neither as predicted nor as true
       boundary), but they still serve as match partners for counted pixels.

    precision = matched predicted / predicted, recall = matched true / true, F1 = 2PR / (P + R).
    """
    valid = _check_masks(pred, truth, ignore)
    pred_r = _resize_long_side(pred, long_side).astype(bool)
    truth_r = _resize_long_side(truth, long_side).astype(bool)
    valid_r = _resize_long_side(valid, long_side).astype(bool)
    pred_b, truth_b = mask_boundary(pred_r), mask_boundary(truth_r)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    # Matches are searched among all boundary pixels, ignored ones included: a true contour
    # next to VOC's void band must still find the predicted contour that runs inside the band.
    truth_near = cv2.dilate(truth_b.astype(np.uint8), disk).astype(bool)
    pred_near = cv2.dilate(pred_b.astype(np.uint8), disk).astype(bool)
    pred_b, truth_b = pred_b & valid_r, truth_b & valid_r
    return BoundaryCounts(
        pred_matched=int(np.count_nonzero(pred_b & truth_near)),
        pred_total=int(np.count_nonzero(pred_b)),
        true_matched=int(np.count_nonzero(truth_b & pred_near)),
        true_total=int(np.count_nonzero(truth_b)),
    )


def boundary_f1(pred: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Boundary F1 of one image (see :func:`boundary_counts` for the definition)."""
    return boundary_counts(pred, truth, ignore).f1


@dataclass
class ImageMetrics:
    """Everything measured on one image; the counts allow exact set-level aggregation."""

    confusion: Confusion
    boundary: BoundaryCounts

    @property
    def values(self) -> dict[str, float]:
        c = self.confusion
        return {
            "pixel_accuracy": c.pixel_accuracy,
            "person_iou": c.person_iou,
            "background_iou": c.background_iou,
            "miou": c.miou,
            "boundary_f1": self.boundary.f1,
        }


def image_metrics(pred: np.ndarray, truth: np.ndarray, ignore: np.ndarray | None = None) -> ImageMetrics:
    """Confusion and boundary counts of one image's boolean masks."""
    return ImageMetrics(confusion(pred, truth, ignore), boundary_counts(pred, truth, ignore))


@dataclass
class Aggregate:
    """Accumulates :class:`ImageMetrics` over a set, for both aggregations."""

    confusion: Confusion = field(default_factory=Confusion)
    boundary: BoundaryCounts = field(default_factory=BoundaryCounts)
    per_image: list[dict[str, float]] = field(default_factory=list)

    def add(self, metrics: ImageMetrics) -> None:
        self.confusion = self.confusion + metrics.confusion
        self.boundary = self.boundary + metrics.boundary
        self.per_image.append(metrics.values)

    @property
    def n_images(self) -> int:
        return len(self.per_image)

    def over_all_pixels(self) -> dict[str, float]:
        """Ratios of the summed counts (the headline numbers)."""
        return {
            **ImageMetrics(self.confusion, self.boundary).values,
            "boundary_precision": self.boundary.precision,
            "boundary_recall": self.boundary.recall,
        }

    def mean_per_image(self) -> dict[str, float]:
        """Each metric averaged over images (NaN when there are none)."""
        if not self.per_image:
            return {name: float("nan") for name in METRIC_NAMES}
        return {name: float(np.mean([row[name] for row in self.per_image])) for name in METRIC_NAMES}
