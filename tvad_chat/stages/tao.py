"""TAO's prompt choice ("Track Any Anomalous Object"): which boxes prompt the mask propagation, where and how often.

- Anomalous boxes: a track's boxes whose score is above the threshold (the most sensitive operating point, so the
  masks serve every point's events).
- Robust filter: a box counts when boxes overlapping it (IoU > ``ROBUST_IOU``) appear in at least
  ``ROBUST_MIN_FRAMES`` of the ``ROBUST_WINDOW`` neighbouring frames centred on it (its own frame included); a box
  flagged in one or two frames alone is noise.
- Merge: counted boxes of one frame that overlap with IoU > ``MERGE_IOU`` are one object: their union box, under the
  track id of the highest-scoring one.
- Re-prompting: an object is prompted with its counted box at its first counted frame and again every
  ``REPROMPT_EVERY`` analysed frames (the counted box nearest after that), so the propagation is corrected as the
  object changes; between and around the prompts the masks are propagated forward and backward.
- Segments: objects whose tracks overlap in time share one propagation over the span of their tracks, cut into
  windows of at most ``MAX_SEGMENT_FRAMES`` analysed frames (the frames of a window are held in memory at the mask
  model's input size).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from tvad_chat.motion import pairwise_iou
from tvad_chat.scene.analyze import SceneAnalysis

log = logging.getLogger(__name__)

ROBUST_IOU = 0.2
ROBUST_WINDOW = 5  # frames, centred on the box
ROBUST_MIN_FRAMES = 3
MERGE_IOU = 0.3
REPROMPT_EVERY = 10  # analysed frames between two prompts of one object
MAX_SEGMENT_FRAMES = 120  # analysed frames propagated together
MAX_TRACKS = 16  # anomalous tracks given to the stages, the highest-scoring first


@dataclass(frozen=True)
class TrackBox:
    position: int  # place in analysis.frames
    index: int  # source frame index
    xyxy: tuple[float, float, float, float]  # display pixels
    score: float
    track_id: int


@dataclass(frozen=True)
class Prompt:
    position: int
    object_id: int  # the track id of the prompted object
    xyxy: tuple[float, float, float, float]


@dataclass
class Segment:
    """Consecutive analysed frames propagated together, with the prompts that fall inside them."""

    positions: list[int]
    prompts: list[Prompt] = field(default_factory=list)

    @property
    def objects(self) -> list[int]:
        return sorted({p.object_id for p in self.prompts})


def lowest_threshold(analysis: SceneAnalysis) -> float:
    """The threshold of the most sensitive operating point: its anomalous tracks include every point's."""
    return min(analysis.thresholds.values())


def track_boxes(analysis: SceneAnalysis) -> dict[int, list[TrackBox]]:
    """Every kept box of the analysis, by track id, in time order."""
    tracks: dict[int, list[TrackBox]] = defaultdict(list)
    for position, record in enumerate(analysis.frames):
        for b in record.boxes:
            tracks[b.track_id].append(TrackBox(position, record.index, tuple(float(v) for v in b.xyxy),
                                               float(b.score), b.track_id))
    return dict(tracks)


def anomalous_tracks(tracks: dict[int, list[TrackBox]], threshold: float,
                     limit: int = MAX_TRACKS) -> dict[int, list[TrackBox]]:
    """The tracks with a box above ``threshold`` (at most ``limit``, the highest peak scores first)."""
    peaks = {t: max(b.score for b in boxes) for t, boxes in tracks.items()}
    chosen = sorted((t for t, peak in peaks.items() if peak > threshold), key=lambda t: -peaks[t])
    if len(chosen) > limit:
        log.info("%d anomalous tracks; the stages take the %d highest-scoring", len(chosen), limit)
    return {t: tracks[t] for t in sorted(chosen[:limit])}


def robust_filter(boxes: list[TrackBox]) -> list[TrackBox]:
    """The boxes that overlapping boxes confirm in at least ROBUST_MIN_FRAMES of the ROBUST_WINDOW frames around
    them (their own frame counts)."""
    by_position: dict[int, np.ndarray] = {}
    for position in {b.position for b in boxes}:
        by_position[position] = np.array([b.xyxy for b in boxes if b.position == position], np.float64)
    half = ROBUST_WINDOW // 2
    kept = []
    for b in boxes:
        seen = sum(1 for q in range(b.position - half, b.position + half + 1)
                   if q in by_position and bool((pairwise_iou(by_position[q], np.array(b.xyxy)) > ROBUST_IOU).any()))
        if seen >= ROBUST_MIN_FRAMES:
            kept.append(b)
    return kept


def merge_overlapping(boxes: list[TrackBox]) -> list[TrackBox]:
    """Per frame, boxes overlapping with IoU > MERGE_IOU (transitively) become their union box under the track id
    of the highest-scoring one."""
    out = []
    for position in sorted({b.position for b in boxes}):
        group = sorted((b for b in boxes if b.position == position), key=lambda b: -b.score)
        merged: list[list[TrackBox]] = []
        for b in group:
            joined = [m for m in merged if any(float(pairwise_iou(b.xyxy, o.xyxy)) > MERGE_IOU for o in m)]
            for m in joined:
                merged.remove(m)
            merged.append([x for m in joined for x in m] + [b])
        for members in merged:
            top = max(members, key=lambda b: b.score)
            xs = np.array([m.xyxy for m in members])
            union = (float(xs[:, 0].min()), float(xs[:, 1].min()), float(xs[:, 2].max()), float(xs[:, 3].max()))
            out.append(TrackBox(position, top.index, union, top.score, top.track_id))
    return out


def schedule_prompts(boxes: list[TrackBox]) -> list[Prompt]:
    """Per object: its first counted box, then the first counted box at least REPROMPT_EVERY frames after the last
    prompt."""
    prompts = []
    for object_id in sorted({b.track_id for b in boxes}):
        last = None
        for b in sorted((b for b in boxes if b.track_id == object_id), key=lambda b: b.position):
            if last is None or b.position - last >= REPROMPT_EVERY:
                prompts.append(Prompt(b.position, object_id, b.xyxy))
                last = b.position
    return prompts


def plan_segments(tracks: dict[int, list[TrackBox]], threshold: float) -> list[Segment]:
    """The propagation windows of the anomalous ``tracks`` and their prompts (TAO's choice, above)."""
    counted = merge_overlapping(robust_filter([b for boxes in tracks.values() for b in boxes if b.score > threshold]))
    prompts = schedule_prompts(counted)
    spans = {}
    for object_id in {p.object_id for p in prompts}:
        positions = [b.position for b in tracks[object_id]] + [p.position for p in prompts if p.object_id == object_id]
        spans[object_id] = (min(positions), max(positions))
    segments: list[Segment] = []
    for start, end in _joined_spans(list(spans.values())):
        for first in range(start, end + 1, MAX_SEGMENT_FRAMES):
            positions = list(range(first, min(end, first + MAX_SEGMENT_FRAMES - 1) + 1))
            inside = [p for p in prompts if positions[0] <= p.position <= positions[-1]]
            if inside:
                segments.append(Segment(positions, inside))
    return segments


def _joined_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching (start, end) spans joined."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
