"""Pixel-level metrics over per-frame anomaly maps and ground-truth masks.

Pooled protocol (all frames, all pixels): AUROC, AP, AUPRO and max-F1, computed from binned
threshold counts (``curves.py``); uint8 maps are exact (256 levels), float maps use ``bins``
equal-width thresholds between the global min and max (reported).
AUPRO (Bergmann et al., MVTec AD): ground-truth regions are the 8-connected components of each
mask; at every threshold PRO = mean over regions of the fraction of the region's pixels above the
threshold, FPR = false-positive pixels / all normal pixels; the PRO-FPR curve is integrated up
to FPR 0.3 (interpolated there) and divided by 0.3.

"TAO protocol" (as the TAO paper computes its table, labelled as such): only frames containing an
anomaly; each frame is scored alone and the scores averaged: AUROC; "AUPRO" = area under the
precision-recall curve (AP); F1 at threshold 0.5. A frame without a prediction scores 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tvad_chat.errors import DataError
from tvad_chat.eval.curves import (
    ThresholdCounts,
    average_precision_from_counts,
    bin_scores,
    max_f1_from_counts,
    roc_auc_from_counts,
)

AUPRO_FPR_LIMIT = 0.3
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class PixelFrame:
    score: np.ndarray | None  # (H, W) anomaly map, None when the method predicted nothing for this frame
    mask: np.ndarray  # (H, W) bool


def _check(frame: PixelFrame, index: int) -> None:
    if frame.score is not None and frame.score.shape != frame.mask.shape:
        raise DataError(f"frame {index}: score map {frame.score.shape} and mask {frame.mask.shape} differ in size")


def aupro_from_curve(fpr: np.ndarray, pro: np.ndarray, limit: float = AUPRO_FPR_LIMIT) -> float:
    """Normalised area under PRO(FPR) for FPR in [0, limit]; fpr ascending."""
    x = np.concatenate([[0.0], fpr])
    y = np.concatenate([[0.0], pro])
    keep = x <= limit
    y_limit = np.interp(limit, x, y) if x[-1] >= limit else y[-1]
    x = np.concatenate([x[keep], [limit]])
    y = np.concatenate([y[keep], [y_limit]])
    return float(np.trapezoid(y, x) / limit)


def pooled_pixel_metrics(frames: Iterable[PixelFrame], bins: int = 4096) -> dict[str, float | int | str]:
    """AUROC, AP, AUPRO (FPR <= 0.3) and max-F1 in percent over all pixels of all frames."""
    frames = list(frames)
    if not frames:
        raise DataError("no frames to evaluate")
    for i, frame in enumerate(frames):
        _check(frame, i)
    exact = all(f.score is None or f.score.dtype == np.uint8 for f in frames)
    scored = [f.score for f in frames if f.score is not None]
    if exact:
        low, high, nbins = 0.0, 255.0, 256
    else:
        low = min(float(s.min()) for s in scored) if scored else 0.0
        high = max(float(s.max()) for s in scored) if scored else 1.0
        nbins = bins
    counts = ThresholdCounts.empty(nbins)
    region_hist: list[np.ndarray] = []  # per region: count of its pixels per bin
    for frame in frames:
        score = frame.score if frame.score is not None else np.full(frame.mask.shape, low)
        index = score.astype(np.int64) if exact else bin_scores(score, low, high, nbins)
        counts.add(index.ravel(), frame.mask.ravel())
        labels, num = ndimage.label(frame.mask, structure=EIGHT_CONNECTED)
        if num:
            flat = labels.ravel()
            inside = flat > 0
            hist = np.bincount((flat[inside] - 1) * nbins + index.ravel()[inside], minlength=num * nbins)
            region_hist.append(hist.reshape(num, nbins))
    result = {"frames": len(frames), "pixels": int(counts.positives.sum() + counts.negatives.sum()),
              "thresholds": "exact uint8 levels" if exact else f"{nbins} equal-width bins in [{low:.4g}, {high:.4g}]"}
    result["auroc"] = 100.0 * roc_auc_from_counts(counts)
    result["ap"] = 100.0 * average_precision_from_counts(counts)
    result["f1_max"] = 100.0 * max_f1_from_counts(counts)
    if region_hist:
        regions = np.concatenate(region_hist)  # (R, B)
        # fraction of each region at or above each threshold, thresholds from high to low
        covered = np.cumsum(regions[:, ::-1], axis=1) / regions.sum(axis=1, keepdims=True)
        pro = covered.mean(axis=0)
        _, fp = counts.cumulative()
        fpr = fp / max(int(fp[-1]), 1)
        result["aupro"] = 100.0 * aupro_from_curve(fpr, pro)
        result["regions"] = int(regions.shape[0])
    else:
        result["aupro"] = float("nan")
        result["regions"] = 0
    return result


def tao_protocol(frames: Iterable[PixelFrame], threshold: float = 0.5) -> dict[str, float | int | str]:
    """The TAO paper's per-frame protocol (see module docstring); scores are expected in [0, 1]."""
    aurocs, auprs, f1s = [], [], []
    for i, frame in enumerate(frames):
        _check(frame, i)
        if not frame.mask.any():
            continue
        if frame.score is None or not np.any(frame.score):
            aurocs.append(0.0), auprs.append(0.0), f1s.append(0.0)
            continue
        score = frame.score.astype(np.float64)
        if frame.score.dtype == np.uint8:
            score /= 255.0
        mask = frame.mask.ravel()
        counts = ThresholdCounts.empty(256)
        counts.add(bin_scores(score.ravel(), 0.0, 1.0, 256), mask)
        if mask.all():  # no normal pixel: AUROC undefined, count as 0 like a missed frame
            aurocs.append(0.0)
        else:
            aurocs.append(roc_auc_from_counts(counts))
        auprs.append(average_precision_from_counts(counts))
        predicted = score.ravel() >= threshold
        tp = int(np.sum(predicted & mask))
        denom = int(predicted.sum() + mask.sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    if not aurocs:
        raise DataError("TAO protocol: no frame contains an anomaly")
    return {"tao.auroc": 100.0 * float(np.mean(aurocs)), "tao.aupro": 100.0 * float(np.mean(auprs)),
            "tao.f1": 100.0 * float(np.mean(f1s)), "tao.frames": len(aurocs),
            "tao.note": "TAO protocol: anomalous frames only, per-frame mean; AUPRO here = PR-curve area; "
                        f"F1 at {threshold}; 256 score levels in [0, 1]"}
