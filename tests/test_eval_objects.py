"""RBDC / TBDC: hand-computed cases and a per-detection loop written from the published procedure."""

from __future__ import annotations

import numpy as np
import pytest

from tvad_chat.errors import DataError
from tvad_chat.eval.objects import Detections, Regions, detection_curves, rbdc_tbdc
from tvad_chat.motion import pairwise_iou


def _regions(rows):  # (video, frame, track, x1, y1, x2, y2)
    a = np.array(rows, dtype=float).reshape(-1, 7)
    return Regions(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2].astype(int), a[:, 3:])


def _dets(rows):  # (video, frame, x1, y1, x2, y2, score)
    a = np.array(rows, dtype=float).reshape(-1, 7)
    return Detections(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2:6], a[:, 6])


TRACK = _regions([(0, f, 7, 10, 10, 19, 19) for f in range(10)])  # one track, 10 regions on frames 0-9


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
    # (0,0) -> (0, 0.1) -> (0.1, 0.1) -> flat to (1, 0.1): area 0.1
    assert result["rbdc"] == pytest.approx(10.0)
    assert result["tbdc"] == pytest.approx(100.0)  # 1 of 10 regions = 10% -> track detected at x = 0
    assert result["false_positives"] == 1 and result["regions_found"] == 1


def test_video_without_anomalies_only_adds_false_positives() -> None:
    # video 1 has no ground truth: its detections are false positives, scored with everything else
    dets = _dets([(1, 0, 10, 10, 19, 19, 0.95), (0, 0, 10, 10, 19, 19, 0.9)])
    result = rbdc_tbdc(TRACK, dets, num_frames=4)
    # (0,0) -> (0.25, 0) -> (0.25, 0.1) -> flat: area 0.75 * 0.1
    assert result["rbdc"] == pytest.approx(7.5)


def test_two_detections_on_one_region_count_once_and_are_not_false_positives() -> None:
    dets = _dets([(0, 0, 10, 10, 19, 19, 0.9), (0, 0, 11, 11, 19, 19, 0.8)])
    result = rbdc_tbdc(TRACK, dets, num_frames=10)
    assert result["rbdc"] == pytest.approx(10.0)
    assert result["false_positives"] == 0 and result["regions_found"] == 1


def test_ties_are_broken_by_input_order() -> None:
    hit, miss = (0, 0, 10, 10, 19, 19, 0.7), (0, 3, 40, 40, 45, 45, 0.7)
    # hit first: (0,0) -> (0, 0.1) -> (0.5, 0.1) -> (1, 0.1): area 0.1
    assert rbdc_tbdc(TRACK, _dets([hit, miss]), num_frames=2)["rbdc"] == pytest.approx(10.0)
    # false positive first: (0,0) -> (0.5, 0) -> (0.5, 0.1) -> (1, 0.1): area 0.05
    assert rbdc_tbdc(TRACK, _dets([miss, hit]), num_frames=2)["rbdc"] == pytest.approx(5.0)


def test_all_scores_equal_follow_input_order() -> None:
    dets = _dets([(0, f, 10, 10, 19, 19, 0.5) for f in range(5)] + [(0, 20, 0, 0, 3, 3, 0.5)] * 5)
    # five hits at x = 0 (rate 0.5), then five false positives reach x = 0.5, flat to 1
    assert rbdc_tbdc(TRACK, dets, num_frames=10)["rbdc"] == pytest.approx(50.0)


def test_boxes_touching_at_one_pixel_inclusive_versus_continuous() -> None:
    a, b = np.array([[0.0, 0, 9, 9]]), np.array([[9.0, 9, 18, 18]])
    assert pairwise_iou(a, b, inclusive=True)[0] == pytest.approx(1 / (100 + 100 - 1))  # the shared pixel (9, 9)
    assert pairwise_iou(a, b)[0] == 0.0
    # 2x2-pixel boxes sharing one corner pixel: IoU 1/7 >= 0.1 with +1, 0 without
    region = _regions([(0, 0, 1, 0, 0, 1, 1)])
    det = _dets([(0, 0, 1, 1, 2, 2, 1.0)])
    assert rbdc_tbdc(region, det, 1)["rbdc"] == pytest.approx(100.0)
    assert rbdc_tbdc(region, det, 1, continuous_iou=True)["rbdc"] == 0.0


def test_iou_threshold_is_inclusive_at_0_1() -> None:
    # region 0..9 (10x10 pixels) and detection x 8..17: overlap 2x10 = 20, union 180 -> IoU 0.111
    regions = _regions([(0, 0, 1, 0, 0, 9, 9)])
    dets = _dets([(0, 0, 8, 0, 17, 9, 1.0)])
    assert _scripts_iou(dets.boxes[0], regions.boxes[0]) == pytest.approx(20 / 180)
    assert rbdc_tbdc(regions, dets, 1)["rbdc"] == pytest.approx(100.0)
    # x 9..18: overlap 10, union 190 -> 0.053 < 0.1: a false positive
    far = _dets([(0, 0, 9, 0, 18, 9, 1.0)])
    assert rbdc_tbdc(regions, far, 1)["rbdc"] == 0.0


