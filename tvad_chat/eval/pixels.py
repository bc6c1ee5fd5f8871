"""Pixel-level metrics over per-frame anomaly maps and ground-truth masks.

Pooled protocol (every pixel of every frame together): AUROC, AP, AUPRO and max-F1.
Thresholds: integer maps (uint8 / uint16 PNG) are exact, one threshold per level, and equal
scikit-learn's result; float maps are binned into ``bins`` equal-width bins between the global
minimum and maximum (or a given range), which is how 2,000 frames stream through in seconds; the
report says which, and tests bound the difference to sklearn's exact result.

AUPRO (Bergmann et al., MVTec AD): ground-truth regions are the 8-connected components of each
mask; at every threshold PRO = mean over regions of the fraction of the region's pixels at or
above it, FPR = normal pixels at or above it / all normal pixels; the PRO-FPR curve is integrated
up to FPR 0.3 (interpolated there) and divided by 0.3. PRO only needs, per bin, the sum over region
pixels of 1 / (size of their region), so no per-region curve is stored.

"TAO protocol", reproducing how the TAO paper (CVPR 2025) computes its pixel table: only frames whose
mask has an anomaly; each map is divided by its maximum; a frame whose map is all zero (or missing)
scores 0 on every metric; otherwise AUROC, AP, "AUPRO" = trapezoid area under the precision-recall
curve (not the MVTec AUPRO) and F1 of (map > 0.5), each exact per frame, then averaged over frames.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from tvad_chat.errors import ConfigError, DataError
from tvad_chat.eval.curves import (
    average_precision,
    drop_flat_runs,
    exact_counts,
    histogram_counts,
    max_f1,
    pr_curve_area,
    pro_auc,
    roc_auc,
)

log = logging.getLogger(__name__)

AUPRO_FPR_LIMIT = 0.3
DEFAULT_BINS = 65536
TAO_F1_THRESHOLD = 0.5
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class PixelFrame:
    """One frame: its anomaly map (None when the method predicted nothing) and its boolean mask."""

    score: np.ndarray | None
    mask: np.ndarray
    name: str = ""


def _check(frame: PixelFrame, index: int) -> None:
    where = frame.name or f"frame {index}"
    if frame.mask.ndim != 2:
        raise DataError(f"{where}: mask must be 2-D, got shape {frame.mask.shape}")
    if frame.score is not None:
        if frame.score.shape != frame.mask.shape:
            raise DataError(f"{where}: score map {frame.score.shape} and mask {frame.mask.shape} differ in size")
        if frame.score.dtype.kind == "f" and not np.isfinite(frame.score).all():
            raise DataError(f"{where}: score map holds NaN or infinite values")


@dataclass
class _Binning:
    exact: bool
    low: float
    high: float
    bins: int

    def index(self, score: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
        if score is None:  # no prediction: the lowest score everywhere
            return np.zeros(shape, dtype=np.int64)
        if self.exact:
            return score.astype(np.int64)
        if self.high <= self.low:
            return np.zeros(score.shape, dtype=np.int64)
        scaled = score.astype(np.float64) - self.low  # one copy, then in place
        scaled *= self.bins / (self.high - self.low)
        np.clip(scaled, 0, self.bins - 1, out=scaled)
        return scaled.astype(np.intp)

    def describe(self) -> str:
        if self.exact:
            return f"exact: one threshold per integer level ({self.bins} levels)"
        return f"{self.bins} equal-width bins over [{self.low:.6g}, {self.high:.6g}] (float maps)"


def choose_binning(frames: Sequence[PixelFrame], bins: int = DEFAULT_BINS,
                   score_range: tuple[float, float] | None = None) -> _Binning:
    """Exact levels for integer maps; otherwise equal-width bins over the given or observed range."""
    if bins < 2:
        raise ConfigError(f"bins must be at least 2, got {bins}")
    dtypes, lows, highs = set(), [], []
    for frame in frames:  # one pass (frames may be read from disk on access)
        if frame.score is not None:
            dtypes.add(frame.score.dtype)
            if score_range is None:
                lows.append(float(frame.score.min()))
                highs.append(float(frame.score.max()))
    if len(dtypes) <= 1 and dtypes <= {np.dtype(np.uint8), np.dtype(np.uint16)}:  # one integer scale: exact
        top = 65536 if np.dtype(np.uint16) in dtypes else 256
        return _Binning(True, 0.0, float(top - 1), top)
    if score_range is None:
        score_range = (min(lows), max(highs))
    low, high = map(float, score_range)
    if high < low:
        raise ConfigError(f"score range ({low}, {high}) is empty")
    return _Binning(False, low, high, bins)


@dataclass
class PooledAccumulator:
    """Streams frames into per-bin counts: positives, negatives, and PRO weights (1 / region size)."""

    binning: _Binning
    positives: np.ndarray = field(init=False)
    negatives: np.ndarray = field(init=False)
    pro_weight: np.ndarray = field(init=False)
    regions: int = 0
    frames: int = 0

    def __post_init__(self) -> None:
        n = self.binning.bins
        self.positives = np.zeros(n, np.int64)
        self.negatives = np.zeros(n, np.int64)
        self.pro_weight = np.zeros(n, np.float64)

    def update(self, frame: PixelFrame) -> None:
        n = self.binning.bins
        index = self.binning.index(frame.score, frame.mask.shape).ravel()
        mask = frame.mask.ravel()
        positives = np.bincount(index[mask], minlength=n)
        self.positives += positives
        self.negatives += np.bincount(index, minlength=n) - positives
        labels, count = ndimage.label(frame.mask, structure=EIGHT_CONNECTED)
        if count:
            region = labels.ravel()[mask]
            size = np.bincount(region)  # size[0] is unused (background)
            self.pro_weight += np.bincount(index[mask], weights=1.0 / size[region], minlength=n)
            self.regions += count
        self.frames += 1

    def compute(self) -> dict[str, float | int | str]:
        tp, fp = histogram_counts(self.positives, self.negatives)
        result: dict[str, float | int | str] = {
            "auroc": 100.0 * roc_auc(tp, fp),
            "ap": 100.0 * average_precision(tp, fp),
            "f1_max": 100.0 * max_f1(tp, fp),
            "aupro": float("nan"),
            "frames": self.frames,
            "pixels": int(tp[-1] + fp[-1]),
            "anomalous_pixels": int(tp[-1]),
            "regions": self.regions,
            "thresholds": self.binning.describe(),
        }
        if self.regions and fp[-1] > 0:
            pro = np.cumsum(self.pro_weight[::-1]) / self.regions
            result["aupro"] = 100.0 * pro_auc(fp / fp[-1], pro, AUPRO_FPR_LIMIT)
        return result


@dataclass
class TaoAccumulator:
    """The TAO paper's per-frame protocol (see the module docstring)."""

    threshold: float = TAO_F1_THRESHOLD
    auroc: list[float] = field(default_factory=list)
    ap: list[float] = field(default_factory=list)
    aupro: list[float] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    empty_predictions: int = 0
    no_normal_pixel: int = 0

    def update(self, frame: PixelFrame) -> None:
        mask = frame.mask
        if not mask.any():
            return
        score = frame.score
        if score is None or not np.any(score):
            self.empty_predictions += 1
            for values in (self.auroc, self.ap, self.aupro, self.f1):
                values.append(0.0)
            return
        tp, fp = drop_flat_runs(*exact_counts(score, mask))  # dividing by the max keeps the order of scores
        if fp[-1] == 0:  # AUROC undefined (the mask covers the frame): left out of the AUROC mean
            self.no_normal_pixel += 1
        else:
            self.auroc.append(roc_auc(tp, fp))
        self.ap.append(average_precision(tp, fp))
        self.aupro.append(pr_curve_area(tp, fp))
        top = float(score.max())
        predicted = (score.astype(np.float64) / top > self.threshold) if top > 0 else np.zeros(mask.shape, bool)
        hits = int(np.count_nonzero(predicted & mask))
        denominator = int(np.count_nonzero(predicted)) + int(np.count_nonzero(mask))
        self.f1.append(2.0 * hits / denominator)

    def compute(self) -> dict[str, float | int | str]:
        if not self.ap:
            raise DataError("TAO protocol: no frame contains an anomaly")

        def mean(values: list[float]) -> float:
            return 100.0 * float(np.mean(values)) if values else float("nan")

        return {
            "tao.auroc": mean(self.auroc),
            "tao.ap": mean(self.ap),
            "tao.aupro": mean(self.aupro),
            "tao.f1": mean(self.f1),
            "tao.frames": len(self.ap),
            "tao.frames_without_prediction": self.empty_predictions,
            "tao.frames_without_normal_pixels": self.no_normal_pixel,
            "tao.note": "TAO protocol (not comparable with the pooled metrics): frames with an anomaly only, each "
                        "map divided by its max, metrics exact per frame then averaged; 'aupro' here is the area "
                        f"under the precision-recall curve; F1 of map > {self.threshold}; an empty map scores 0",
        }


