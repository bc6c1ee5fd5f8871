"""Pixel metrics: exact agreement with scikit-learn, AUPRO against an independent re-derivation of the
MVTec AD reference algorithm, and the TAO protocol on hand-computed frames."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from tvad_chat.eval.pixels import PixelFrame, aupro_from_curve, pooled_pixel_metrics, tao_protocol


def _random_frames(seed: int, n: int = 4, shape=(24, 32), dtype=np.uint8) -> list[PixelFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        mask = np.zeros(shape, bool)
        for _ in range(rng.integers(0, 3)):
            y, x = rng.integers(0, shape[0] - 6), rng.integers(0, shape[1] - 6)
            mask[y : y + rng.integers(2, 6), x : x + rng.integers(2, 6)] = True
        score = rng.random(shape) * 0.7 + mask * rng.random(shape) * 0.3
        frames.append(PixelFrame((score * 255).astype(np.uint8) if dtype == np.uint8 else score, mask))
    return frames


def _mvtec_aupro_reference(frames: list[PixelFrame], limit: float = 0.3) -> float:
    """Re-derived from the published description: sweep every distinct score as a threshold; at each,
    PRO = mean over 8-connected GT regions of the covered fraction, FPR over all normal pixels; trapezoid
    up to FPR = limit (interpolated), divided by limit."""
    scores = np.stack([f.score for f in frames]).astype(np.float64)
    masks = np.stack([f.mask for f in frames])
    regions = []
    for k, m in enumerate(masks):
        labels, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(k, labels == i) for i in range(1, n + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in sorted(np.unique(scores), reverse=True):
        predicted = scores >= t
        fpr = (predicted & normal).sum() / normal.sum()
        pro = np.mean([predicted[k][r].mean() for k, r in regions])
        points.append((fpr, pro))
    x, y = np.array(points).T
    if x[-1] >= limit:
        y_l = np.interp(limit, x, y)
        keep = x <= limit
        x, y = np.append(x[keep], limit), np.append(y[keep], y_l)
    return float(np.trapezoid(y, x) / limit)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_uint8_maps_match_sklearn_and_mvtec_reference_exactly(seed: int) -> None:
    frames = _random_frames(seed)
    if not any(f.mask.any() for f in frames):
        frames[0].mask[2:5, 2:5] = True
    result = pooled_pixel_metrics(frames)
    s = np.concatenate([f.score.ravel() for f in frames])
    m = np.concatenate([f.mask.ravel() for f in frames])
    assert result["auroc"] == pytest.approx(100 * roc_auc_score(m, s), abs=1e-9)
    assert result["ap"] == pytest.approx(100 * average_precision_score(m, s), abs=1e-9)
    precision, recall, _ = precision_recall_curve(m, s)
    f1 = np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12))
    assert result["f1_max"] == pytest.approx(100 * f1, abs=1e-9)
    assert result["aupro"] == pytest.approx(100 * _mvtec_aupro_reference(frames), abs=1e-9)
    assert result["thresholds"] == "exact uint8 levels"


def test_float_maps_binned_close_to_exact() -> None:
    frames = _random_frames(5, n=6, dtype=np.float64)
    result = pooled_pixel_metrics(frames, bins=4096)
    s = np.concatenate([f.score.ravel() for f in frames])
    m = np.concatenate([f.mask.ravel() for f in frames])
    assert result["auroc"] == pytest.approx(100 * roc_auc_score(m, s), abs=0.05)
    assert result["ap"] == pytest.approx(100 * average_precision_score(m, s), abs=0.3)
    assert result["aupro"] == pytest.approx(100 * _mvtec_aupro_reference(frames), abs=0.3)
    assert "4096 equal-width bins" in result["thresholds"]


def test_perfect_and_inverted_maps() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    perfect = pooled_pixel_metrics([PixelFrame(mask.astype(np.uint8) * 255, mask)])
    assert perfect["auroc"] == 100.0 and perfect["ap"] == 100.0 and perfect["aupro"] == 100.0
    inverted = pooled_pixel_metrics([PixelFrame((~mask).astype(np.uint8) * 255, mask)])
    assert inverted["auroc"] == 0.0


def test_all_scores_equal() -> None:
    mask = np.zeros((10, 10), bool)
    mask[0, :5] = True
    result = pooled_pixel_metrics([PixelFrame(np.full((10, 10), 7, np.uint8), mask)])
    assert result["auroc"] == pytest.approx(50.0)
    assert result["ap"] == pytest.approx(5.0)  # precision = base rate at the only threshold


def test_aupro_interpolates_at_the_limit() -> None:
    # straight line PRO = FPR / 0.6 reaches 0.5 at FPR 0.3 -> area 0.3 * 0.5 / 2 / 0.3 = 0.25
    fpr = np.array([0.6, 1.0])
    pro = np.array([1.0, 1.0])
    assert aupro_from_curve(fpr, pro) == pytest.approx(0.25)


def test_tao_protocol_hand_computed() -> None:
    mask = np.zeros((4, 4), bool)
    mask[0, :2] = True
    score = np.zeros((4, 4), np.float64)
    score[0, 0] = 0.9  # one of the two anomalous pixels above 0.5, no false positive
    normal_frame = PixelFrame(np.ones((4, 4)), np.zeros((4, 4), bool))  # no anomaly: ignored
    missed = PixelFrame(None, mask.copy())  # no prediction: scores 0
    result = tao_protocol([PixelFrame(score, mask), normal_frame, missed])
    assert result["tao.frames"] == 2
    assert result["tao.f1"] == pytest.approx(100 * (2 * 1 / (1 + 2)) / 2)
    # frame 1: positives {0.9, 0}, 14 negatives at 0 -> AUROC = (1 + 0.5) / 2 = 0.75
    assert result["tao.auroc"] == pytest.approx(100 * 0.75 / 2)
    precision1 = 1.0  # threshold 0.9: 1/1; lowest threshold: 2/16 -> AP = 0.5 * 1 + 0.5 * 2/16
    assert result["tao.aupro"] == pytest.approx(100 * (0.5 * precision1 + 0.5 * 2 / 16) / 2)


def test_frame_without_anomalies_only_gives_nan_aupro() -> None:
    result = pooled_pixel_metrics([PixelFrame(np.zeros((4, 4), np.uint8), np.zeros((4, 4), bool))])
    assert math.isnan(result["auroc"]) and math.isnan(result["aupro"]) and result["regions"] == 0
