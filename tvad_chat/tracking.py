"""The one tracker: links the boxes of consecutive steps into tracks.

Every part of the project that follows targets through time uses it: the evidence of AHD heatmaps
(boxes per temporal patch), the corpus timelines (instances per extracted frame) and scene-profile
analysis (objects per video frame). A "step" is whatever the caller counts in (patch, extracted frame,
video frame); steps must be fed in increasing order.

Association is a Hungarian assignment (scipy's ``linear_sum_assignment``) per step on

    cost = iou_weight * (1 - IoU(prediction, box)) + distance_weight * distance / size
           + affinity_weight * (1 - affinity(track, box))

where the prediction is the track's last box moved by its last velocity (constant velocity), distance
is between the centres of prediction and box, and size is the longer side of the larger of the track's
last box and the new box (a target entering the view, or stepping out from behind another, grows from a
sliver to its full box in a step or two; measured in the sliver's size, that looks like a jump). A pair
is never linked when the distance exceeds ``max_jump`` sizes per step since the track was last seen, when
the affinity callback returns None (for example another category), or when the cost exceeds
``max_cost``. A track that goes unseen for more than ``max_gap`` steps ends (so brief occlusions are
bridged); unmatched boxes start new tracks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from tvad_chat.errors import ConfigError
from tvad_chat.motion import iou_matrix

_FORBIDDEN = 1e9

# affinity(track, payload of the new box) -> similarity in 0..1, or None when the pair must never link
Affinity = Callable[["Track", Any], "float | None"]


@dataclass
class TrackerConfig:
    max_gap: int = 1  # steps a track may go unseen and still continue
    max_jump: float = 2.0  # centre distance from the prediction, in box sizes per step since last seen
    max_cost: float = _FORBIDDEN  # pairs costing more are not linked
    iou_weight: float = 1.0
    distance_weight: float = 1.0
    affinity_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.max_gap < 0 or self.max_jump <= 0:
            raise ConfigError(f"tracker needs max_gap >= 0 and max_jump > 0, got {self.max_gap}, {self.max_jump}")


@dataclass
class Track:
    id: int
    steps: list[int] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # xyxy
    payloads: list[Any] = field(default_factory=list)  # what the caller attached to each box

    @property
    def last_step(self) -> int:
        return self.steps[-1]

    def size(self) -> float:
        return float(_sizes(np.asarray(self.boxes[-1:]))[0])

    def predicted(self, step: int) -> np.ndarray:
        """The last box moved by the last per-step velocity of its centre."""
        last = np.asarray(self.boxes[-1], dtype=float)
        if len(self.boxes) < 2 or self.steps[-1] == self.steps[-2]:
            return last
        prev = np.asarray(self.boxes[-2], dtype=float)
        velocity = (_centres(last[None])[0] - _centres(prev[None])[0]) / (self.steps[-1] - self.steps[-2])
        dx, dy = velocity * (step - self.steps[-1])
        return last + np.array([dx, dy, dx, dy])


def _sizes(boxes: np.ndarray) -> np.ndarray:
    """Longer side (at least 1 pixel) of each box (N, 4)."""
    return np.maximum(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), 1.0)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0], axis=1)


class Tracker:
    """Online multi-target tracker; feed ``update`` step by step, collect tracks as they end.

    Memory stays bounded for streams of any length when the caller drains ``pop_finished`` now and then.
    """

    def __init__(self, config: TrackerConfig | None = None, affinity: Affinity | None = None) -> None:
        self.config = config or TrackerConfig()
        self.affinity = affinity
        self._active: list[Track] = []
        self._finished: list[Track] = []
        self._next_id = 1
        self._last_step: int | None = None

    @property
    def active(self) -> list[Track]:
        return list(self._active)

    def update(self, step: int, boxes: np.ndarray | Sequence[Sequence[float]],
               payloads: Sequence[Any] | None = None) -> list[int]:
        """Add the boxes (N, 4) seen at ``step``; returns the track id given to each box."""
        if self._last_step is not None and step <= self._last_step:
            raise ConfigError(f"tracker steps must increase: {step} after {self._last_step}")
        self._last_step = step
        cfg = self.config
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        payloads = list(payloads) if payloads is not None else [None] * len(boxes)
        if len(payloads) != len(boxes):
            raise ConfigError(f"{len(boxes)} boxes but {len(payloads)} payloads")
        alive = [t for t in self._active if step - t.last_step <= cfg.max_gap + 1]
        self._finished += [t for t in self._active if step - t.last_step > cfg.max_gap + 1]
        self._active = alive
        ids = [0] * len(boxes)
        if alive and len(boxes):
            cost = self._cost(alive, step, boxes, payloads)
            for i, j in zip(*linear_sum_assignment(cost), strict=True):
                if cost[i, j] < _FORBIDDEN and cost[i, j] <= cfg.max_cost:
                    self._extend(alive[i], step, boxes[j], payloads[j])
                    ids[j] = alive[i].id
        for j in range(len(boxes)):
            if not ids[j]:
                track = Track(self._next_id)
                self._next_id += 1
                self._extend(track, step, boxes[j], payloads[j])
                self._active.append(track)
                ids[j] = track.id
        return ids

    def _cost(self, tracks: list[Track], step: int, boxes: np.ndarray, payloads: list[Any]) -> np.ndarray:
        cfg = self.config
        predicted = np.stack([t.predicted(step) for t in tracks])
        overlap = iou_matrix(predicted, boxes)
        distance = np.linalg.norm(_centres(predicted)[:, None, :] - _centres(boxes)[None, :, :], axis=2)
        sizes = np.maximum(np.array([t.size() for t in tracks])[:, None], _sizes(boxes)[None, :])
        gaps = np.array([step - t.last_step for t in tracks], dtype=float)[:, None]
        cost = cfg.iou_weight * (1.0 - overlap) + cfg.distance_weight * distance / sizes
        cost[distance > cfg.max_jump * sizes * gaps] = _FORBIDDEN
        if self.affinity is not None:
            for i, track in enumerate(tracks):
                for j, payload in enumerate(payloads):
                    if cost[i, j] >= _FORBIDDEN:
                        continue
                    similarity = self.affinity(track, payload)
                    if similarity is None:
                        cost[i, j] = _FORBIDDEN
                    else:
                        cost[i, j] += cfg.affinity_weight * (1.0 - float(similarity))
        return cost

    @staticmethod
    def _extend(track: Track, step: int, box: np.ndarray, payload: Any) -> None:
        track.steps.append(int(step))
        track.boxes.append(tuple(float(v) for v in box))
        track.payloads.append(payload)

    def pop_finished(self) -> list[Track]:
        """Tracks that have ended since the last call (by id)."""
        done, self._finished = sorted(self._finished, key=lambda t: t.id), []
        return done

    def close(self) -> list[Track]:
        """End every track; returns all tracks not yet popped, by id."""
        self._finished += self._active
        self._active = []
        return self.pop_finished()


def track_boxes(boxes_per_step: Sequence[Sequence[Sequence[float]]], config: TrackerConfig | None = None,
                payloads_per_step: Sequence[Sequence[Any]] | None = None,
                affinity: Affinity | None = None) -> list[Track]:
    """Track a whole sequence at once (step = position in the list); every track, by id."""
    tracker = Tracker(config, affinity)
    for step, boxes in enumerate(boxes_per_step):
        tracker.update(step, boxes, payloads_per_step[step] if payloads_per_step is not None else None)
    return tracker.close()
