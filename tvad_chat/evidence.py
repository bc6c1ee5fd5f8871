"""From AHD heatmaps to what a person reads: frame scores, a yes/no, boxes, tracks and a timeline.

Conventions (documented because every number in the UI comes from here):
- A temporal patch covers 2 sampled frames; both frames get its heatmap.
- A frame's score is the highest abnormal probability on its heatmap.
- Judgement (threshold-free): "yes" when, at the strongest patch of the clip, the abnormal
  channel beats the normal one (p_abnormal > p_normal, i.e. > 0.5); its score is that maximum.
- Boxes: 8-connected components where the upsampled heatmap's abnormal channel beats the
  normal one, each scored by its peak.
- Tracks: boxes of consecutive sampled frames are associated by a Hungarian assignment on
  (1 - IoU) + centre distance / frame diagonal, rejected beyond ``max_centre_jump``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

TEMPORAL_PATCH = 2
EDGE_FRACTION = 0.08  # a box within 8% of a border touches that side (entry/exit)
STATIONARY_FRACTION = 0.05  # centre moves less than 5% of the diagonal: stationary
# Speed in box heights per second (a walking person covers about one body height per second).
SPEED_CLASSES = ((0.35, "slow"), (1.6, "normal"), (float("inf"), "fast"))


@dataclass
class Box:
    frame: int  # position in the clip's sampled frames
    xyxy: tuple[float, float, float, float]  # pixels of the display frame
    score: float


@dataclass
class Track:
    id: int
    frames: list[int] = field(default_factory=list)  # sampled-frame positions
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    @property
    def score(self) -> float:
        return float(max(self.scores)) if self.scores else 0.0


@dataclass
class TimelineEntry:
    track_id: int
    first_frame: int  # source frame index
    last_frame: int
    start_s: float
    end_s: float
    entry_side: str  # left | right | top | bottom | inside
    exit_side: str
    direction: str  # "left to right", "towards the camera", "stationary" ...
    speed_class: str  # stationary | slow | normal | fast
    summary: str


@dataclass
class Evidence:
    frame_scores: np.ndarray  # (T,) per sampled frame
    judgement: bool
    score: float
    boxes: list[list[Box]]  # per sampled frame
    tracks: list[Track]
    timeline: list[TimelineEntry]

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame_scores": [round(float(s), 4) for s in self.frame_scores],
            "judgement": "yes" if self.judgement else "no",
            "score": round(float(self.score), 4),
            "tracks": [{"id": t.id, "frames": t.frames, "boxes": [[round(v, 1) for v in b] for b in t.boxes],
                        "scores": [round(s, 4) for s in t.scores]} for t in self.tracks],
            "timeline": [vars(e) for e in self.timeline],
        }


def frame_heatmaps(heatmaps: np.ndarray, num_frames: int) -> np.ndarray:
    """(T', H', W') per temporal patch -> (T, H', W') per sampled frame."""
    per_frame = np.repeat(np.asarray(heatmaps, dtype=np.float32), TEMPORAL_PATCH, axis=0)
    if per_frame.shape[0] < num_frames:  # more frames than patches cover: hold the last map
        pad = np.repeat(per_frame[-1:], num_frames - per_frame.shape[0], axis=0)
        per_frame = np.concatenate([per_frame, pad])
    return per_frame[:num_frames]


def upsample_heatmaps(heatmaps: np.ndarray, num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """Bilinear per-frame heatmaps at display size (width, height): (T, H, W) float32 in 0..1."""
    width, height = size
    grids = frame_heatmaps(heatmaps, num_frames)
    out = np.empty((num_frames, height, width), dtype=np.float32)
    for i, grid in enumerate(grids):
        out[i] = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)


def judge(heatmaps: np.ndarray) -> tuple[bool, float]:
    """Threshold-free yes/no: the abnormal channel beats the normal one at the strongest patch."""
    peak = float(np.max(heatmaps)) if np.size(heatmaps) else 0.0
    return peak > 0.5, peak


def detect_boxes(heatmap: np.ndarray, frame: int, size: tuple[int, int]) -> list[Box]:
    """Boxes (display pixels) of the 8-connected regions where abnormal beats normal on one grid map."""
    width, height = size
    # Work at 8x the patch grid: smooth enough for bilinear shapes, cheap for any frame size.
    grid_h, grid_w = heatmap.shape
    work_w, work_h = grid_w * 8, grid_h * 8
    fine = cv2.resize(heatmap.astype(np.float32), (work_w, work_h), interpolation=cv2.INTER_LINEAR)
    labels, count = ndimage.label(fine > 0.5, structure=np.ones((3, 3), dtype=bool))
    boxes = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        ys, xs = region
        peak = float(fine[region][labels[region] == index].max())
        sx, sy = width / work_w, height / work_h
        boxes.append(Box(frame, (xs.start * sx, ys.start * sy, xs.stop * sx, ys.stop * sy), peak))
    boxes.sort(key=lambda b: -b.score)
    return boxes


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre(box: tuple[float, ...]) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def link_tracks(boxes_per_frame: list[list[Box]], size: tuple[int, int], max_centre_jump: float = 0.35,
                max_gap: int = 2) -> list[Track]:
    """Associate boxes along the sampled frames into tracks (Hungarian on IoU + centre distance)."""
    diagonal = float(np.hypot(*size))
    finished: list[Track] = []
    active: list[Track] = []
    next_id = 1
    for frame, boxes in enumerate(boxes_per_frame):
        still_active = [t for t in active if frame - t.frames[-1] <= max_gap + 1]
        finished += [t for t in active if t not in still_active]
        active = still_active
        matched_boxes: set[int] = set()
        if active and boxes:
            cost = np.zeros((len(active), len(boxes)))
            for i, track in enumerate(active):
                for j, box in enumerate(boxes):
                    jump = np.linalg.norm(_centre(track.boxes[-1]) - _centre(box.xyxy)) / diagonal
                    cost[i, j] = (1.0 - iou(track.boxes[-1], box.xyxy)) + jump + (1e6 if jump > max_centre_jump else 0)
            for i, j in zip(*linear_sum_assignment(cost)):
                if cost[i, j] < 1e6:
                    active[i].frames.append(frame)
                    active[i].boxes.append(boxes[j].xyxy)
                    active[i].scores.append(boxes[j].score)
                    matched_boxes.add(j)
        for j, box in enumerate(boxes):
            if j not in matched_boxes:
                active.append(Track(next_id, [frame], [box.xyxy], [box.score]))
                next_id += 1
    tracks = sorted(finished + active, key=lambda t: t.id)
    return tracks


def _side(box: tuple[float, ...], size: tuple[int, int]) -> str:
    """The border a box touches (the nearest one when it touches two), or "inside"."""
    width, height = size
    gaps = {"left": box[0] / width, "right": 1 - box[2] / width, "top": box[1] / height,
            "bottom": 1 - box[3] / height}
    side, gap = min(gaps.items(), key=lambda kv: kv[1])
    return side if gap <= EDGE_FRACTION else "inside"


def describe_motion(track: Track, times: np.ndarray, size: tuple[int, int]) -> tuple[str, str]:
    """(direction, speed class) from the first and last box centres."""
    start, end = _centre(track.boxes[0]), _centre(track.boxes[-1])
    dx, dy = (end - start) / np.array(size, dtype=float)
    if np.hypot(*(end - start)) < STATIONARY_FRACTION * np.hypot(*size):
        return "stationary", "stationary"
    if abs(dx) >= abs(dy):
        direction = "left to right" if dx > 0 else "right to left"
    else:  # down the image is towards a typical elevated camera
        direction = "towards the camera" if dy > 0 else "away from the camera"
    duration = max(float(times[track.frames[-1]] - times[track.frames[0]]), 1e-6)
    heights = np.array([b[3] - b[1] for b in track.boxes])
    speed = np.hypot(*(end - start)) / duration / max(float(heights.mean()), 1.0)
    speed_class = next(name for limit, name in SPEED_CLASSES if speed < limit)
    return direction, speed_class


def build_timeline(tracks: list[Track], clip: Any) -> list[TimelineEntry]:
    size = tuple(int(v) for v in (clip.frames.shape[2], clip.frames.shape[1]))
    times, indices = np.asarray(clip.timestamps), np.asarray(clip.frame_indices)
    entries = []
    for track in tracks:
        direction, speed = describe_motion(track, times, size)
        entry_side, exit_side = _side(track.boxes[0], size), _side(track.boxes[-1], size)
        first, last = track.frames[0], track.frames[-1]
        enters = "already in view" if entry_side == "inside" else f"entering from the {entry_side}"
        leaves = "stays in view" if exit_side == "inside" else f"leaves on the {exit_side}"
        moves = "stays in place" if direction == "stationary" else f"moves {direction} at {speed} speed"
        summary = (f"Target {track.id} appears at {times[first]:.1f} s (frame {int(indices[first])}), {enters}, "
                   f"{moves}, and {leaves} by {times[last]:.1f} s (frame {int(indices[last])}).")
        entries.append(TimelineEntry(track.id, int(indices[first]), int(indices[last]), float(times[first]),
                                     float(times[last]), entry_side, exit_side, direction, speed, summary))
    return entries


def analyze_heatmaps(heatmaps: np.ndarray, class_probs: np.ndarray | None, clip: Any,
                     min_track_frames: int = 1) -> Evidence:
    """Everything the UI shows about an analysis, from the AHD output and the sampled clip."""
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if class_probs is not None:  # the abnormal channel of the class probabilities is the heatmap
        heatmaps = np.asarray(class_probs, dtype=np.float32)[:, 1]
    num_frames = int(clip.frames.shape[0])
    size = (int(clip.frames.shape[2]), int(clip.frames.shape[1]))
    per_frame = frame_heatmaps(heatmaps, num_frames)
    frame_scores = per_frame.reshape(num_frames, -1).max(axis=1)
    judgement, score = judge(heatmaps)
    boxes = [detect_boxes(grid, i, size) for i, grid in enumerate(per_frame)]
    tracks = [t for t in link_tracks(boxes, size) if len(t.frames) >= min_track_frames]
    return Evidence(frame_scores, judgement, score, boxes, tracks, build_timeline(tracks, clip))


def render_overlay(frames: np.ndarray, heatmaps: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a JET-coloured heatmap (T, H, W in 0..1, display size) over RGB frames; uint8 (T, H, W, 3)."""
    out = np.empty_like(frames)
    for i, (frame, heat) in enumerate(zip(frames, heatmaps)):
        colour = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
        weight = (alpha * np.clip(heat, 0, 1))[..., None]
        out[i] = (frame * (1 - weight) + colour * weight).astype(np.uint8)
    return out
