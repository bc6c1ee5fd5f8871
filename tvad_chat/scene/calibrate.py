"""Fit a scene profile from normal footage of one camera (``tvad calibrate``).

``calibrate`` = ``measure_footage`` (steps 1-2, the slow pass) then ``fit_profile`` (steps 3-5), kept apart so
that one measured footage can be fitted many times (leave-one-clip-out evaluation, scripts/eval_localisation.py).

1. Every clip is checked (same display size; backgrounds alike enough to be one camera) and its background
   estimated as the median of ``background_samples`` frames spread over it.
2. One pass over every frame (or F per second) measures the objects (tvad_chat.scene.objects).
3. The perspective line is fitted on the tracks of objects that walk through; then the pieces of one object are
   joined (tvad_chat.scene.features.join_stacked), and features and scales follow.
4. Operating points (the default: the strictest one actually measured): the footage is cut into ``folds`` parts (whole clips when there are enough, else
   equal stretches of time); each part is scored with a density model of the others, exactly as analysis
   would score it (tracks, smoothing), and the thresholds for about 1, 0.1 and 0.01 false alarms per minute
   are read off these held-out scores (tvad_chat.scene.events).
5. The profile keeps the normal objects' features (at most ``max_normal``, spread evenly), per-place normal
   speeds, reference percentiles for the "why" of events, and the camera's background.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tvad_chat.errors import ConfigError, ProfileError
from tvad_chat.scene.analyze import measure_frame
from tvad_chat.scene.events import footage_seconds, operating_points
from tvad_chat.scene.features import (
    HEIGHT,
    SPEED,
    WIDTH,
    Measure,
    Perspective,
    feature_scales,
    features,
    join_stacked,
    joined,
)
from tvad_chat.scene.match import SAME_CAMERA, background_similarity
from tvad_chat.scene.objects import ObjectConfig, ObjectFinder, to_work_grey, work_size
from tvad_chat.scene.profile import REFERENCE_PERCENTILES, OperatingPoint, SceneProfile
from tvad_chat.scene.scoring import BoxScorer, Density, ScoringConfig, smooth_frame_scores
from tvad_chat.tracking import TrackerConfig, track_boxes
from tvad_chat.video import load_clip, probe, sampled_fps, stream_clip

log = logging.getLogger(__name__)

WALKER_MIN_BOXES = 10
WALKER_MIN_TRACKS = 8  # fewer walkers than this: the line is fitted on every object (see _fit_perspective)


@dataclass
class CalibrationConfig:
    objects: ObjectConfig = field(default_factory=ObjectConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    min_seconds: float = 10.0  # less normal footage than this cannot tell normal from chance
    min_objects: int = 100
    folds: int = 4
    background_samples: int = 25
    max_normal: int = 40000
    place_grid: tuple[int, int] = (6, 8)  # rows, cols of the per-place speed statistics


@dataclass
class _Frames:
    """The measured frames of one stretch of footage."""

    times: list[float] = field(default_factory=list)
    boxes: list[list[tuple[int, int, int, int]]] = field(default_factory=list)
    measures: list[list[Measure]] = field(default_factory=list)


def clip_background(source: str | Path, work_width: int, samples: int,
                    folder_fps: float | None) -> tuple[np.ndarray, tuple[int, int]]:
    """Median of frames spread over the clip, grey at working size (the scene without its passers-by),
    and the display size of the clip's frames."""
    clip = load_clip(source, num_frames=samples, folder_fps=folder_fps)
    size = (int(clip.frames.shape[2]), int(clip.frames.shape[1]))
    work = work_size(*size, work_width)
    return np.median(np.stack([to_work_grey(f, work) for f in clip.frames]), axis=0).astype(np.uint8), size


@dataclass
class Footage:
    """Normal footage of one camera, measured once: what a profile is fitted on (``fit_profile``)."""

    sources: list[str]
    size: tuple[int, int]  # display (width, height)
    work: tuple[int, int]  # working (width, height)
    backgrounds: list[np.ndarray]  # per clip, grey at working size
    clips: list[_Frames]

    def subset(self, keep: Sequence[int]) -> Footage:
        """The footage of the clips at positions ``keep`` (leave-one-clip-out evaluation)."""
        return Footage([self.sources[i] for i in keep], self.size, self.work, [self.backgrounds[i] for i in keep],
                       [self.clips[i] for i in keep])


def calibrate(sources: Sequence[str | Path], name: str, config: CalibrationConfig | None = None,
              fps: float | None = None, folder_fps: float | None = None,
              progress: Callable[[int, int], None] | None = None, keep_times: bool = False) -> SceneProfile:
    """A scene profile from normal clips (video files or frame folders) of one camera.

    ``keep_times``: the profile remembers when each normal object was seen, so that the same clip can be
    scored against itself (uncalibrated analysis); never for a profile that scores other clips."""
    cfg = config or CalibrationConfig()
    footage = measure_footage(sources, cfg, fps, folder_fps, progress)
    return fit_profile(footage, name, cfg, fps, folder_fps, keep_times)


