"""ROC / PR curves from per-threshold counts, so that huge pixel sets stream through histograms.

Scores are binned onto fixed thresholds (``bins`` equal-width bins between the global min and max,
or the exact distinct values of uint8 maps); counts of positives and negatives per bin give
cumulative TP/FP at every threshold. With the distinct values as bins this equals scikit-learn's
exact result; with equal-width bins it is an approximation whose error tests bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ThresholdCounts:
    """Positives and negatives per score bin (bin i holds scores in [edge_i, edge_{i+1}))."""

    positives: np.ndarray  # (B,) int64
    negatives: np.ndarray  # (B,) int64

    @classmethod
    def empty(cls, bins: int) -> ThresholdCounts:
        return cls(np.zeros(bins, np.int64), np.zeros(bins, np.int64))

    def add(self, bin_index: np.ndarray, labels: np.ndarray) -> None:
        bins = self.positives.size
        labels = labels.astype(bool)
        self.positives += np.bincount(bin_index[labels], minlength=bins)
        self.negatives += np.bincount(bin_index[~labels], minlength=bins)

    def cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """TP and FP counts for thresholds from the highest bin down (a pixel is positive when >= bin)."""
        return np.cumsum(self.positives[::-1]), np.cumsum(self.negatives[::-1])


def roc_auc_from_counts(counts: ThresholdCounts) -> float:
    tp, fp = counts.cumulative()
    if tp[-1] == 0 or fp[-1] == 0:
        return float("nan")
    tpr = np.concatenate([[0.0], tp / tp[-1]])
    fpr = np.concatenate([[0.0], fp / fp[-1]])
    return float(np.trapezoid(tpr, fpr))


def average_precision_from_counts(counts: ThresholdCounts) -> float:
    """AP as scikit-learn defines it: sum over thresholds of (R_n - R_{n-1}) * P_n."""
    tp, fp = counts.cumulative()
    if tp[-1] == 0:
        return float("nan")
    keep = (tp + fp) > 0
    tp, fp = tp[keep], fp[keep]
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def max_f1_from_counts(counts: ThresholdCounts) -> float:
    tp, fp = counts.cumulative()
    if tp[-1] == 0:
        return float("nan")
    fn = tp[-1] - tp
    denom = 2 * tp + fp + fn
    return float(np.max(np.divide(2 * tp, denom, out=np.zeros(tp.shape), where=denom > 0)))


def bin_scores(scores: np.ndarray, low: float, high: float, bins: int) -> np.ndarray:
    """Equal-width bin index of every score in [low, high] (inclusive of both ends)."""
    if high <= low:
        return np.zeros(scores.shape, np.int64)
    index = ((scores - low) * (bins / (high - low))).astype(np.int64)
    return np.clip(index, 0, bins - 1)
