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
- Tracks. Boxes of consecutive temporal patches are linked by the one tracker (tvad_chat.tracking: a
  Hungarian assignment on 1 - IoU + centre distance in box sizes, both against the track's box moved
  by its last velocity); a step is a temporal patch; pairs farther than ``max_jump`` box sizes per
  patch from the prediction are never linked, and a track survives ``max_gap`` patches without a box.
  Every track lists the sampled frames of its patches.
- Timeline. Each track described by tvad_chat.motion, the vocabulary the corpus and SynthCampus use:
  one observation per temporal patch (its box, at the mean time of the patch's frames); position =
  the foot point; speed in the target's own box heights per second (motion.SPEED_UNIT, explained by
  motion.SPEED_UNIT_TEXT) classed by motion.SPEED_CLASSES; direction = the 8-way heading of the net
  move (motion.DIRECTIONS, "none" when it stays in place); entry/exit = the frame side it comes
  through, "start"/"end" when it is in view at the clip's first/last sampled frame, else "inside".
  The summary is motion.trajectory_phrasings' first wording, the corpus narratives' words.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from tvad_chat import tracking
from tvad_chat.errors import ConfigError
from tvad_chat.motion import Trajectory, describe_path, trajectory_phrasings

log = logging.getLogger(__name__)

TEMPORAL_PATCH = 2


@dataclass
class EvidenceConfig:
    work_scale: int = 8  # boxes are found on the map upsampled to this many pixels per patch
    max_jump: float = 2.0  # box sizes a target may move per temporal patch beyond its prediction
    max_gap: int = 1  # temporal patches a track may miss before it ends
    min_track_patches: int = 1  # shorter tracks are dropped


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
    """One target as the page's track table shows it, in the words of tvad_chat.motion."""

    track_id: int
    first_frame: int  # source frame index of the first sampled frame with the target
    last_frame: int
    start_s: float  # timestamps of those frames
    end_s: float
    entry_side: str  # a frame side (left | right | top | bottom), "start" (in view as the clip begins) or "inside"
    exit_side: str  # a frame side, "end" (still in view as the clip ends) or "inside"
    direction: str  # 8-way heading of the net move (motion.DIRECTIONS: "right", "up-left", ...) or "none"
    speed_class: str  # stationary | slow | walking | fast | very fast (motion.SPEED_CLASSES)
    speed: float  # in motion.SPEED_UNIT: the target's own box heights per second
    summary: str  # e.g. "Target 1 enters from the left at 0.3 s, moves from left to right at walking pace, ..."


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


def frame_scores(heatmaps: Any, num_frames: int) -> np.ndarray:
    """Per sampled frame: the peak of its temporal patch's heatmap, (T,) in 0..1."""
    maps = _as_maps(heatmaps)
    return maps.reshape(maps.shape[0], -1).max(axis=1)[patch_of_frame(num_frames, maps.shape[0])]


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


def _to_frame_track(track: tracking.Track, new_id: int, patch_frames: list[list[int]]) -> Track:
    out = Track(new_id)
    for patch, box in zip(track.steps, track.payloads, strict=True):
        for frame in patch_frames[patch]:
            out.frames.append(frame)
            out.boxes.append(tuple(float(v) for v in box.xyxy))
            out.scores.append(box.score)
    return out


# --------------------------------------------------------------------------- timeline


def _describe_track(track: tracking.Track, patch_frames: list[list[int]], clip: Any) -> Trajectory:
    """A patch track (boxes per temporal patch) in the motion vocabulary, one observation per patch with frames;
    its first and last time and frame are those of the target's first and last sampled frame."""
    size = (int(clip.frames.shape[2]), int(clip.frames.shape[1]))
    times, indices = np.asarray(clip.timestamps, dtype=float), np.asarray(clip.frame_indices)
    seen = [(box, patch_frames[p]) for p, box in zip(track.steps, track.boxes, strict=True) if patch_frames[p]]
    tr = describe_path([box for box, _ in seen], [float(np.mean(times[f])) for _, f in seen],
                       [int(indices[f[0]]) for _, f in seen], size[0], size[1],
                       starts_with_clip=seen[0][1][0] == 0, ends_with_clip=seen[-1][1][-1] == len(times) - 1)
    first, last = seen[0][1][0], seen[-1][1][-1]
    return replace(tr, start_time=float(times[first]), end_time=float(times[last]), start_frame=int(indices[first]),
                   end_frame=int(indices[last]))


def _timeline_entry(track_id: int, tr: Trajectory) -> TimelineEntry:
    return TimelineEntry(
        track_id=track_id, first_frame=tr.start_frame, last_frame=tr.end_frame, start_s=tr.start_time,
        end_s=tr.end_time, entry_side=tr.entry, exit_side=tr.exit, direction=tr.direction,
        speed_class=tr.speed_class, speed=round(tr.speed, 3),
        summary=trajectory_phrasings(tr, f"target {track_id}")[0])


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
    per_frame = frame_scores(maps, num_frames)
    judgement, score = judge(maps, class_probs)
    patch_frames = [np.nonzero(frame_patch == p)[0].tolist() for p in range(maps.shape[0])]
    patch_boxes = [detect_boxes(m, p, size, cfg.work_scale) for p, m in enumerate(maps)]
    boxes = [[Box(f, b.xyxy, b.score) for b in patch_boxes[frame_patch[f]]] for f in range(num_frames)]
    linked = tracking.track_boxes([[b.xyxy for b in found] for found in patch_boxes],
                                  tracking.TrackerConfig(max_gap=cfg.max_gap, max_jump=cfg.max_jump),
                                  payloads_per_step=patch_boxes)
    kept = [t for t in linked if len(t.steps) >= cfg.min_track_patches and any(patch_frames[p] for p in t.steps)]
    tracks = [_to_frame_track(t, n, patch_frames) for n, t in enumerate(kept, start=1)]
    timeline = [_timeline_entry(n, _describe_track(t, patch_frames, clip)) for n, t in enumerate(kept, start=1)]
    log.debug("evidence: judgement=%s score=%.3f tracks=%d", judgement, score, len(tracks))
    return Evidence(frame_scores=per_frame, judgement=judgement, judgement_score=score, tracks=tracks,
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
