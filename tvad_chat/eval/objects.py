"""RBDC and TBDC (Ramachandra & Jones, WACV 2020), as the widely used public scripts compute them.

- Detections of all videos are sorted by score, stably (ties keep file order); every distinct
  score is a threshold.
- A detection matches the ground-truth regions of its own frame with IoU >= 0.1; IoU uses inclusive
  pixel coordinates (width = x2 - x1 + 1) unless ``continuous_iou``.
- A region counts once, however many detections hit it; a detection that matches no region is a
  false positive. A track is detected once >= 10 % of its regions are.
- x axis: false positives per frame over all test frames. The area under each curve is taken for
  FPR in [0, 1] (the curve is cut at 1 by linear interpolation, or extended flat to 1).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from tvad_chat.errors import DataError

IOU_THRESHOLD = 0.1
TRACK_FRACTION = 0.1


@dataclass
class Regions:
    """Ground-truth regions: one row per (track, frame)."""

    video: np.ndarray  # (R,) video index
    frame: np.ndarray  # (R,)
    track: np.ndarray  # (R,) global track index
    boxes: np.ndarray  # (R, 4) x1, y1, x2, y2


@dataclass
class Detections:
    video: np.ndarray
    frame: np.ndarray
    boxes: np.ndarray  # (N, 4)
    scores: np.ndarray  # (N,)


def box_iou(a: np.ndarray, b: np.ndarray, continuous: bool = False) -> np.ndarray:
    """IoU matrix (len(a), len(b)); inclusive pixel coordinates (+1) unless continuous."""
    plus = 0.0 if continuous else 1.0
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + plus
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + plus
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area_a = (a[:, 2] - a[:, 0] + plus) * (a[:, 3] - a[:, 1] + plus)
    area_b = (b[:, 2] - b[:, 0] + plus) * (b[:, 3] - b[:, 1] + plus)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


def _area_to_one(fpr: np.ndarray, rate: np.ndarray) -> float:
    """Area under a step-free (piecewise linear) curve for FPR in [0, 1], extended flat to 1."""
    x = np.concatenate([[0.0], fpr])
    y = np.concatenate([[0.0], rate])
    if x[-1] > 1.0:
        cut = int(np.searchsorted(x, 1.0, side="right"))
        y_at_one = np.interp(1.0, x, y)
        x, y = np.concatenate([x[:cut], [1.0]]), np.concatenate([y[:cut], [y_at_one]])
    elif x[-1] < 1.0:
        x, y = np.concatenate([x, [1.0]]), np.concatenate([y, [y[-1]]])
    return float(np.trapezoid(y, x))


def rbdc_tbdc(regions: Regions, detections: Detections, num_frames: int,
              continuous_iou: bool = False) -> dict[str, float | int | str]:
    """RBDC and TBDC in percent, with counts and the conventions used."""
    if num_frames <= 0:
        raise DataError("num_frames (all test frames) must be positive")
    num_regions = len(regions.frame)
    track_ids, track_of_region = np.unique(regions.track, return_inverse=True)
    result = {"regions": num_regions, "tracks": int(track_ids.size), "detections": int(detections.scores.size),
              "frames": num_frames, "iou": "continuous" if continuous_iou else "inclusive (+1)",
              "iou_threshold": IOU_THRESHOLD, "track_fraction": TRACK_FRACTION}
    if num_regions == 0:
        raise DataError("no ground-truth regions: RBDC/TBDC need at least one anomalous region")

    # Highest score of a matching detection per region, and whether each detection matches anything.
    region_best = np.full(num_regions, -np.inf)
    det_matches = np.zeros(detections.scores.size, dtype=bool)
    regions_by_frame: dict[tuple[int, int], np.ndarray] = defaultdict(list)
    for idx, key in enumerate(zip(regions.video.tolist(), regions.frame.tolist())):
        regions_by_frame[key].append(idx)
    det_keys = defaultdict(list)
    for idx, key in enumerate(zip(detections.video.tolist(), detections.frame.tolist())):
        det_keys[key].append(idx)
    for key, det_idx in det_keys.items():
        reg_idx = regions_by_frame.get(key)
        if not reg_idx:
            continue
        det_idx, reg_idx = np.asarray(det_idx), np.asarray(reg_idx)
        hit = box_iou(detections.boxes[det_idx], regions.boxes[reg_idx], continuous_iou) >= IOU_THRESHOLD
        det_matches[det_idx] = hit.any(axis=1)
        scores = np.where(hit, detections.scores[det_idx][:, None], -np.inf).max(axis=0)
        region_best[reg_idx] = np.maximum(region_best[reg_idx], scores)

    thresholds = np.unique(detections.scores)[::-1]  # descending distinct scores
    if thresholds.size == 0:
        result.update(rbdc=0.0, tbdc=0.0)
        return result
    neg_thr = -thresholds  # ascending, for searchsorted
    # count of values >= t for each threshold t
    def count_at_least(values: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.sort(-values), neg_thr, side="right")

    detected_regions = count_at_least(region_best[np.isfinite(region_best)])
    false_positives = count_at_least(detections.scores[~det_matches])
    # A track is detected at threshold t when its k-th best region score >= t, k = ceil(10 % of its regions).
    track_score = np.full(track_ids.size, -np.inf)
    order = np.lexsort((-region_best, track_of_region))
    sorted_tracks = track_of_region[order]
    starts = np.searchsorted(sorted_tracks, np.arange(track_ids.size))
    counts = np.bincount(track_of_region, minlength=track_ids.size)
    for t in range(track_ids.size):
        k = max(1, math.ceil(TRACK_FRACTION * counts[t] - 1e-9))
        track_score[t] = region_best[order[starts[t] + k - 1]]
    detected_tracks = count_at_least(track_score[np.isfinite(track_score)])

    fpr = false_positives / num_frames
    result["rbdc"] = 100.0 * _area_to_one(fpr, detected_regions / num_regions)
    result["tbdc"] = 100.0 * _area_to_one(fpr, detected_tracks / track_ids.size)
    return result
