from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d
from sklearn.metrics import roc_auc_score

from tvad_chat.errors import ConfigError, DataError
from tvad_chat.eval.frames import frame_auc


def test_micro_and_macro_against_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = {f"v{i}": (rng.random(50) < 0.3).astype(int) for i in range(4)}
    scores = {k: rng.random(50) + 0.5 * v for k, v in labels.items()}
    result = frame_auc(scores, labels)
    all_y = np.concatenate([labels[k] for k in sorted(labels)])
    all_s = np.concatenate([scores[k] for k in sorted(labels)])
    assert result["micro_auc"] == pytest.approx(100 * roc_auc_score(all_y, all_s))
    assert result["macro_auc"] == pytest.approx(100 * np.mean([roc_auc_score(labels[k], scores[k]) for k in labels]))


def test_video_without_anomalies_skip_versus_pad() -> None:
    labels = {"a": [0, 0, 1, 1], "normal": [0, 0, 0]}
    scores = {"a": [0.1, 0.6, 0.4, 0.9], "normal": [0.2, 0.3, 0.1]}
    skip = frame_auc(scores, labels, one_class="skip")
    assert skip["macro_auc"] == pytest.approx(75.0)  # only video a: 3 of 4 pairs ordered
    assert skip["one_class_videos_skipped"] == 1
    pad = frame_auc(scores, labels, one_class="pad")
    # a padded: labels [0,0,1,1,0,1], scores [.1,.6,.4,.9,0,1] -> 8 of 9 pairs; normal padded -> 1.0
    assert pad["macro_auc"] == pytest.approx(100 * (8 / 9 + 1.0) / 2)
    assert pad["one_class"] == "pad"


def test_all_scores_equal_give_half_and_ties_count_half() -> None:
    assert frame_auc({"v": [0.5] * 6}, {"v": [0, 1, 0, 1, 0, 1]})["micro_auc"] == pytest.approx(50.0)
    assert frame_auc({"v": [0.1, 0.5, 0.5]}, {"v": [0, 0, 1]})["micro_auc"] == pytest.approx(75.0)


def test_smoothing_is_gaussian_per_video() -> None:
    rng = np.random.default_rng(1)
    y = (np.arange(40) > 25).astype(int)
    s = rng.random(40)
    result = frame_auc({"v": s}, {"v": y}, sigma=2.0)
    assert result["micro_auc"] == pytest.approx(100 * roc_auc_score(y, gaussian_filter1d(s, 2.0)))


def test_bad_inputs() -> None:
    with pytest.raises(DataError):
        frame_auc({"v": [0.1, 0.2]}, {"v": [0, 1, 1]})
    with pytest.raises(DataError):
        frame_auc({}, {"v": [0, 1]})
    with pytest.raises(ConfigError):
        frame_auc({"v": [0.1]}, {"v": [0]}, one_class="drop")
    assert math.isnan(frame_auc({"v": [0.1, 0.2]}, {"v": [0, 0]})["micro_auc"])


def test_non_numeric_scores_are_a_data_error() -> None:
    with pytest.raises(DataError, match="lists of numbers"):
        frame_auc({"v": ["high", "low"]}, {"v": [0, 1]})