def test_track_needs_ten_percent_of_regions() -> None:
    long_track = _regions([(0, f, 1, 0, 0, 9, 9) for f in range(20)])
    one_hit = _dets([(0, 0, 0, 0, 9, 9, 1.0)])
    assert rbdc_tbdc(long_track, one_hit, 20)["tbdc"] == 0.0  # 1/20 = 5 %
    two_hits = _dets([(0, 0, 0, 0, 9, 9, 1.0), (0, 1, 0, 0, 9, 9, 0.5)])
    assert rbdc_tbdc(long_track, two_hits, 20)["tbdc"] == pytest.approx(100.0)


def test_curve_beyond_one_is_cut_at_the_last_point_then_flat() -> None:
    # one hit after 3 false positives on 2 frames: x = 0.5, 1.0, 1.5, then the hit at 1.5 is dropped
    dets = _dets([(0, 40, 0, 0, 3, 3, 0.9), (0, 41, 0, 0, 3, 3, 0.8), (0, 42, 0, 0, 3, 3, 0.7),
                  (0, 0, 10, 10, 19, 19, 0.6)])
    assert rbdc_tbdc(TRACK, dets, num_frames=2)["rbdc"] == 0.0
    dets = _dets([(0, 40, 0, 0, 3, 3, 0.9), (0, 0, 10, 10, 19, 19, 0.8), (0, 41, 0, 0, 3, 3, 0.7),
                  (0, 42, 0, 0, 3, 3, 0.6)])
    # (0,0) (0.5,0) (0.5,0.1) (1,0.1) [then 1.5 ignored]: area 0.05
    assert rbdc_tbdc(TRACK, dets, num_frames=2)["rbdc"] == pytest.approx(5.0)


def _scripts_iou(a, b) -> float:
    """IoU as the public scripts write it, one pair at a time: inclusive pixel coordinates (+1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - ix * iy
    return ix * iy / union


def _reference(regions: Regions, dets: Detections, num_frames: int) -> tuple[float, float]:
    """Slow loop over detections in stable score order, written from the procedure in the paper/README."""
    order = sorted(range(len(dets.scores)), key=lambda i: -dets.scores[i])  # Python's sort is stable
    found = [False] * len(regions.frame)
    tracks = sorted(set(regions.track.tolist()))
    fps, xs, rb, tb = 0, [0.0], [0.0], [0.0]
    for i in order:
        hits = [j for j in range(len(regions.frame))
                if regions.video[j] == dets.video[i] and regions.frame[j] == dets.frame[i]
                and _scripts_iou(dets.boxes[i], regions.boxes[j]) >= 0.1]
        if not hits:
            fps += 1
        for j in hits:
            found[j] = True
        xs.append(fps / num_frames)
        rb.append(sum(found) / len(found))
        per_track = [np.mean([found[j] for j in range(len(found)) if regions.track[j] == k]) for k in tracks]
        tb.append(np.mean([p >= 0.1 for p in per_track]))

    def area(ys: list[float]) -> float:
        x = [v for v in xs if v <= 1]
        y = ys[: len(x)]
        if x[-1] != 1:
            x, y = x + [1.0], y + [y[-1]]
        return 100 * sum((x[k + 1] - x[k]) * (y[k + 1] + y[k]) / 2 for k in range(len(x) - 1))

    return area(rb), area(tb)


def test_against_a_direct_loop_on_random_data() -> None:
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
        for _ in range(int(rng.integers(0, 3))):  # 0, 1 or 2 detections per region
            j = rng.normal(0, 8, 4)
            det_rows.append((video, f, x1 + j[0], y1 + j[1], x2 + j[2], y2 + j[3], round(rng.random(), 1)))
    for _ in range(60):
        x, y = rng.uniform(0, 300, 2)
        det_rows.append((int(rng.integers(0, 3)), int(rng.integers(0, 45)), x, y, x + 20, y + 20,
                         round(rng.random(), 1)))  # one decimal: many ties
    dets = _dets(det_rows)
    for frames in (30, 135):  # curve beyond x = 1 (cut) and below (extended)
        result = rbdc_tbdc(regions, dets, frames)
        ref_rbdc, ref_tbdc = _reference(regions, dets, frames)
        assert result["rbdc"] == pytest.approx(ref_rbdc, abs=1e-9)
        assert result["tbdc"] == pytest.approx(ref_tbdc, abs=1e-9)


def test_curves_have_one_point_per_detection() -> None:
    dets = _dets([(0, 0, 10, 10, 19, 19, 0.9), (0, 0, 0, 0, 2, 2, 0.4), (0, 1, 10, 10, 19, 19, 0.4)])
    curves = detection_curves(TRACK, dets, 10)
    assert curves.fpr.tolist() == pytest.approx([0, 0, 0.1, 0.1])
    assert curves.rbdr.tolist() == pytest.approx([0, 0.1, 0.1, 0.2])


def test_bad_inputs_are_errors() -> None:
    with pytest.raises(DataError):
        rbdc_tbdc(_regions([]), _dets([]), 10)
    with pytest.raises(DataError):
        rbdc_tbdc(TRACK, _dets([]), 0)
    with pytest.raises(DataError):
        rbdc_tbdc(TRACK, _dets([(0, 0, 1, 1, 2, 2, float("nan"))]), 10)