def measure_footage(sources: Sequence[str | Path], config: CalibrationConfig | None = None,
                    fps: float | None = None, folder_fps: float | None = None,
                    progress: Callable[[int, int], None] | None = None) -> Footage:
    """Check that the clips are of one camera and measure the objects of every frame (steps 1 and 2)."""
    cfg = config or CalibrationConfig()
    if not sources:
        raise ProfileError("give at least one normal clip of the camera to calibrate on")
    infos = [probe(s, folder_fps=folder_fps) for s in sources]
    found = [clip_background(s, cfg.objects.work_width, cfg.background_samples, folder_fps) for s in sources]
    sizes = {size for _, size in found}
    if len(sizes) > 1:
        listed = ", ".join(f"{Path(s).name} {w}x{h}" for s, (_, (w, h)) in zip(sources, found, strict=True))
        raise ProfileError(f"the clips have different sizes ({listed}): a profile is for one camera; "
                           "calibrate each camera on its own")
    size = sizes.pop()
    work = work_size(*size, cfg.objects.work_width)
    backgrounds = [background for background, _ in found]
    for source, background in zip(sources[1:], backgrounds[1:], strict=True):
        similarity = background_similarity(backgrounds[0], background)
        if similarity < SAME_CAMERA:
            raise ProfileError(f"{Path(source).name} does not look like the same camera as {Path(sources[0]).name} "
                               f"(background similarity {similarity:.2f} < {SAME_CAMERA}); calibrate each camera "
                               "on its own")
    total = sum(i.num_frames for i in infos)
    done = 0
    clips: list[_Frames] = []
    for source, background in zip(sources, backgrounds, strict=True):
        frames = _Frames()
        finder = ObjectFinder(cfg.objects, background=background)
        for chunk in stream_clip(source, fps=fps, folder_fps=folder_fps):
            for frame, time in zip(chunk.frames, chunk.timestamps, strict=True):
                dt = float(time) - frames.times[-1] if frames.times else 0.0
                objects, measures = measure_frame(finder, frame, work, dt)
                frames.times.append(float(time))
                frames.boxes.append([o.box for o in objects])
                frames.measures.append(measures)
            done += len(chunk.frames)
            if progress is not None:
                progress(done, total)
        clips.append(frames)
    return Footage([str(s) for s in sources], size, work, backgrounds, clips)


def fit_profile(footage: Footage, name: str, config: CalibrationConfig | None = None, fps: float | None = None,
                folder_fps: float | None = None, keep_times: bool = False) -> SceneProfile:
    """The profile of measured footage (steps 3 to 5); ``fps``/``folder_fps`` are only recorded."""
    cfg = config or CalibrationConfig()
    clips, work = footage.clips, footage.work
    if keep_times and len(clips) != 1:
        raise ConfigError("a profile keeps its objects' times only to score the one clip it was fitted on")
    seconds = sum(footage_seconds(c.times) for c in clips)
    every = [m for c in clips for ms in c.measures for m in ms]
    if seconds < cfg.min_seconds or len(every) < cfg.min_objects:
        raise ProfileError(f"too little normal footage: {seconds:.1f} s with {len(every)} moving objects; a profile "
                           f"needs at least {cfg.min_seconds:.0f} s with {cfg.min_objects} objects (a few minutes of "
                           "typical activity is better)")
    perspective = _fit_perspective(clips, every, cfg.scoring)
    clips = [_join_pieces(c, perspective) for c in clips]  # pieces of one object measured as one, as analysis does
    every = [m for c in clips for ms in c.measures for m in ms]
    folds = _folds(clips, cfg.folds)
    fold_features = [[features(ms, perspective) for ms in fold.measures] for fold in folds]
    everything = np.concatenate([f for fold in fold_features for f in fold])
    scales = feature_scales(everything)
    held_out = []
    for k, fold in enumerate(folds):
        others = np.concatenate([f for j, feats in enumerate(fold_features) if j != k for f in feats])
        if len(others) <= cfg.scoring.neighbours:  # the objects all came in one stretch of the footage
            raise ProfileError(f"too little normal footage: its moving objects all come within one stretch of "
                               f"{seconds:.1f} s, so none is left to measure the false alarms on; give longer or "
                               "busier normal footage")
        held_out.append(_held_out_scores(fold, fold_features[k], Density(others, scales, cfg.scoring.neighbours),
                                         cfg.scoring))
    points = operating_points(held_out)
    keep = np.linspace(0, len(everything) - 1, min(len(everything), cfg.max_normal)).astype(int)
    times = np.array([t for c in clips for t, ms in zip(c.times, c.measures, strict=True) for _ in ms])
    reference = {key: {f"{p:.1f}": float(np.percentile(everything[:, column], p)) for p in REFERENCE_PERCENTILES}
                 for key, column in (("speed", SPEED), ("height", HEIGHT), ("width", WIDTH))}
    log.info("calibrated %r on %.1f s (%d objects): thresholds %s", name, seconds, len(everything),
             ", ".join(f"{p.name}={p.threshold:.2f}" for p in points))
    return SceneProfile(
        name=name, size=footage.size, work_size=work, objects=cfg.objects, scoring=cfg.scoring, perspective=perspective,
        scales=scales, normal=everything[keep], place_speed=_place_speed(every, everything, work, cfg.place_grid),
        background=np.median(np.stack(footage.backgrounds), axis=0).astype(np.uint8), operating_points=points,
        reference=reference, default_point=default_point(points),
        made_from={"sources": [Path(s).name for s in footage.sources], "seconds": round(seconds, 1),
                   "frames": sum(len(c.times) for c in clips), "objects": len(everything),
                   "fps": fps, "folder_fps": folder_fps, "folds": len(folds)},
        normal_times=times[keep] if keep_times else None)