def pooled_pixel_metrics(frames: Sequence[PixelFrame], bins: int = DEFAULT_BINS,
                         score_range: tuple[float, float] | None = None) -> dict[str, float | int | str]:
    """AUROC, AP, AUPRO (FPR <= 0.3) and max-F1 in percent over all pixels of all frames."""
    if len(frames) == 0:
        raise DataError("no frames to evaluate")
    for i, frame in enumerate(frames):
        _check(frame, i)
    accumulator = PooledAccumulator(choose_binning(frames, bins, score_range))
    for frame in frames:
        accumulator.update(frame)
    return accumulator.compute()


def tao_protocol(frames: Iterable[PixelFrame], threshold: float = TAO_F1_THRESHOLD) -> dict[str, float | int | str]:
    """The TAO paper's per-frame protocol, in percent, keys prefixed with ``tao.``."""
    accumulator = TaoAccumulator(threshold)
    for i, frame in enumerate(frames):
        _check(frame, i)
        accumulator.update(frame)
    return accumulator.compute()


def pixel_metrics(frames: Sequence[PixelFrame], bins: int = DEFAULT_BINS,
                  score_range: tuple[float, float] | None = None,
                  progress: bool = False) -> dict[str, float | int | str]:
    """Pooled metrics and the TAO protocol in one pass over the frames (a second pass finds the
    score range of float maps when none is given)."""
    if len(frames) == 0:
        raise DataError("no frames to evaluate")
    binning = choose_binning(frames, bins, score_range)
    pooled, tao = PooledAccumulator(binning), TaoAccumulator()
    iterator: Iterable[PixelFrame] = frames
    if progress:
        from tqdm import tqdm

        iterator = tqdm(frames, desc="pixel metrics", unit="frame")
    for i, frame in enumerate(iterator):
        _check(frame, i)
        pooled.update(frame)
        tao.update(frame)
    result = pooled.compute()
    try:
        result.update(tao.compute())
    except DataError:
        log.warning("no frame contains an anomaly: the TAO protocol is undefined")
    return result
