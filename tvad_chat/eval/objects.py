"""RBDC and TBDC (Ramachandra & Jones, WACV 2020), as the widely used public scripts compute them.

Those scripts (Georgescu et al.'s ``compute_tbdc_rbdc.py``, also used by TAO) walk through the
detections once, in a stable sort by descending score, and add one curve point per detection:

- a detection is compared with the ground-truth regions of its own video and frame; every region
  with IoU >= 0.1 (inclusive pixel coordinates: width = x2 - x1 + 1, as the scripts compute it;
  ``continuous_iou`` drops the +1, the IoU the rest of the project uses; both are
  :func:`tvad_chat.motion.pairwise_iou`) that was not found before becomes found (a region counts once);
- a detection that overlaps no region at all is a false positive (one that only overlaps regions
  already found is neither a hit nor a false positive);
- a track is detected once >= 10 % of its regions are found;
- x axis: cumulative false positives divided by the number of test frames (all videos);
- the area is taken over the points with x <= 1; when the last of them is not at 1, the curve is
  extended flat to x = 1 (trapezoids, as sklearn.metrics.auc).

Ties therefore keep input order (videos by file name, then line order) and each tied detection is
its own point. Here the same curve is computed without the per-detection Python loop: matches are
found with one vectorised join per (video, frame), each region gets the rank of the first
detection that hits it, and a track the rank at which its k-th region is found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tvad_chat.errors import DataError
from tvad_chat.motion import pairwise_iou

IOU_THRESHOLD = 0.1  # beta in the scripts
TRACK_FRACTION = 0.1  # alpha in the scripts


@dataclass
class Regions:
    """Ground-truth regions: one row per (track, frame)."""

    video: np.ndarray  # (R,) video index
    frame: np.ndarray  # (R,) frame index within the video
    track: np.ndarray  # (R,) track id, unique over all videos
    boxes: np.ndarray  # (R, 4) x1, y1, x2, y2


@dataclass
class Detections:
    """Detected anomalous boxes with scores, in input order (which decides ties)."""

    video: np.ndarray  # (N,)
    frame: np.ndarray  # (N,)
    boxes: np.ndarray  # (N, 4)
    scores: np.ndarray  # (N,)


@dataclass
class DetectionCurves:
    """One point per detection (plus the origin): x = false positives per frame, y = detection rates."""

    fpr: np.ndarray
    rbdr: np.ndarray
    tbdr: np.ndarray


def _frame_keys(video: np.ndarray, frame: np.ndarray, frame_span: int) -> np.ndarray:
    return video.astype(np.int64) * frame_span + frame.astype(np.int64)


def _matching_pairs(regions: Regions, detections: Detections, continuous: bool) -> tuple[np.ndarray, np.ndarray]:
    """(detection index, region index) of every pair on the same frame with IoU >= the threshold."""
    span = int(max(regions.frame.max(initial=0), detections.frame.max(initial=0))) + 1
    det_keys = _frame_keys(detections.video, detections.frame, span)
    reg_keys = _frame_keys(regions.video, regions.frame, span)
    det_order = np.argsort(det_keys, kind="stable")
    sorted_keys = det_keys[det_order]
    start = np.searchsorted(sorted_keys, reg_keys, side="left")
    stop = np.searchsorted(sorted_keys, reg_keys, side="right")
    per_region = stop - start
    reg_idx = np.repeat(np.arange(reg_keys.size), per_region)
    # position of each pair inside its region's run of detections
    offsets = np.arange(reg_idx.size) - np.repeat(np.cumsum(per_region) - per_region, per_region)
    det_idx = det_order[np.repeat(start, per_region) + offsets]
    iou = pairwise_iou(detections.boxes[det_idx], regions.boxes[reg_idx], inclusive=not continuous)
    hit = iou >= IOU_THRESHOLD
    return det_idx[hit], reg_idx[hit]


def _minimal_found(size: np.ndarray) -> np.ndarray:
    """Smallest k >= 1 with k / size >= TRACK_FRACTION, tested as the scripts do (float division)."""
    k = np.ceil(TRACK_FRACTION * size).astype(np.int64)
    k = np.where((k > 1) & ((k - 1) / size >= TRACK_FRACTION), k - 1, k)  # guard against rounding up
    k = np.where(k / size < TRACK_FRACTION, k + 1, k)  # ... and down
    return np.maximum(k, 1)


def detection_curves(regions: Regions, detections: Detections, num_frames: int,
                     continuous_iou: bool = False) -> DetectionCurves:
    """The RBDR and TBDR curves against false positives per frame, one point per detection."""
    if num_frames <= 0:
        raise DataError("num_frames (all test frames, all videos) must be positive")
    num_regions = int(regions.frame.size)
    if num_regions == 0:
        raise DataError("no ground-truth regions: RBDC/TBDC need at least one anomalous region")
    if detections.scores.size and not np.isfinite(detections.scores).all():
        raise DataError("detection scores must be finite numbers")
    n = int(detections.scores.size)
    order = np.argsort(-detections.scores, kind="stable")  # descending, ties in input order
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)

    det_idx, reg_idx = _matching_pairs(regions, detections, continuous_iou)
    matches_any = np.zeros(n, dtype=bool)
    matches_any[det_idx] = True
    false_positive = np.zeros(n, dtype=np.int64)
    false_positive[rank[~matches_any]] = 1
    # A region is found by the first detection (in sorted order) that hits it.
    found_at = np.full(num_regions, n, dtype=np.int64)  # n = never
    np.minimum.at(found_at, reg_idx, rank[det_idx])
    new_regions = np.bincount(found_at[found_at < n], minlength=n)

    # A track is found when its k-th region is found, k = ceil(10 % of its regions).
    _, track_of_region = np.unique(regions.track, return_inverse=True)
    num_tracks = int(track_of_region.max()) + 1
    size = np.bincount(track_of_region, minlength=num_tracks)
    need = _minimal_found(size)
    by_track = np.lexsort((found_at, track_of_region))
    first = np.concatenate([[0], np.cumsum(size)[:-1]])
    track_found_at = found_at[by_track[first + need - 1]]
    new_tracks = np.bincount(track_found_at[track_found_at < n], minlength=n)

    zero = np.zeros(1)
    return DetectionCurves(
        fpr=np.concatenate([zero, np.cumsum(false_positive) / num_frames]),
        rbdr=np.concatenate([zero, np.cumsum(new_regions) / num_regions]),
        tbdr=np.concatenate([zero, np.cumsum(new_tracks) / num_tracks]),
    )


def area_to_one(fpr: np.ndarray, rate: np.ndarray) -> float:
    """Trapezoid area over the points with fpr <= 1; the last of them is extended flat to fpr = 1."""
    last = int(np.flatnonzero(fpr <= 1.0)[-1])
    x, y = fpr[: last + 1], rate[: last + 1]
    if x[-1] != 1.0:
        x, y = np.append(x, 1.0), np.append(y, y[-1])
    return float(np.trapezoid(y, x))


def rbdc_tbdc(regions: Regions, detections: Detections, num_frames: int,
              continuous_iou: bool = False) -> dict[str, float | int | str]:
    """RBDC and TBDC in percent, with counts and the conventions used."""
    curves = detection_curves(regions, detections, num_frames, continuous_iou)
    return {
        "rbdc": 100.0 * area_to_one(curves.fpr, curves.rbdr),
        "tbdc": 100.0 * area_to_one(curves.fpr, curves.tbdr),
        "regions": int(regions.frame.size),
        "tracks": int(np.unique(regions.track).size),
        "detections": int(detections.scores.size),
        "frames": num_frames,
        "false_positives": int(round(curves.fpr[-1] * num_frames)),
        "regions_found": int(round(curves.rbdr[-1] * regions.frame.size)),
        "iou": "continuous" if continuous_iou else "inclusive pixels (+1)",
        "iou_threshold": IOU_THRESHOLD,
        "track_fraction": TRACK_FRACTION,
    }