def default_point(points: list[OperatingPoint]) -> str:
    """The strictest operating point whose false-alarm rate was measured on held-out normal footage; when
    none was (less than a minute of footage), the loosest. A rate rarer than the footage can show is a guess,
    and a guessed threshold must not be the default."""
    measured = [p for p in points if p.measured]
    return min(measured, key=lambda p: p.target_per_minute).name if measured else \
        max(points, key=lambda p: p.target_per_minute).name


def _fit_perspective(clips: list[_Frames], every: list[Measure], scoring: ScoringConfig) -> Perspective:
    """The perspective line from the objects that walk through: tracks of ``WALKER_MIN_BOXES`` boxes or more
    whose foot point moves at least their own height. Flickering leaves and fragments of people are small
    and many; fitted on every object, they make the line far too steep. Falls back to every object when
    fewer than ``WALKER_MIN_TRACKS`` walkers were seen, or when the walkers' line does not rise towards the
    camera (a few walkers in a narrow band of rows give no slope: 13 in one short Avenue clip gave a flat
    line and hundreds of false boxes)."""
    rows, heights = [], []
    config = TrackerConfig(max_gap=scoring.max_gap, max_jump=scoring.max_jump)
    for clip in clips:
        for track in track_boxes(clip.boxes, config):
            if len(track.boxes) < WALKER_MIN_BOXES:
                continue
            boxes = np.asarray(track.boxes, float)
            height = float(np.median(boxes[:, 3] - boxes[:, 1]))
            feet = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], axis=1)
            if np.linalg.norm(feet[-1] - feet[0]) >= height:
                rows.append(float(np.median(boxes[:, 3])))
                heights.append(height)
    if len(rows) >= WALKER_MIN_TRACKS:
        walkers = Perspective.fit(np.array(rows), np.array(heights))
        if walkers.slope > 0:
            return walkers
    log.warning("%d walking tracks in the footage give no perspective: fitted on every object", len(rows))
    return Perspective.fit(np.array([m.foot_row for m in every]), np.array([m.height for m in every]))


def _join_pieces(clip: _Frames, perspective: Perspective) -> _Frames:
    """The clip's frames with the pieces of each object joined (features.join_stacked)."""
    measures = [joined(ms, join_stacked(ms, perspective)) for ms in clip.measures]
    return _Frames(list(clip.times), [[m.box for m in ms] for ms in measures], measures)


def _folds(clips: list[_Frames], count: int) -> list[_Frames]:
    """Whole clips when there are at least ``count``, else every clip cut into equal stretches of time."""
    if len(clips) >= count:
        return clips
    parts = -(-count // len(clips))
    out = []
    for clip in clips:
        for piece in np.array_split(np.arange(len(clip.times)), parts):
            if len(piece):
                out.append(_Frames([clip.times[i] for i in piece], [clip.boxes[i] for i in piece],
                                   [clip.measures[i] for i in piece]))
    return out


def _held_out_scores(fold: _Frames, feats: list[np.ndarray], density: Density,
                     scoring: ScoringConfig) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed frame scores of a held-out stretch, by the same rules as analysis."""
    scorer = BoxScorer(scoring)
    raw = []
    for step, (boxes, f) in enumerate(zip(fold.boxes, feats, strict=True)):
        scored = scorer.push(step, boxes, density.score(f))
        raw.append(max((b.score for b in scored), default=0.0))
    times = np.asarray(fold.times, np.float64)
    fps = sampled_fps(times, 1.0)
    return smooth_frame_scores(np.asarray(raw), fps, scoring.smooth_sigma_s), times


def _place_speed(measures: list[Measure], feats: np.ndarray, work: tuple[int, int],
                 grid: tuple[int, int]) -> np.ndarray:
    """99th percentile of object speed (heights/s) by the place of the object's foot (0 where none was seen)."""
    rows, cols = grid
    cell_r = np.minimum((np.array([m.foot_row for m in measures]) / work[1] * rows).astype(int), rows - 1)
    centre_x = np.array([(m.box[0] + m.box[2]) / 2 for m in measures])
    cell_c = np.minimum((centre_x / work[0] * cols).astype(int), cols - 1)
    out = np.zeros(grid, np.float32)
    for r in range(rows):
        for c in range(cols):
            here = feats[(cell_r == r) & (cell_c == c), SPEED]
            if len(here):
                out[r, c] = np.percentile(here, 99)
    return out
