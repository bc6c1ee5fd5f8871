"""ROC / PR quantities from cumulative counts at descending thresholds.

Every curve here is described by two arrays, ``tp[i]`` and ``fp[i]``: how many positives and
negatives score at or above threshold i, thresholds in descending order (the last one admits
everything). Thresholds without any sample are allowed (they repeat the previous point and change
no area), so the counts may come from exact distinct values (``exact_counts``) or from a histogram
over fixed bins (``histogram_counts``); the latter is how huge pixel sets stream through.
With exact counts every function equals scikit-learn's result (tests check it).
"""

from __future__ import annotations

import numpy as np


def exact_counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (tp, fp) at every distinct score, highest first. Integer maps use a bincount;
    float maps one sort of all scores plus one of the (few) positive scores, no argsort."""
    scores = np.ravel(scores)
    labels = np.ravel(labels).astype(bool)
    if scores.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if scores.dtype.kind in "ui":
        index = scores.astype(np.int64) - int(scores.min())
        size = int(index.max()) + 1
        positives = np.bincount(index[labels], minlength=size)
        negatives = np.bincount(index, minlength=size) - positives
        keep = (positives + negatives) > 0  # distinct values only, as sklearn's thresholds
        return np.cumsum(positives[keep][::-1]), np.cumsum(negatives[keep][::-1])
    ordered = np.sort(scores)[::-1]  # descending
    last_of_value = np.append(ordered[1:] != ordered[:-1], True)  # last position of each distinct value
    at_least = np.flatnonzero(last_of_value) + 1  # samples scoring >= each distinct value
    positive_scores = np.sort(scores[labels])
    tp = positive_scores.size - np.searchsorted(positive_scores, ordered[last_of_value], side="left")
    return tp, at_least - tp


def drop_flat_runs(tp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep only the first and last threshold of each run with the same tp. The dropped points lie
    on horizontal ROC segments and zero-width PR segments, and cannot hold a higher F1, so every
    quantity in this module is unchanged; curves with few positives shrink a lot."""
    if tp.size <= 2:
        return tp, fp
    change = tp[1:] != tp[:-1]
    keep = np.ones(tp.size, dtype=bool)
    keep[1:-1] = change[:-1] | change[1:]
    return tp[keep], fp[keep]


def histogram_counts(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (tp, fp) from per-bin counts (bin 0 = lowest scores)."""
    return np.cumsum(positives[::-1]), np.cumsum(negatives[::-1])


def roc_auc(tp: np.ndarray, fp: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids), NaN when a class is missing."""
    if tp.size == 0 or tp[-1] == 0 or fp[-1] == 0:
        return float("nan")
    tpr = np.concatenate([[0.0], tp / tp[-1]])
    fpr = np.concatenate([[0.0], fp / fp[-1]])
    return float(np.trapezoid(tpr, fpr))


def _precision(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    predicted = tp + fp
    return np.divide(tp, predicted, out=np.zeros(tp.shape), where=predicted > 0)


def average_precision(tp: np.ndarray, fp: np.ndarray) -> float:
    """AP as scikit-learn defines it: sum over thresholds of (R_n - R_{n-1}) * P_n."""
    if tp.size == 0 or tp[-1] == 0:
        return float("nan")
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * _precision(tp, fp)))


def pr_curve_area(tp: np.ndarray, fp: np.ndarray) -> float:
    """Trapezoid area under the precision-recall curve, as sklearn.metrics.auc(recall, precision)
    on precision_recall_curve's output (which ends at recall 0, precision 1)."""
    if tp.size == 0 or tp[-1] == 0:
        return float("nan")
    seen = (tp + fp) > 0  # a threshold above every sample is not a point of sklearn's curve
    recall = np.concatenate([[0.0], tp[seen] / tp[-1]])
    precision = np.concatenate([[1.0], _precision(tp[seen], fp[seen])])
    return float(np.trapezoid(precision, recall))


def max_f1(tp: np.ndarray, fp: np.ndarray) -> float:
    """Best F1 over all thresholds (0 when nothing is positive at any threshold)."""
    if tp.size == 0 or tp[-1] == 0:
        return float("nan")
    denominator = tp + fp + tp[-1]  # 2TP + FP + FN
    return float(np.max(2 * tp / denominator))


def pro_auc(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Area under PRO(FPR) for FPR in [0, limit], divided by limit; ``fpr`` ascending, (0, 0) added.
    The curve is linearly interpolated at the limit (as MVTec's reference code does)."""
    x = np.concatenate([[0.0], fpr])
    y = np.concatenate([[0.0], pro])
    inside = x <= limit
    x_in, y_in = x[inside], y[inside]
    if x_in[-1] < limit and inside.sum() < x.size:
        after = int(np.argmax(~inside))
        x0, x1, y0, y1 = x[after - 1], x[after], y[after - 1], y[after]
        x_in = np.append(x_in, limit)
        y_in = np.append(y_in, y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
    return float(np.trapezoid(y_in, x_in) / limit)
