"""From measured objects to scored, tracked boxes and frame scores (one path for calibration and analysis).

- Object score: the mean distance, in standardised feature units, to the ``neighbours`` nearest objects of
  the camera's normal footage (scipy's cKDTree: exact, and light per query at a few objects per frame). 0 = exactly like something seen before.
- Tracks: the one tracker (tvad_chat.tracking) links object boxes frame to frame; a track survives
  ``max_gap`` frames without a box (brief occlusion).
- Box score: the mean object score over the track's last ``track_window`` boxes (one odd frame of flow
  noise does not make an alarm; a cyclist stays anomalous while it is in view), but never more than the
  best of its last two object scores (a track id handed to a walker does not hand on the anomaly's score).
- Merges and splits: a new track whose first box overlaps a recent track's last box by at least
  ``INHERIT_OVERLAP`` of the smaller box continues that track's score history (a track that broke when a
  cart merged with the walkers beside it keeps its evidence).
- Robust filter (after TAO): a box counts once its track has boxes in at least ``min_hits`` of the last
  ``hit_window`` frames; boxes of younger tracks are kept in the report with score 0 for the heat.
- Frame score: the highest box score of the frame (0 with no box), then a Gaussian over time with
  ``smooth_sigma_s`` seconds (scipy.ndimage.gaussian_filter1d, edges held).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial import cKDTree

from tvad_chat.errors import ConfigError
from tvad_chat.tracking import Tracker, TrackerConfig

INHERIT_OVERLAP = 0.5


@dataclass
class ScoringConfig:
    neighbours: int = 2
    track_window: int = 5
    min_hits: int = 3
    hit_window: int = 5
    max_gap: int = 5  # frames
    max_jump: float = 1.0  # box sizes per frame
    smooth_sigma_s: float = 0.4

    def __post_init__(self) -> None:
        if self.neighbours < 1 or self.track_window < 1 or not 1 <= self.min_hits <= self.hit_window:
            raise ConfigError("scoring needs neighbours >= 1, track_window >= 1 and 1 <= min_hits <= hit_window")

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def judging_span(exclude_s: float) -> float:
    """Seconds a clip's objects must be seen over for the clip to be scored against itself with neighbours
    ``exclude_s`` away or more: then every object could have one, on one side or the other."""
    return 2 * exclude_s


def judges_itself(times: np.ndarray, exclude_s: float) -> bool:
    """Whether a clip whose objects were seen at ``times`` (seconds) can be scored against itself."""
    return len(times) > 0 and float(np.ptp(times)) >= judging_span(exclude_s)


class Density:
    """How far an object is from the normal objects of a camera.

    With ``times`` (seconds of each normal object in the same clip), an object is compared only with the clip's
    objects at least ``exclude_s`` away in time: that is how a clip is scored against itself when no profile fits
    (an object must not be its own, or its own track's, nearest neighbour). An object with none that far is not
    judged (score 0), and objects seen over less than twice ``exclude_s`` are none of them judged: not every one
    could be compared, and a clip judged by its first and last seconds alone flags what happens there (6 s
    windows of normal Ped2 footage: 11 of 16 raised an event).
    """

    def __init__(self, normal: np.ndarray, scales: np.ndarray, neighbours: int, times: np.ndarray | None = None,
                 exclude_s: float = 0.0) -> None:
        if len(normal) <= neighbours:
            raise ConfigError(f"the density model needs more than {neighbours} normal objects, got {len(normal)}")
        self.scales = np.asarray(scales, np.float32)
        self.neighbours = neighbours
        self.times = None if times is None else np.asarray(times, np.float64)
        self.exclude_s = exclude_s
        self.judges = self.times is None or judges_itself(self.times, exclude_s)
        self._index = cKDTree(np.asarray(normal, np.float64) / self.scales)

    def score(self, feats: np.ndarray, time: float | None = None) -> np.ndarray:
        if len(feats) == 0:
            return np.zeros(0, np.float32)
        query = np.asarray(feats, np.float64) / self.scales
        if self.times is None or time is None:
            distances, _ = self._index.query(query, k=self.neighbours)
            return distances.reshape(len(query), -1).mean(axis=1).astype(np.float32)
        out = np.zeros(len(query), np.float32)  # not judged: nothing far enough away to compare with
        if not self.judges:
            return out
        allowed = np.abs(self.times - time) >= self.exclude_s
        if not allowed.any():
            return out
        count = min(len(self.times), self.neighbours + int(np.count_nonzero(~allowed)))
        distances, found = self._index.query(query, k=count)
        distances, found = distances.reshape(len(query), -1), found.reshape(len(query), -1)
        for i in range(len(query)):
            kept = distances[i][allowed[found[i]]][:self.neighbours]
            if len(kept):
                out[i] = kept.mean()
        return out


@dataclass
class ScoredBox:
    box: tuple[int, int, int, int]  # working pixels
    score: float  # track-smoothed; 0 until the robust filter admits the track
    track_id: int
    object_index: int  # position among the frame's (joined) objects (for masks and features)


class BoxScorer:
    """Streaming: per frame, object boxes and scores in, tracked and smoothed boxes out."""

    def __init__(self, config: ScoringConfig) -> None:
        self.config = config
        self._tracker = Tracker(TrackerConfig(max_gap=config.max_gap, max_jump=config.max_jump))
        self._scores: dict[int, deque[float]] = {}
        self._seen: dict[int, deque[int]] = {}
        self._last: dict[int, tuple[int, tuple[int, int, int, int]]] = {}  # track id -> (step, box)

    def push(self, step: int, boxes: list[tuple[int, int, int, int]], scores: np.ndarray) -> list[ScoredBox]:
        cfg = self.config
        ids = self._tracker.update(step, boxes)
        for track_id, (last_step, _) in list(self._last.items()):  # bounded memory over long streams
            if step - last_step > cfg.max_gap + 1:
                for table in (self._scores, self._seen, self._last):
                    table.pop(track_id, None)
        self._tracker.pop_finished()
        out = []
        for j, (box, track_id) in enumerate(zip(boxes, ids, strict=True)):
            if track_id not in self._scores:
                self._inherit(track_id, box)
            history = self._scores.setdefault(track_id, deque(maxlen=cfg.track_window))
            history.append(float(scores[j]))
            seen = self._seen.setdefault(track_id, deque(maxlen=cfg.hit_window))
            seen.append(step)
            self._last[track_id] = (step, box)
            hits = sum(1 for s in seen if step - s < cfg.hit_window)
            # sustained (the window's mean) and current (the last two frames' best): a walker that inherits an
            # anomaly's track id where their paths cross does not carry its score on
            sustained, current = float(np.mean(history)), max(list(history)[-2:])
            score = min(sustained, current) if hits >= cfg.min_hits else 0.0
            out.append(ScoredBox(box, score, track_id, j))
        return out


    def _inherit(self, track_id: int, box: tuple[int, int, int, int]) -> None:
        """A new track that mostly covers, or is mostly covered by, a recent track's last box continues its
        history: objects that merge (a cart and the people beside it) or split must not start from zero."""
        best, best_overlap = None, INHERIT_OVERLAP
        for other, (_, last) in self._last.items():
            if other == track_id:
                continue
            overlap = _overlap_of_smaller(box, last)
            if overlap >= best_overlap:
                best, best_overlap = other, overlap
        if best is not None:
            self._scores[track_id] = deque(self._scores[best], maxlen=self.config.track_window)
            self._seen[track_id] = deque(self._seen[best], maxlen=self.config.hit_window)


def _overlap_of_smaller(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 0.0


def smooth_frame_scores(raw: np.ndarray, fps: float, sigma_s: float) -> np.ndarray:
    """Gaussian smoothing of per-frame scores over time (sigma in seconds at the analysed rate)."""
    raw = np.asarray(raw, np.float64)
    sigma = sigma_s * fps
    if len(raw) == 0 or sigma < 0.3:
        return raw.astype(np.float32)
    return gaussian_filter1d(raw, sigma, mode="nearest").astype(np.float32)
