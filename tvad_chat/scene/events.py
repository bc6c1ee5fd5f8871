"""Events: the runs of time where a clip's frame score is above a threshold, and operating points.

An event is a run of analysed frames whose (smoothed) frame score exceeds the threshold; runs separated
by less than ``JOIN_S`` seconds are one event (a person briefly hidden is still one event). The same rule
counts false alarms on normal footage when a profile's operating points are measured, so "about 1 false
alarm per 10 minutes" means exactly "one such run per 10 minutes of normal footage".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tvad_chat.scene.profile import OperatingPoint

JOIN_S = 1.0
TARGET_RATES = (("1/min", 1.0), ("0.1/min", 0.1), ("0.01/min", 0.01))
CANDIDATES = 400  # thresholds tried when measuring operating points
UNMEASURED_STEP = 0.25  # threshold raised by this share of the highest normal score per decade beyond the footage


def footage_seconds(times: Sequence[float]) -> float:
    """How much time analysed frames at ``times`` cover: first to last, plus one frame's step."""
    times = np.asarray(times, np.float64)
    if len(times) < 2:
        return 0.0
    return float(times[-1] - times[0] + np.median(np.diff(times)))


def runs_above(scores: np.ndarray, times: np.ndarray, threshold: float, join_s: float = JOIN_S) -> list[tuple[int, int]]:
    """(first, last) positions of the runs where scores > threshold, runs closer than join_s joined."""
    above = np.asarray(scores) > threshold
    if not above.any():
        return []
    padded = np.concatenate([[False], above, [False]])
    starts = np.flatnonzero(~padded[:-1] & padded[1:])
    ends = np.flatnonzero(padded[:-1] & ~padded[1:]) - 1
    runs = [(int(starts[0]), int(ends[0]))]
    for start, end in zip(starts[1:], ends[1:], strict=True):
        if times[start] - times[runs[-1][1]] < join_s:
            runs[-1] = (runs[-1][0], int(end))
        else:
            runs.append((int(start), int(end)))
    return runs


def operating_points(series: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[OperatingPoint]:
    """Thresholds for about 1, 0.1 and 0.01 false alarms per minute on held-out normal (scores, times) series."""
    minutes = sum(footage_seconds(t) for _, t in series) / 60.0
    everything = np.concatenate([s for s, _ in series]) if series else np.zeros(1)
    top = float(everything.max()) if everything.size else 0.0
    candidates = np.unique(np.quantile(everything, np.linspace(0.5, 1.0, CANDIDATES)))

    def alarms(threshold: float) -> int:
        return sum(len(runs_above(s, t, threshold)) for s, t in series)

    points = []
    for name, rate in TARGET_RATES:
        allowed = rate * minutes
        if allowed >= 1.0:
            threshold = next((float(c) for c in candidates if alarms(float(c)) <= allowed), top)
            points.append(OperatingPoint(name, rate, threshold, alarms(threshold) / max(minutes, 1e-9), True))
        else:  # rarer than the footage can show: above every normal score, more so the rarer it is
            decades = math.log10(1.0 / max(allowed, 1e-9))
            threshold = top * (1.0 + UNMEASURED_STEP * decades) + 1e-6
            points.append(OperatingPoint(name, rate, threshold, 0.0, False))
    for a, b in zip(points, points[1:]):  # rarer alarms never get a lower threshold
        b.threshold = max(b.threshold, a.threshold)
    return points
