"""From AHD heatmaps to what a person reads: frame scores, a yes/no, boxes, tracks and a timeline.

Conventions (documented because every number the UI shows comes from here):

- Time. The AHD gives one map per temporal patch; a temporal patch covers ``TEMPORAL_PATCH`` (2)
  consecutive sampled frames, so sampled frame ``f`` takes the map of patch ``f // 2``. With an odd
  frame count the last patch covers one real frame (the processor repeats the last frame to fill it).
- Frame score. The highest abnormal probability on the frame's map (0..1).
- Judgement (threshold-free). "yes" exactly when, at the strongest patch of the clip (the patch with
  the largest abnormal probability), the abnormal channel beats the normal one: p_abnormal >
  p_normal. With the class probabilities this is read from both channels; from the heatmap alone it
  is p_abnormal > 1 - p_abnormal, i.e. > 0.5 (the two channels are a softmax). The judgement score
  is that strongest abnormal probability, the evidence the decision rests on.
- Display heatmaps. Each patch map is resized bilinearly (cv2, pixel centres aligned, edges held)
  to the frame size.
- Boxes. 8-connected components (scipy.ndimage) of the bilinearly upsampled map where abnormal
  beats normal (> 0.5), computed per temporal patch at ``work_scale`` x the patch grid and scaled to
  display pixels; each box is scored by its peak probability.
- Tracks. Boxes of consecutive temporal patches are linked by a Hungarian assignment
  (scipy.optimize.linear_sum_assignment) on cost = (1 - IoU) + centre distance / frame diagonal,
  both measured against the track's box moved by its last velocity (a constant-velocity
  prediction); pairs farther apart than ``max_jump`` frame diagonals are never linked, and a track
  survives ``max_gap`` patches without a box. Every track lists the sampled frames of its patches.
- Timeline. Entry (exit) side: the image border the first (last) box touches, within
  ``edge_patches`` patch widths; when it touches two, the one the motion comes from (goes to);
  otherwise "inside". Direction: the net displacement of the box centre, in 8 sectors of 45°,
  said as "left to right" / "right to left" horizontally and "towards the camera" (down the image,
  as for an elevated camera) / "away from the camera" vertically, both for diagonal moves;
  "stationary" below ``stationary_fraction`` of the frame diagonal. Speed: path length of the
  centre per second, in frame diagonals per second, classed by ``speed_classes``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from tvad_chat.errors import ConfigError

log = logging.getLogger(__name__)

TEMPORAL_PATCH = 2
SIDES = ("left", "right", "top", "bottom")
_SIDE_NORMALS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "top": (0.0, -1.0), "bottom": (0.0, 1.0)}
_INF = 1e9


@dataclass
class EvidenceConfig:
    work_scale: int = 8  # boxes are found on the map upsampled to this many pixels per patch
    max_jump: float = 0.5  # frame diagonals a target may move per temporal patch beyond its prediction
    max_gap: int = 1  # temporal patches a track may miss before it ends
    min_track_patches: int = 1  # shorter tracks are dropped
    edge_patches: float = 0.75  # a box within this many patch widths of a border touches it
    stationary_fraction: float = 0.05  # net move below this fraction of the diagonal: stationary
    # frame diagonals per second: crossing the frame in more than ~25 s is slow, in less than ~5 s fast
    speed_classes: tuple[tuple[float, str], ...] = ((0.04, "slow"), (0.2, "normal"), (math.inf, "fast"))


@dataclass
class Box:
    frame: int  # position in the clip's sampled frames
    xyxy: tuple[float, float, float, float]  # pixels of the display frame
    score: float


@dataclass
class Track:
    id: int
    frames: list[int] = field(default_factory=list)  # sampled-frame positions (0-based, in the clip)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # xyxy, display pixels
    scores: list[float] = field(default_factory=list)  # peak abnormal probability inside each box

    @property
    def score(self) -> float:
        return float(max(self.scores)) if self.scores else 0.0


@dataclass
class TimelineEntry:
    track_id: int
    first_frame: int  # source frame index of the first sampled frame with the target
    last_frame: int
    start_s: float  # timestamps of those frames
    end_s: float
    entry_side: str  # left | right | top | bottom | inside
    exit_side: str
    direction: str  # "left to right", "towards the camera", "left to right, away from the camera", "stationary"
    speed_class: str  # stationary | slow | normal | fast
    speed: float  # frame diagonals per second (path length of the box centre)
    summary: str


@dataclass
class Evidence:
    frame_scores: np.ndarray  # (T,) per sampled frame, 0..1
    judgement: bool  # True = "yes, there is an anomaly"
    judgement_score: float  # the strongest abnormal probability of the clip
    tracks: list[Track]
    timeline: list[TimelineEntry]
    boxes: list[list[Box]] = field(default_factory=list)  # per sampled frame

    @property
    def score(self) -> float:
        """Alias of ``judgement_score``."""
        return self.judgement_score

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame_scores": [round(float(s), 4) for s in self.frame_scores],
            "judgement": "yes" if self.judgement else "no",
            "judgement_score": round(float(self.judgement_score), 4),
            "tracks": [{"id": t.id, "frames": list(t.frames), "boxes": [[round(v, 1) for v in b] for b in t.boxes],
                        "scores": [round(s, 4) for s in t.scores]} for t in self.tracks],
            "timeline": [asdict(e) for e in self.timeline],
        }


# --------------------------------------------------------------------------- per frame


def _as_maps(heatmaps: Any) -> np.ndarray:
    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim != 3 or 0 in maps.shape:
        raise ConfigError(f"heatmaps must be a non-empty (T', H', W') array, got shape {maps.shape}")
    return np.clip(np.nan_to_num(maps, nan=0.0), 0.0, 1.0)


def patch_of_frame(num_frames: int, num_patches: int) -> np.ndarray:
    """Temporal patch of every sampled frame: f // 2, held at the last patch if the maps run short."""
    expected = -(-num_frames // TEMPORAL_PATCH)
    if num_patches != expected:
        log.warning("%d heatmaps for %d frames (expected %d): frames are mapped by position", num_patches,
                    num_frames, expected)
    return np.minimum(np.arange(num_frames) // TEMPORAL_PATCH, num_patches - 1)


def frame_heatmaps(heatmaps: np.ndarray, num_frames: int) -> np.ndarray:
    """(T', H', W') per temporal patch -> (T, H', W') per sampled frame."""
    maps = _as_maps(heatmaps)
    return maps[patch_of_frame(num_frames, maps.shape[0])]


def upsample_heatmaps(heatmaps: np.ndarray, num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """Per-frame heatmaps at display size (width, height), bilinear: (T, H, W) float32 in 0..1."""
    width, height = int(size[0]), int(size[1])
    maps = _as_maps(heatmaps)
    patches = [cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in maps]
    out = np.stack(patches)[patch_of_frame(num_frames, maps.shape[0])]
    return np.clip(out, 0.0, 1.0)


def judge(heatmaps: np.ndarray, class_probs: np.ndarray | None = None) -> tuple[bool, float]:
    """Threshold-free yes/no: does the abnormal channel beat the normal one at the strongest patch?"""
    maps = _as_maps(heatmaps)
    flat = int(np.argmax(maps))
    peak = float(maps.reshape(-1)[flat])
    if class_probs is not None:
        probs = np.asarray(class_probs, dtype=np.float32)
        t, y, x = np.unravel_index(flat, maps.shape)
        return bool(probs[t, 1, y, x] > probs[t, 0, y, x]), peak
    return peak > 0.5, peak


# --------------------------------------------------------------------------- boxes and tracks


def detect_boxes(heatmap: np.ndarray, frame: int, size: tuple[int, int], work_scale: int = 8) -> list[Box]:
    """Boxes (display pixels) of the 8-connected regions where abnormal beats normal on one grid map."""
    width, height = size
    grid_h, grid_w = heatmap.shape
    work_w, work_h = grid_w * work_scale, grid_h * work_scale
    # Same bilinear interpolation as the display maps, at a resolution independent of the frame size.
    fine = cv2.resize(np.asarray(heatmap, np.float32), (work_w, work_h), interpolation=cv2.INTER_LINEAR)
    labels, _ = ndimage.label(fine > 0.5, structure=np.ones((3, 3), dtype=bool))
    sx, sy = width / work_w, height / work_h
    boxes = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        ys, xs = region
        peak = float(fine[region][labels[region] == index].max())
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


@dataclass
class _PatchTrack:
    id: int
    patches: list[int]
    boxes: list[Box]

    def predicted(self, patch: int) -> tuple[float, float, float, float]:
        """The last box moved by the last per-patch velocity (constant-velocity prediction)."""
        last = self.boxes[-1].xyxy
        if len(self.boxes) < 2:
            return last
        step = (_centre(last) - _centre(self.boxes[-2].xyxy)) / (self.patches[-1] - self.patches[-2])
        dx, dy = step * (patch - self.patches[-1])
        return (last[0] + dx, last[1] + dy, last[2] + dx, last[3] + dy)


def link_patch_boxes(boxes_per_patch: list[list[Box]], size: tuple[int, int],
                     config: EvidenceConfig | None = None) -> list[_PatchTrack]:
    """Associate boxes of consecutive temporal patches (Hungarian on IoU + centre distance)."""
    cfg = config or EvidenceConfig()
    diagonal = float(np.hypot(*size))
    active: list[_PatchTrack] = []
    done: list[_PatchTrack] = []
    next_id = 1
    for patch, boxes in enumerate(boxes_per_patch):
        alive = [t for t in active if patch - t.patches[-1] <= cfg.max_gap + 1]
        done += [t for t in active if patch - t.patches[-1] > cfg.max_gap + 1]
        active = alive
        matched: set[int] = set()
        if active and boxes:
            cost = np.full((len(active), len(boxes)), _INF)
            for i, track in enumerate(active):
                guess = track.predicted(patch)
                for j, box in enumerate(boxes):
                    jump = float(np.linalg.norm(_centre(guess) - _centre(box.xyxy))) / diagonal
                    if jump <= cfg.max_jump:
                        cost[i, j] = (1.0 - iou(guess, box.xyxy)) + jump
            for i, j in zip(*linear_sum_assignment(cost), strict=True):
                if cost[i, j] < _INF:
                    active[i].patches.append(patch)
                    active[i].boxes.append(boxes[j])
                    matched.add(j)
        for j, box in enumerate(boxes):
            if j not in matched:
                active.append(_PatchTrack(next_id, [patch], [box]))
                next_id += 1
    return sorted(done + active, key=lambda t: t.id)


def _to_frame_track(track: _PatchTrack, new_id: int, patch_frames: list[list[int]]) -> Track:
    out = Track(new_id)
    for patch, box in zip(track.patches, track.boxes, strict=True):
        for frame in patch_frames[patch]:
            out.frames.append(frame)
            out.boxes.append(tuple(float(v) for v in box.xyxy))
            out.scores.append(box.score)
    return out


# --------------------------------------------------------------------------- timeline


def touching_side(box: tuple[float, ...], size: tuple[int, int], margin: tuple[float, float],
                  motion: np.ndarray, entering: bool) -> str:
    """The border a box touches (within ``margin`` pixels in x, y), or "inside".

    When it touches two (a corner), the side the motion comes from (entering) or goes to (leaving).
    """
    width, height = size
    mx, my = margin
    sides = [s for s, hit in zip(SIDES, (box[0] <= mx, box[2] >= width - mx, box[1] <= my, box[3] >= height - my),
                                 strict=True) if hit]
    if not sides:
        return "inside"
    if len(sides) == 1 or not np.any(motion):
        return sides[0]
    sign = -1.0 if entering else 1.0
    return max(sides, key=lambda s: sign * float(np.dot(_SIDE_NORMALS[s], motion)))


def direction_words(dx: float, dy: float) -> str:
    """8-sector direction of an image-space move (y down) in words."""
    angle = math.degrees(math.atan2(dy, dx)) % 360.0  # 0 = right, 90 = down
    sector = int(((angle + 22.5) % 360.0) // 45.0)
    horizontal = {0: "left to right", 1: "left to right", 7: "left to right", 3: "right to left", 4: "right to left",
                  5: "right to left"}.get(sector)
    vertical = {1: "towards the camera", 2: "towards the camera", 3: "towards the camera",
                5: "away from the camera", 6: "away from the camera", 7: "away from the camera"}.get(sector)
    return ", ".join(w for w in (horizontal, vertical) if w)


def _motion(track: Track, times: np.ndarray, size: tuple[int, int], cfg: EvidenceConfig) -> tuple[str, str, float]:
    """(direction, speed class, speed in diagonals per second) of a track."""
    # one point per distinct box: the frames of one temporal patch share a box
    points_arr = np.array([_centre(b) for i, b in enumerate(track.boxes) if i == 0 or b != track.boxes[i - 1]])
    diagonal = float(np.hypot(*size))
    first_t, last_t = float(times[track.frames[0]]), float(times[track.frames[-1]])
    net = points_arr[-1] - points_arr[0]
    path = float(np.sum(np.linalg.norm(np.diff(points_arr, axis=0), axis=1))) if len(points_arr) > 1 else 0.0
    speed = path / diagonal / (last_t - first_t) if last_t > first_t else 0.0
    if np.linalg.norm(net) < cfg.stationary_fraction * diagonal:
        return "stationary", "stationary", speed
    speed_class = next(name for limit, name in cfg.speed_classes if speed < limit)
    return direction_words(float(net[0]), float(net[1])), speed_class, speed


def build_timeline(tracks: list[Track], clip: Any, grid: tuple[int, int],
                   config: EvidenceConfig | None = None) -> list[TimelineEntry]:
    """One entry per track: when, where it enters and leaves, which way and how fast it moves."""
    cfg = config or EvidenceConfig()
    size = (int(clip.frames.shape[2]), int(clip.frames.shape[1]))
    margin = (cfg.edge_patches * size[0] / grid[1], cfg.edge_patches * size[1] / grid[0])
    times, indices = np.asarray(clip.timestamps, dtype=float), np.asarray(clip.frame_indices)
    entries = []
    for track in tracks:
        direction, speed_class, speed = _motion(track, times, size, cfg)
        centres = np.array([_centre(b) for b in track.boxes])
        later = next((c for c in centres if not np.allclose(c, centres[0])), centres[0])
        earlier = next((c for c in centres[::-1] if not np.allclose(c, centres[-1])), centres[-1])
        entry = touching_side(track.boxes[0], size, margin, later - centres[0], entering=True)
        exit_ = touching_side(track.boxes[-1], size, margin, centres[-1] - earlier, entering=False)
        first, last = track.frames[0], track.frames[-1]
        entries.append(TimelineEntry(
            track_id=track.id, first_frame=int(indices[first]), last_frame=int(indices[last]),
            start_s=float(times[first]), end_s=float(times[last]), entry_side=entry, exit_side=exit_,
            direction=direction, speed_class=speed_class, speed=round(speed, 4),
            summary=_summary(track.id, entry, exit_, direction, speed_class, float(times[first]), float(times[last]),
                             int(indices[first]), int(indices[last]), first == 0, last == len(times) - 1)))
    return entries


def _summary(track_id: int, entry: str, exit_: str, direction: str, speed_class: str, start: float, end: float,
             first_index: int, last_index: int, at_start: bool, at_end: bool) -> str:
    if entry != "inside":
        enters = f"enters from the {entry} at {start:.1f} s (frame {first_index})"
    elif at_start:
        enters = f"is already in view at {start:.1f} s (frame {first_index})"
    else:
        enters = f"appears inside the frame at {start:.1f} s (frame {first_index})"
    moves = "stays in place" if direction == "stationary" else f"moves {direction} at {speed_class} speed"
    if exit_ != "inside":
        leaves = f"leaves on the {exit_} at {end:.1f} s (frame {last_index})"
    elif at_end:
        leaves = f"is still in view at {end:.1f} s (frame {last_index})"
    else:
        leaves = f"disappears inside the frame at {end:.1f} s (frame {last_index})"
    return f"Target {track_id} {enters}, {moves}, and {leaves}."


# --------------------------------------------------------------------------- all together


def analyze_heatmaps(heatmaps: np.ndarray, class_probs: np.ndarray | None, clip: Any,
                     config: EvidenceConfig | None = None) -> Evidence:
    """Everything the UI shows about an analysis, from the AHD output and the sampled clip.

    heatmaps: (T', H', W') abnormal probabilities; class_probs: (T', 2, H', W') or None (then the
    heatmap stands for the abnormal channel); clip: a tvad_chat.video.Clip (frames, timestamps,
    frame_indices are read).
    """
    cfg = config or EvidenceConfig()
    if class_probs is not None:
        class_probs = np.asarray(class_probs, dtype=np.float32)
        if class_probs.ndim != 4 or class_probs.shape[1] != 2:
            raise ConfigError(f"class_probs must be (T', 2, H', W'), got shape {class_probs.shape}")
        heatmaps = class_probs[:, 1]
    maps = _as_maps(heatmaps)
    num_frames = int(clip.frames.shape[0])
    if num_frames == 0:
        raise ConfigError("the clip has no frames")
    size = (int(clip.frames.shape[2]), int(clip.frames.shape[1]))
    frame_patch = patch_of_frame(num_frames, maps.shape[0])
    frame_scores = maps.reshape(maps.shape[0], -1).max(axis=1)[frame_patch]
    judgement, score = judge(maps, class_probs)
    patch_frames = [np.nonzero(frame_patch == p)[0].tolist() for p in range(maps.shape[0])]
    patch_boxes = [detect_boxes(m, p, size, cfg.work_scale) for p, m in enumerate(maps)]
    boxes = [[Box(f, b.xyxy, b.score) for b in patch_boxes[frame_patch[f]]] for f in range(num_frames)]
    kept = [t for t in link_patch_boxes(patch_boxes, size, cfg)
            if len(t.patches) >= cfg.min_track_patches and any(patch_frames[p] for p in t.patches)]
    tracks = [_to_frame_track(t, n, patch_frames) for n, t in enumerate(kept, start=1)]
    timeline = build_timeline(tracks, clip, maps.shape[1:], cfg)
    log.debug("evidence: judgement=%s score=%.3f tracks=%d", judgement, score, len(tracks))
    return Evidence(frame_scores=frame_scores, judgement=judgement, judgement_score=score, tracks=tracks,
                    timeline=timeline, boxes=boxes)


def render_overlay(frames: np.ndarray, heatmaps: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a JET-coloured heatmap over RGB frames: uint8 (T, H, W, 3), frames left untouched.

    ``heatmaps`` is (T, H, W) at frame size, or the AHD's (T', H', W') patch maps (then upsampled
    with :func:`upsample_heatmaps`). Each pixel is mixed with weight ``alpha * heat``, so pixels
    with no anomaly evidence keep their colour.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    heat = np.asarray(heatmaps, dtype=np.float32)
    if heat.shape != frames.shape[:3]:
        heat = upsample_heatmaps(heat, frames.shape[0], (frames.shape[2], frames.shape[1]))
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1].astype(np.float32)
    out = np.empty_like(frames)
    for i in range(frames.shape[0]):  # per frame: bounded memory for long clips
        colour = lut[np.round(heat[i] * 255).astype(np.uint8)]
        weight = (np.float32(alpha) * heat[i])[..., None]
        blended = frames[i].astype(np.float32) * (1 - weight) + colour * weight
        out[i] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out
