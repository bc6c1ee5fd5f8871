"""The tasks of a scan, run on a worker (a local process or a Ray task): module-level functions of picklable values.

A clip up to ``segment_s`` long is one task (:func:`analyze_whole`). A longer one is cut into segments that start
``overlap_s`` early: :func:`prepare_profile` chooses (or, uncalibrated, fits on the whole clip) its profile once,
:func:`analyze_segment` analyses one segment's frames with it, and :func:`join_segments` puts the segments back
together, each overlap cut at its middle, so the frame scores (and so the events) run on across every cut.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from tvad_chat.errors import ProfileError
from tvad_chat.scene.analyze import FrameTable, SceneAnalysis, SceneAnalyzer
from tvad_chat.scene.profile import SceneProfile
from tvad_chat.scene.run import clip_analyzer, resolve_profile
from tvad_chat.stages.run import (
    StageResults,
    Stages,
    StageSettings,
    analyze_with_stages,
    load_categories,
    load_stages,
    run_stages,
)
from tvad_chat.video import STREAM_CHUNK, load_clip

THUMB_WIDTH = 240  # pixels
THUMB_QUALITY = 85  # JPEG
BOX_COLOUR = (0, 0, 255)  # BGR red


@dataclass(frozen=True)
class ScanSettings:
    """What decides a clip's result: a rerun with other settings needs another output folder."""

    profile: str = "auto"  # a profile folder, "auto" or "none"
    fps: float | None = None  # analysed frames per second (None: every frame)
    folder_fps: float | None = None  # frame rate of frame folders
    sensitivity: str | None = None  # operating point (None: the profile's default)
    segment_s: float = 600.0  # a clip longer than 1.5 x this is split into segments of this length
    overlap_s: float = 30.0  # each segment starts this much early (tracks, background and smoothing settle)
    sam2: str | None = None  # SAM2 weights of the mask stage (tvad_chat.stages; None: the heat outline)
    clip: str | None = None  # open_clip weights of the categories stage (None: no categories)


@dataclass
class WholeResult:
    analysis: SceneAnalysis
    note: str  # how the profile was chosen
    thumbnails: list[bytes]  # JPEG of each event's peak frame
    seconds: float  # wall time of the task
    stages: StageResults | None = None  # what the stages found (None: none asked for)


@dataclass
class PreparedProfile:
    profile: SceneProfile
    note: str
    calibrated: bool
    background: np.ndarray  # the clip's own background (grey, work size), as analyze_clip starts from


def analyze_whole(path: Path, settings: ScanSettings, threads: int) -> WholeResult:
    """One clip, streamed through its profile, and the thumbnails of its events."""
    start = time.perf_counter()
    cv2.setNumThreads(threads)
    analysis, choice, stages = analyze_with_stages(path, worker_stages(settings, threads), settings.profile,
                                                   fps=settings.fps, folder_fps=settings.folder_fps)
    thumbs = thumbnails(path, settings.folder_fps, peaks(analysis, settings.sensitivity), threads)
    return WholeResult(analysis, choice.note, thumbs, time.perf_counter() - start, stages)


_STAGES: dict[StageSettings, Stages] = {}  # per worker process: each loads the stages' weights once


def worker_stages(settings: ScanSettings, threads: int) -> Stages:
    """The scan's stages in this worker (loaded on first use; missing weights become notes in every report)."""
    wanted = StageSettings(settings.sam2, settings.clip)
    if wanted not in _STAGES:
        _STAGES[wanted] = load_stages(wanted)
    if wanted.enabled:
        torch.set_num_threads(threads)
    return _STAGES[wanted]


def finish_joined(path: Path, settings: ScanSettings, joined: SceneAnalysis,
                  threads: int) -> tuple[list[bytes], StageResults | None]:
    """A segmented clip's thumbnails and stages, once its segments are joined (the masks come from SAM2 only: the
    segments' heat is not kept)."""
    thumbs = thumbnails(path, settings.folder_fps, peaks(joined, settings.sensitivity), threads)
    stages = worker_stages(settings, threads)
    if not stages.enabled:
        return thumbs, None
    return thumbs, run_stages(joined, path, stages, None, load_categories(), settings.folder_fps)


def prepare_profile(path: Path, settings: ScanSettings, threads: int) -> PreparedProfile:
    """A long clip's profile, chosen once for all its segments (as :func:`analyze_clip` chooses it)."""
    cv2.setNumThreads(threads)
    profile, choice = resolve_profile(path, settings.profile, settings.fps, settings.folder_fps)
    analyzer = clip_analyzer(profile, path, settings.folder_fps)  # checks the size once for all segments
    return PreparedProfile(profile, choice.note, choice.profile is not None, analyzer.finder.background)


