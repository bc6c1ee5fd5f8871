"""Run the configured stages after a clip's scene analysis and keep what they found for every view.

``load_stages`` loads the weights once (a stage whose weights are missing becomes a note that says what is missing
and how to provide it, and the analysis goes on without it); ``analyze_with_stages`` analyses a clip and runs them;
``StageResults`` holds the masks, the categories, each stage's time and the notes, and gives the report entries,
the mask-shaped heat of a frame and an event's ranked categories.

The stages take the anomalous tracks at the most sensitive operating point (tvad_chat.stages.tao), so changing
the sensitivity never needs them again: an event at any point is made of those tracks.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tvad_chat.errors import CheckpointError, ProfileError
from tvad_chat.scene.analyze import HEAT_POWER, Event, HeatSink, SceneAnalysis, heat_to_uint8
from tvad_chat.scene.run import ProfileChoice, analyze_clip
from tvad_chat.stages.categories import (
    Categoriser,
    CategoryRequest,
    CategorySet,
    ClipCategoriser,
    NoCategories,
    Ranking,
    crop_boxes,
    load_categories,
)
from tvad_chat.stages.masks import (
    HeatOutline,
    MaskRequest,
    MaskSource,
    ObjectMask,
    SAM2Masks,
    TrackMasks,
    refine_heat,
)
from tvad_chat.stages.tao import anomalous_tracks, lowest_threshold, track_boxes
from tvad_chat.video import load_clip

log = logging.getLogger(__name__)

SAM2_ENV, CLIP_ENV = "TVAD_SAM2", "TVAD_CLIP"
REPORT_CATEGORIES = 5  # ranked categories per event in the report (the full ranking sums to 1)

StageProgress = Callable[[str, int, int, float], None]  # stage name, steps done, steps planned, seconds so far
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class StageSettings:
    """Which weights the stages use (None: the weight-free default) and where they run."""

    sam2: str | None = None  # SAM2 checkpoint: hub id, file or folder
    clip: str | None = None  # open_clip model: hub id or folder
    device: str | None = None  # None: CUDA when present, else the CPU

    @property
    def enabled(self) -> bool:
        return bool(self.sam2 or self.clip)

    @classmethod
    def from_env(cls) -> StageSettings:
        """TVAD_SAM2 and TVAD_CLIP (the page's settings when it starts; `tvad app --sam2/--clip` set them)."""
        return cls(os.environ.get(SAM2_ENV) or None, os.environ.get(CLIP_ENV) or None)


@dataclass
class Stages:
    """Loaded stages: SAM2 (None: the heat outline) and a categoriser, and why a stage asked for is missing."""

    sam2: MaskSource | None = None  # SAM2Masks, or another mask source that needs no heat
    categoriser: Categoriser = field(default_factory=NoCategories)
    notes: list[str] = field(default_factory=list)
    enabled: bool = False  # a stage was asked for (even if it failed to load): the report carries the stages

    def mask_source(self, outline: HeatOutline | None) -> MaskSource | None:
        return self.sam2 if self.sam2 is not None else outline

    def outline(self) -> HeatOutline | None:
        """A fresh heat outline to listen to the analysis when the masks come from it."""
        return HeatOutline() if self.enabled and self.sam2 is None else None


def load_stages(settings: StageSettings) -> Stages:
    """The stages of ``settings``; missing weights become notes (for the caller to show), never errors."""
    stages = Stages(enabled=settings.enabled)
    if settings.sam2:
        try:
            stages.sam2 = SAM2Masks.load(settings.sam2, settings.device)
        except CheckpointError as exc:
            stages.notes.append(f"{exc} The analysis goes on without SAM2: masks are the heat outline.")
    if settings.clip:
        try:
            stages.categoriser = ClipCategoriser.load(settings.clip, settings.device)
        except CheckpointError as exc:
            stages.notes.append(f"{exc} The analysis goes on without categories.")
    return stages


def heat_value(score: float, threshold: float) -> float:
    """The heat of a box score, as the analysis paints it (0.5 at the default point's threshold)."""
    return score ** HEAT_POWER / (score ** HEAT_POWER + threshold ** HEAT_POWER) if score > 0 else 0.0


@dataclass
class StageResults:
    """What the stages found in one analysed clip."""

    mask_source: str | None  # "SAM2" or "heat outline" (None: no mask stage)
    masks: TrackMasks  # track id -> source index -> mask
    values: dict[int, dict[int, float]]  # track id -> source index -> the heat its mask carries
    boxes: dict[int, dict[int, Box]]  # track id -> source index -> the track's box there (detector)
    categoriser: str | None  # "CLIP" (None: no categories)
    categories: dict[int, Ranking]  # track id -> ranked categories
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time
    frames: dict[str, int] = field(default_factory=dict)  # stage -> frames it processed
    weights: dict[str, str] = field(default_factory=dict)  # stage -> the weights it used
    notes: list[str] = field(default_factory=list)  # stages asked for that could not run, and why

    def frame_masks(self, index: int) -> list[tuple[int, ObjectMask]]:
        """(track id, mask) of every track masked in source frame ``index``."""
        return [(t, per_frame[index]) for t, per_frame in self.masks.items() if index in per_frame]

    def heat(self, index: int, heat: np.ndarray) -> np.ndarray:
        """Source frame ``index``'s heat with the masks as the outline (unchanged without masks there)."""
        masks = [(m, self.boxes.get(t, {}).get(index), self.values[t][index]) for t, m in self.frame_masks(index)]
        return refine_heat(heat, masks) if masks else np.asarray(heat, np.float32)

    def event_track(self, analysis: SceneAnalysis, event: Event) -> int | None:
        """The event's main track: the track of its highest-scoring box among its anomalous tracks."""
        best: tuple[float, int] | None = None
        for record in analysis.frames:
            if event.first_index <= record.index <= event.last_index:
                for b in record.boxes:
                    if b.track_id in event.track_ids and (best is None or b.score > best[0]):
                        best = (b.score, b.track_id)
        return None if best is None else best[1]

    def event_categories(self, analysis: SceneAnalysis, event: Event) -> Ranking:
        """The ranked categories of the event's main track (empty without the categoriser, or when that track
        could not be categorised)."""
        track = self.event_track(analysis, event)
        return list(self.categories.get(track, [])) if track is not None else []

    def add_to_report(self, report: dict[str, Any], analysis: SceneAnalysis, point: str | None = None) -> None:
        """Put the stages into a report of ``analysis.to_report(point)``: per event its main track's ranked
        categories, and a "stages" entry (sources, weights, seconds, frames, per-track mask boxes and categories,
        notes)."""
        for entry, event in zip(report["events"], analysis.events(point), strict=True):
            if self.categoriser is not None:
                entry["categories"] = [{"name": r.name, "score": round(r.score, 4)}
                                       for r in self.event_categories(analysis, event)[:REPORT_CATEGORIES]]
                entry["category_track"] = self.event_track(analysis, event)
        stages: dict[str, Any] = {"notes": list(self.notes)}
        if self.mask_source is not None:
            stages["masks"] = {
                **self._timing("masks"), "source": self.mask_source,
                "tracks": {str(t): [[i, *m.box, m.area] for i, m in sorted(per_frame.items()) if m.box is not None]
                           for t, per_frame in sorted(self.masks.items())}}
        if self.categoriser is not None:
            stages["categories"] = {
                **self._timing("categories"), "source": self.categoriser,
                "tracks": {str(t): [[r.name, round(r.score, 4)] for r in ranking[:REPORT_CATEGORIES]]
                           for t, ranking in sorted(self.categories.items())}}
        report["stages"] = stages

    def _timing(self, stage: str) -> dict[str, Any]:
        seconds, frames = self.seconds.get(stage, 0.0), self.frames.get(stage, 0)
        return {"weights": self.weights.get(stage), "seconds": round(seconds, 3), "frames": frames,
                "seconds_per_frame": round(seconds / frames, 4) if frames else None}

    def timing_text(self) -> str:
        """One line of what ran and how long it took, e.g. "SAM2 masks 12.3 s (40 frames); CLIP categories 1.1 s"."""
        parts = []
        if self.mask_source is not None:
            parts.append(f"{self.mask_source} masks {self.seconds.get('masks', 0.0):.1f} s "
                         f"({self.frames.get('masks', 0)} frames)")
        if self.categoriser is not None:
            parts.append(f"{self.categoriser} categories {self.seconds.get('categories', 0.0):.1f} s "
                         f"({self.frames.get('categories', 0)} crops)")
        return "; ".join(parts)


def describe_categories(ranking: Ranking, count: int = 2) -> str:
    """"a cyclist (0.62) or a skateboarder (0.21)": the ``count`` most likely categories with their scores."""
    named = [f"{r.name} ({r.score:.2f})" for r in ranking[:count]]
    return " or ".join([", ".join(named[:-1]), named[-1]] if len(named) > 2 else named)


def frame_reader(source: str | Path, folder_fps: float | None = None) -> Callable[[list[int]], np.ndarray]:
    """Source indices -> their RGB frames (T, H, W, 3), decoded from the clip."""

    def read(indices: list[int]) -> np.ndarray:
        return load_clip(source, num_frames=None, frame_indices=list(indices), folder_fps=folder_fps).frames

    return read


def run_stages(analysis: SceneAnalysis, source: str | Path, stages: Stages, outline: HeatOutline | None = None,
               categories: CategorySet | None = None, folder_fps: float | None = None,
               progress: StageProgress | None = None) -> StageResults:
    """The stages on an analysed clip: masks of its anomalous tracks (SAM2, else the ``outline`` that listened to
    the analysis) and their ranked categories (``categories``: prompts/categories.yaml's by default)."""
    threshold = lowest_threshold(analysis)
    tracks = anomalous_tracks(track_boxes(analysis), threshold)
    read = frame_reader(source, folder_fps)
    source_masks = stages.mask_source(outline)
    results = StageResults(source_masks.name if source_masks is not None else None, {}, {}, {},
                           stages.categoriser.name if not isinstance(stages.categoriser, NoCategories) else None, {},
                           notes=list(stages.notes))
    if source_masks is not None:
        start = time.perf_counter()
        report = _reporter("masks", progress, start)
        try:
            results.masks = source_masks.masks(MaskRequest(analysis, tracks, threshold, read, report))
        except RuntimeError as exc:  # torch: out of memory, a model that does not fit its inputs
            log.exception("the %s masks failed", source_masks.name)
            results.notes.append(f"{source_masks.name} masks failed on this clip ({exc}); the analysis goes on "
                                 "without them")
        results.seconds["masks"] = time.perf_counter() - start
        results.frames["masks"] = len({i for per_frame in results.masks.values() for i in per_frame})
        results.weights["masks"] = getattr(source_masks, "source", None) or "none (the analysis's heat)"
        results.boxes = {t: {b.index: b.xyxy for b in tracks.get(t, [])} for t in results.masks}
        results.values = _mask_values(results.masks, tracks, analysis.threshold(analysis.default_point))
    if results.categoriser is not None:
        start = time.perf_counter()
        request = CategoryRequest(tracks, threshold, read, categories or load_categories(),
                                  _reporter("categories", progress, start))
        try:
            results.categories = stages.categoriser.rank(request)
        except RuntimeError as exc:
            log.exception("the %s categories failed", stages.categoriser.name)
            results.notes.append(f"{stages.categoriser.name} categories failed on this clip ({exc}); the analysis "
                                 "goes on without them")
        results.seconds["categories"] = time.perf_counter() - start
        results.frames["categories"] = sum(len(crop_boxes(tracks[t], threshold)) for t in results.categories)
        results.weights["categories"] = getattr(stages.categoriser, "source", "")
    if results.seconds:
        log.debug("stages: %s", results.timing_text())
    return results


def _reporter(stage: str, progress: StageProgress | None, start: float) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total, time.perf_counter() - start)


