"""RBDC / TBDC on hand-computed cases and against a direct per-threshold re-computation."""

from __future__ import annotations

import numpy as np
import pytest

from tvad_chat.errors import DataError
from tvad_chat.eval.objects import Detections, Regions, box_iou, rbdc_tbdc


def _regions(rows):  # (video, frame, track, x1, y1, x2, y2)
    a = np.array(rows, dtype=float).reshape(-1, 7)
    return Regions(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2].astype(int), a[:, 3:])


def _dets(rows):  # (video, frame, x1, y1, x2, y2, score)
    a = np.array(rows, dtype=float).reshape(-1, 7)
    return Detections(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2:6], a[:, 6])


TRACK = _regions([(0, f, 7, 10, 10, 19, 19) for f in range(10)])  # one track over 10 frames


def test_no_detections_score_zero() -> None:
    result = rbdc_tbdc(TRACK, _dets([]), num_frames=100)
    assert result["rbdc"] == 0.0 and result["tbdc"] == 0.0


def test_perfect_detector_scores_100() -> None:
    dets = _dets([(0, f, 10, 10, 19, 19, 0.9) for f in range(10)])
    result = rbdc_tbdc(TRACK, dets, num_frames=100)
    assert result["rbdc"] == pytest.approx(100.0) and result["tbdc"] == pytest.approx(100.0)


def test_one_region_detected_and_a_false_positive() -> None:
    dets = _dets([(0, 0, 10, 10, 19, 19, 0.9), (0, 50, 0, 0, 5, 5, 0.5)])
    result = rbdc_tbdc(TRACK, dets, num_frames=10)
    # at 0.9: 1/10 regions, fpr 0; at 0.5: fpr 0.1 -> flat 0.1 to FPR 1 -> area 0.1
    assert result["rbdc"] == pytest.approx(10.0)
    assert result["tbdc"] == pytest.approx(100.0)  # 1 of 10 regions = 10% -> track detected


def test_two_detections_on_one_region_count_once_and_are_not_false_positives() -> None:
    dets = _dets([(0, 0, 10, 10, 19, 19, 0.9), (0, 0, 11, 11, 19, 19, 0.8)])
    result = rbdc_tbdc(TRACK, dets, num_frames=10)
    assert result["rbdc"] == pytest.approx(10.0)


def test_ties_are_one_threshold() -> None:
    # a hit and a false positive with the same score appear together: the curve jumps to (0.5, 0.1)
    dets = _dets([(0, 0, 10, 10, 19, 19, 0.7), (0, 3, 40, 40, 45, 45, 0.7)])
    result = rbdc_tbdc(TRACK, dets, num_frames=2)
    # points (0,0) -> (0.5, 0.1) -> flat to 1: area = 0.5*0.05 + 0.5*0.1 = 0.075
    assert result["rbdc"] == pytest.approx(7.5)


def test_boxes_touching_at_one_pixel_inclusive_versus_continuous() -> None:
    a, b = np.array([[0.0, 0, 9, 9]]), np.array([[9.0, 9, 18, 18]])
    assert box_iou(a, b)[0, 0] == pytest.approx(1 / (100 + 100 - 1))  # shared pixel (9, 9)
    assert box_iou(a, b, continuous=True)[0, 0] == 0.0


def test_iou_threshold_is_inclusive_at_0_1() -> None:
    # region 10x10 pixels (inclusive), detection overlapping so that IoU is exactly 0.1: 20 px overlap / 200 union
    regions = _regions([(0, 0, 1, 0, 0, 9, 9)])
    dets = _dets([(0, 0, 8, 0, 9 + 10 + 8 - 10, 9, 1.0)])  # x 8..17 -> overlap 2x10=20, union 100+100-20=180
    iou = box_iou(dets.boxes, regions.boxes)[0, 0]
    assert iou == pytest.approx(20 / 180)
    assert rbdc_tbdc(regions, dets, 1)["rbdc"] == pytest.approx(100.0)


def test_track_needs_ten_percent_of_regions() -> None:
    long_track = _regions([(0, f, 1, 0, 0, 9, 9) for f in range(20)])
    one_hit = _dets([(0, 0, 0, 0, 9, 9, 1.0)])
    assert rbdc_tbdc(long_track, one_hit, 20)["tbdc"] == 0.0  # 1/20 = 5 %
    two_hits = _dets([(0, 0, 0, 0, 9, 9, 1.0), (0, 1, 0, 0, 9, 9, 0.5)])
    assert rbdc_tbdc(long_track, two_hits, 20)["tbdc"] == pytest.approx(100.0)


def _reference(regions: Regions, dets: Detections, num_frames: int) -> tuple[float, float]:
    """Slow, direct re-computation: loop over thresholds, re-match everything each time."""
    thresholds = sorted(set(dets.scores.tolist()), reverse=True)
    xs, rb, tb = [0.0], [0.0], [0.0]
    tracks = sorted(set(regions.track.tolist()))
    for t in thresholds:
        keep = dets.scores >= t
        detected = np.zeros(len(regions.frame), bool)
        fp = 0
        for i in np.flatnonzero(keep):
            same = np.flatnonzero((regions.video == dets.video[i]) & (regions.frame == dets.frame[i]))
            hits = [j for j in same if box_iou(dets.boxes[i:i + 1], regions.boxes[j:j + 1])[0, 0] >= 0.1]
            detected[hits] = True
            fp += not hits
        xs.append(fp / num_frames)
        rb.append(detected.mean())
        tb.append(np.mean([detected[regions.track == k].mean() >= 0.1 for k in tracks]))
    def area(y):
        x, y = np.array(xs), np.array(y)
        if x[-1] > 1:
            y1 = np.interp(1.0, x, y)
            keep = x <= 1
            x, y = np.append(x[keep], 1.0), np.append(y[keep], y1)
        else:
            x, y = np.append(x, 1.0), np.append(y, y[-1])
        return 100 * float(np.trapezoid(y, x))
    return area(rb), area(tb)


def test_against_direct_recomputation_on_random_data() -> None:
    rng = np.random.default_rng(3)
    rows = []
    for track in range(12):
        video, start = int(rng.integers(0, 3)), int(rng.integers(0, 30))
        x, y = rng.uniform(0, 200, 2)
        for f in range(start, start + int(rng.integers(3, 15))):
            rows.append((video, f, track, x, y, x + 30, y + 40))
            x += 3
    regions = _regions(rows)
    det_rows = []
    for video, f, _, x1, y1, x2, y2 in rows:
        if rng.random() < 0.6:
            j = rng.normal(0, 6, 4)
            det_rows.append((video, f, x1 + j[0], y1 + j[1], x2 + j[2], y2 + j[3], round(rng.random(), 2)))
    for _ in range(60):
        x, y = rng.uniform(0, 300, 2)
        det_rows.append((int(rng.integers(0, 3)), int(rng.integers(0, 45)), x, y, x + 20, y + 20,
                         round(rng.random(), 2)))
    dets = _dets(det_rows)
    for frames in (30, 135):  # FPR beyond 1 (cut) and below 1 (extended)
        result = rbdc_tbdc(regions, dets, frames)
        ref_rbdc, ref_tbdc = _reference(regions, dets, frames)
        assert result["rbdc"] == pytest.approx(ref_rbdc, abs=1e-9)
        assert result["tbdc"] == pytest.approx(ref_tbdc, abs=1e-9)


def test_no_regions_is_an_error() -> None:
    with pytest.raises(DataError):
        rbdc_tbdc(_regions([]), _dets([]), 10)