def analyze_segment(path: Path, prepared: PreparedProfile, indices: np.ndarray, settings: ScanSettings,
                    threads: int) -> SceneAnalysis:
    """The frames ``indices`` (sorted source frames) of a clip, decoded a chunk at a time and analysed in order."""
    cv2.setNumThreads(threads)
    chunks = (load_clip(path, num_frames=None, frame_indices=indices[i:i + STREAM_CHUNK].tolist(),
                        folder_fps=settings.folder_fps)
              for i in range(0, len(indices), STREAM_CHUNK))
    analysis = SceneAnalyzer(prepared.profile, background=prepared.background).run(chunks)
    if not prepared.calibrated:
        analysis.profile_name = None
    return analysis


def plan_segments(num_frames: int, source_fps: float, settings: ScanSettings) -> list[np.ndarray]:
    """The source frames each segment analyses: one array for a clip of at most 1.5 segments, else one per segment,
    each but the first starting ``overlap_s`` early. With ``fps`` the frames are those on screen every 1/fps s."""
    if settings.fps is None or settings.fps >= source_fps:
        frames = np.arange(num_frames, dtype=np.int64)
    else:
        times = np.arange(0.0, num_frames / source_fps, 1.0 / settings.fps)
        frames = np.unique(np.minimum(np.floor(times * source_fps + 1e-6).astype(np.int64), num_frames - 1))
    duration = num_frames / source_fps
    if duration <= 1.5 * settings.segment_s:
        return [frames]
    times = frames / source_fps
    count = math.ceil(duration / settings.segment_s)
    out = []
    for k in range(count):
        start = max(0.0, k * settings.segment_s - settings.overlap_s)
        end = (k + 1) * settings.segment_s if k < count - 1 else math.inf
        out.append(frames[(times >= start) & (times < end)])
    return out


def join_segments(parts: list[SceneAnalysis]) -> SceneAnalysis:
    """One analysis from consecutive overlapping segments: each overlap is cut at its middle (both sides have
    settled there), track ids are renumbered so that no two segments share one, and the scores run on across the
    cuts, so an event that spans a cut is one event."""
    frames = FrameTable()
    scores: list[np.ndarray] = []
    offset = 0
    for k, part in enumerate(parts):
        times = part.times
        low = -math.inf if k == 0 else (times[0] + parts[k - 1].times[-1]) / 2
        high = math.inf if k == len(parts) - 1 else (parts[k + 1].times[0] + times[-1]) / 2
        keep = np.flatnonzero((times >= low) & (times < high))
        for i in keep:
            record = part.frames[i]
            frames.append(dataclasses.replace(record, boxes=[dataclasses.replace(b, track_id=b.track_id + offset)
                                                             for b in record.boxes]))
        scores.append(part.scores[keep])
        offset += 1 + max((b.track_id for r in part.frames for b in r.boxes), default=0)
    times = frames.times
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    return dataclasses.replace(parts[0], frames=frames, scores=np.concatenate(scores).astype(np.float32),
                               fps=1.0 / step if step > 0 else parts[0].fps,
                               greyscale=all(p.greyscale for p in parts), judged=all(p.judged for p in parts))


def peaks(analysis: SceneAnalysis, point: str | None) -> list[tuple[int, list[list[float]]]]:
    """Each event's peak frame: its source index and the boxes above the threshold there (the top box if none)."""
    threshold = analysis.threshold(point)
    by_time = {r.time: r for r in analysis.frames}
    out = []
    for event in analysis.events(point):
        record = by_time[event.peak_time]
        boxes = [b for b in record.boxes if b.score > threshold] or record.boxes[:1]
        out.append((record.index, [list(b.xyxy) for b in boxes]))
    return out


def thumbnails(path: Path, folder_fps: float | None, frames: list[tuple[int, list[list[float]]]],
               threads: int) -> list[bytes]:
    """A JPEG per (frame index, boxes): the frame, its boxes drawn in red, THUMB_WIDTH pixels wide."""
    cv2.setNumThreads(threads)
    if not frames:
        return []
    wanted = sorted({index for index, _ in frames})
    clip = load_clip(path, num_frames=None, frame_indices=wanted, folder_fps=folder_fps)
    images = dict(zip(wanted, clip.frames, strict=True))
    out = []
    for index, boxes in frames:
        image = cv2.cvtColor(images[index], cv2.COLOR_RGB2BGR)
        for x1, y1, x2, y2 in boxes:
            cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), BOX_COLOUR, max(1, image.shape[1] // 160))
        height = max(1, round(image.shape[0] * THUMB_WIDTH / image.shape[1]))
        small = cv2.resize(image, (THUMB_WIDTH, height), interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
        if not ok:
            raise ProfileError(f"could not encode a thumbnail of {path.name}")
        out.append(data.tobytes())
    return out