def _mask_values(masks: TrackMasks, tracks: dict, threshold: float) -> dict[int, dict[int, float]]:
    """The heat each track's mask carries in each frame: its box's heat there, else its nearest box's in time."""
    out: dict[int, dict[int, float]] = {}
    for track_id, per_frame in masks.items():
        boxes = tracks.get(track_id, [])
        if not boxes:
            continue
        indices = np.array([b.index for b in boxes])
        heats = [heat_value(b.score, threshold) for b in boxes]
        out[track_id] = {i: heats[int(np.argmin(np.abs(indices - i)))] for i in per_frame}
    return out


def chain_sinks(*sinks: HeatSink | None) -> HeatSink | None:
    """One heat sink that hands every frame to each of ``sinks`` (None when there are none)."""
    present = [s for s in sinks if s is not None]
    if not present:
        return None

    def sink(index: int, heat: np.ndarray) -> None:
        for s in present:
            s(index, heat)

    return sink


def analyze_with_stages(source: str | Path, stages: Stages, profile: str | Path | None = "auto",
                        fps: float | None = None, folder_fps: float | None = None,
                        heatmaps: str | Path | None = None, heat_sink: HeatSink | None = None,
                        progress: Callable[[int], None] | None = None, extra_categories: Sequence[str] = (),
                        stage_progress: StageProgress | None = None
                        ) -> tuple[SceneAnalysis, ProfileChoice, StageResults | None]:
    """tvad_chat.scene.run.analyze_clip, then the stages (None when none was asked for); with SAM2 masks the heat
    PNGs in ``heatmaps`` are rewritten with the masks as their outline."""
    outline = stages.outline()
    analysis, choice = analyze_clip(source, profile, fps=fps, folder_fps=folder_fps, heatmaps=heatmaps,
                                    heat_sink=chain_sinks(heat_sink, outline.sink if outline else None),
                                    progress=progress)
    if not stages.enabled:
        return analysis, choice, None
    results = run_stages(analysis, source, stages, outline, load_categories(extra_categories), folder_fps,
                         stage_progress)
    if heatmaps is not None and results.mask_source == SAM2Masks.name:
        rewrite_heatmaps(heatmaps, results)
    return analysis, choice, results


def rewrite_heatmaps(folder: str | Path, results: StageResults) -> None:
    """The heat PNGs (000123.png = source frame 123) of the masked frames, rewritten with the masks as outline."""
    folder = Path(folder)
    for index in sorted({i for per_frame in results.masks.values() for i in per_frame}):
        path = folder / f"{index:06d}.png"
        stored = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if stored is None:
            continue
        heat = results.heat(index, stored.astype(np.float32) / 255.0)
        if not cv2.imwrite(str(path), heat_to_uint8(heat)):
            raise ProfileError(f"could not write heat maps to {folder}")
