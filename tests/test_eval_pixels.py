"""Pixel metrics: scikit-learn cross-checks, an independent AUPRO re-derivation, the TAO protocol, hand cases."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from sklearn.metrics import (
    auc,
    average_precision_score,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
)

from tvad_chat.errors import DataError
from tvad_chat.eval.pixels import PixelFrame, pixel_metrics, pooled_pixel_metrics, tao_protocol


def _random_frames(rng: np.random.Generator, count: int, shape=(40, 56), dtype=np.uint8) -> list[PixelFrame]:
    frames = []
    for i in range(count):
        mask = np.zeros(shape, bool)
        for _ in range(int(rng.integers(0, 3))):  # 0-2 blobs per frame; some frames have none
            y, x = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
            mask[y:y + int(rng.integers(2, 9)), x:x + int(rng.integers(2, 9))] = True
        signal = rng.random(shape) * 0.7 + 0.35 * mask
        if dtype == np.uint8:
            score = np.clip(signal * 200, 0, 255).astype(np.uint8)
        else:
            score = signal.astype(dtype)
        frames.append(PixelFrame(score, mask, f"f{i}"))
    return frames


def _pooled(frames):
    y = np.concatenate([f.mask.ravel() for f in frames])
    s = np.concatenate([f.score.ravel().astype(np.float64) for f in frames])
    return y, s


def _sk_max_f1(y, s) -> float:
    p, r, _ = precision_recall_curve(y, s)
    return float(np.max(np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)))


def _reference_aupro(frames, limit=0.3) -> float:
    """Published definition, brute force: 8-connected components (OpenCV, not scipy), then for every
    distinct threshold FPR over normal pixels and the mean per-region overlap; trapezoids up to the
    limit with linear interpolation there, divided by the limit."""
    regions, normal = [], []
    for f in frames:
        count, labels = cv2.connectedComponents(f.mask.astype(np.uint8), connectivity=8)
        regions += [f.score[labels == k].astype(np.float64) for k in range(1, count)]
        normal.append(f.score[~f.mask].astype(np.float64))
    normal = np.sort(np.concatenate(normal))
    thresholds = np.unique(np.concatenate([normal] + regions))[::-1]

    def share_at_least(values: np.ndarray) -> np.ndarray:  # fraction of values >= each threshold
        return (values.size - np.searchsorted(np.sort(values), thresholds, side="left")) / values.size

    xs = [0.0] + share_at_least(normal).tolist()
    ys = [0.0] + np.mean([share_at_least(r) for r in regions], axis=0).tolist()
    area = 0.0
    for k in range(1, len(xs)):
        x0, x1, y0, y1 = xs[k - 1], xs[k], ys[k - 1], ys[k]
        if x1 > limit:
            if x0 < limit:
                y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
                area += (limit - x0) * (y0 + y_lim) / 2
            break
        area += (x1 - x0) * (y0 + y1) / 2
    return 100 * area / limit


def test_uint8_maps_are_exact_against_sklearn_and_the_aupro_reference() -> None:
    frames = _random_frames(np.random.default_rng(0), 12)
    result = pooled_pixel_metrics(frames)
    y, s = _pooled(frames)
    assert result["thresholds"].startswith("exact")
    assert result["auroc"] == pytest.approx(100 * roc_auc_score(y, s), abs=1e-9)
    assert result["ap"] == pytest.approx(100 * average_precision_score(y, s), abs=1e-9)
    assert result["f1_max"] == pytest.approx(100 * _sk_max_f1(y, s), abs=1e-9)
    assert result["aupro"] == pytest.approx(_reference_aupro(frames), abs=1e-9)


@pytest.mark.parametrize("seed", [1, 2])
def test_float_maps_are_binned_within_tolerance(seed: int) -> None:
    frames = _random_frames(np.random.default_rng(seed), 10, dtype=np.float32)
    result = pooled_pixel_metrics(frames)
    y, s = _pooled(frames)
    assert "65536 equal-width bins" in result["thresholds"]
    # stated tolerance of the binned float path: 0.01 percentage points
    assert result["auroc"] == pytest.approx(100 * roc_auc_score(y, s), abs=0.01)
    assert result["ap"] == pytest.approx(100 * average_precision_score(y, s), abs=0.01)
    assert result["f1_max"] == pytest.approx(100 * _sk_max_f1(y, s), abs=0.01)
    assert result["aupro"] == pytest.approx(_reference_aupro(frames), abs=0.01)
    coarse = pooled_pixel_metrics(frames, bins=16)  # few bins: visibly different, so the bins matter
    assert abs(coarse["auroc"] - 100 * roc_auc_score(y, s)) > 0.01


def test_perfect_and_inverted_maps() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    perfect = pooled_pixel_metrics([PixelFrame(mask.astype(np.uint8) * 255, mask)])
    assert perfect["auroc"] == 100.0 and perfect["ap"] == 100.0 and perfect["aupro"] == pytest.approx(100.0)
    assert perfect["f1_max"] == 100.0
    inverted = pooled_pixel_metrics([PixelFrame((~mask).astype(np.uint8) * 255, mask)])
    assert inverted["auroc"] == 0.0 and inverted["aupro"] == 0.0


def test_all_scores_equal() -> None:
    mask = np.zeros((10, 10), bool)
    mask[:2] = True  # 20 % anomalous
    result = pooled_pixel_metrics([PixelFrame(np.full((10, 10), 7, np.uint8), mask)])
    assert result["auroc"] == pytest.approx(50.0)
    assert result["ap"] == pytest.approx(20.0)  # precision at the only threshold
    assert result["f1_max"] == pytest.approx(100 * 2 * 0.2 / 1.2)
    # one threshold: PRO jumps from 0 to 1 at FPR 1, interpolated at 0.3 -> 0.3; area 0.3*0.3/2 / 0.3
    assert result["aupro"] == pytest.approx(15.0)


def test_regions_are_8_connected_and_each_counts_equally() -> None:
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one region
    mask[4:6, 4:6] = True  # a second region of 4 pixels
    score = np.zeros((6, 6), np.uint8)
    score[0, 0] = score[1, 1] = 200  # region one fully found at 200, region two never above normal
    result = pooled_pixel_metrics([PixelFrame(score, mask)])
    assert result["regions"] == 2
    # at threshold 200: FPR 0, PRO 0.5 (region one); below, everything: FPR 1, PRO 1
    # PRO(FPR) from (0, .5) to (1, 1): area up to 0.3 = 0.3 * (0.5 + 0.65) / 2, normalised
    assert result["aupro"] == pytest.approx(100 * (0.5 + 0.65) / 2)


def test_frames_without_anomaly_and_missing_predictions() -> None:
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    good = np.zeros((8, 8), np.uint8)
    good[2:5, 2:5] = 255
    normal_frame = PixelFrame(np.zeros((8, 8), np.uint8), np.zeros((8, 8), bool))
    tao = tao_protocol([PixelFrame(good, mask), normal_frame, PixelFrame(None, mask)])
    assert tao["tao.frames"] == 2  # the frame without anomaly is left out
    assert tao["tao.frames_without_prediction"] == 1
    assert tao["tao.auroc"] == pytest.approx(50.0)  # (100 + 0) / 2
    assert tao["tao.f1"] == pytest.approx(50.0)
    pooled = pooled_pixel_metrics([PixelFrame(good, mask), normal_frame, PixelFrame(None, mask)])
    assert pooled["frames"] == 3 and pooled["anomalous_pixels"] == 18
    # the missing map scores lowest everywhere: its anomalous pixels tie with all the normal ones
    assert pooled["auroc"] == pytest.approx(100 * (0.5 + 0.5 * 0.5))


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_tao_protocol_matches_sklearn_per_frame(dtype) -> None:
    rng = np.random.default_rng(4)
    frames = _random_frames(rng, 14, dtype=dtype)
    frames[0] = PixelFrame(np.zeros_like(frames[0].score), frames[0].mask)
    frames[0].mask[5:9, 5:9] = True  # an anomalous frame with an all-zero map
    ours = tao_protocol(frames)
    expected = {"auroc": [], "ap": [], "aupro": [], "f1": []}
    for f in frames:  # the TAO paper's per-frame steps, written with sklearn
        y = f.mask.ravel()
        if not y.any():
            continue
        p = f.score.ravel().astype(np.float64)
        if p.sum() == 0:
            for v in expected.values():
                v.append(0.0)
            continue
        p = p / p.max()
        expected["auroc"].append(roc_auc_score(y, p))
        expected["ap"].append(average_precision_score(y, p))
        precision, recall, _ = precision_recall_curve(y, p)
        expected["aupro"].append(auc(recall, precision))
        expected["f1"].append(f1_score(y, p > 0.5))
    assert ours["tao.frames"] == len(expected["ap"])
    for key, values in expected.items():
        assert ours[f"tao.{key}"] == pytest.approx(100 * np.mean(values), abs=1e-9), key


def test_pixel_metrics_combines_both_and_checks_shapes() -> None:
    frames = _random_frames(np.random.default_rng(5), 6)
    combined = pixel_metrics(frames)
    assert combined["auroc"] == pytest.approx(pooled_pixel_metrics(frames)["auroc"])
    assert combined["tao.f1"] == pytest.approx(tao_protocol(frames)["tao.f1"])
    with pytest.raises(DataError, match="differ in size"):
        pooled_pixel_metrics([PixelFrame(np.zeros((4, 4), np.uint8), np.zeros((4, 5), bool))])
    with pytest.raises(DataError):
        pooled_pixel_metrics([])
    with pytest.raises(DataError, match="NaN"):
        pooled_pixel_metrics([PixelFrame(np.full((2, 2), np.nan), np.ones((2, 2), bool))])
    no_anomaly = pooled_pixel_metrics([PixelFrame(np.zeros((3, 3), np.uint8), np.zeros((3, 3), bool))])
    assert math.isnan(no_anomaly["auroc"]) and math.isnan(no_anomaly["aupro"])
