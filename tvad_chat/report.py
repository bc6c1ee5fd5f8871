"""The JSON report of an analysed clip: what `tvad analyze --out` writes and the page exports.

Every number comes from the one :class:`~tvad_chat.pipeline.Analysis` of the clip; the page's score plot,
its target table and this report are views of it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tvad_chat.models import ModelInfo
from tvad_chat.motion import SPEED_UNIT
from tvad_chat.pipeline import Analysis
from tvad_chat.scene.analyze import SceneAnalysis

INTERVAL_THRESHOLD = 0.5  # frame score at which a frame counts as abnormal for the marked interval


@dataclass
class TargetRow:
    """One tracked target as the page's table and the report list it (from the evidence timeline)."""

    target: int
    first_s: float
    last_s: float
    entry: str
    exit: str
    direction: str
    speed: str  # the speed class (tvad_chat.motion.SPEED_CLASSES)
    speed_value: float  # in tvad_chat.motion.SPEED_UNIT (the target's own box heights per second)
    summary: str


def frame_times(analysis: Analysis) -> np.ndarray:
    """Seconds of each sampled frame."""
    return np.asarray(analysis.clip.timestamps, dtype=np.float64)


def anomaly_intervals(analysis: Analysis, threshold: float = INTERVAL_THRESHOLD) -> list[tuple[float, float]]:
    """Time spans (seconds) where the per-frame anomaly score is at or above ``threshold``."""
    if analysis.frame_scores is None:
        return []
    scores = np.asarray(analysis.frame_scores, dtype=np.float64)
    times = frame_times(analysis)
    spans: list[tuple[float, float]] = []
    start = None
    for i, s in enumerate(scores):
        if s >= threshold and start is None:
            start = i
        if (s < threshold or i == len(scores) - 1) and start is not None:
            end = i if s >= threshold else i - 1
            spans.append((float(times[start]), float(times[end])))
            start = None
    return spans


def target_rows(analysis: Analysis) -> list[TargetRow]:
    """One row per tracked target: first/last time, entry, exit, direction, speed."""
    return [TargetRow(target=e.track_id, first_s=e.start_s, last_s=e.end_s, entry=e.entry_side, exit=e.exit_side,
                      direction=e.direction, speed=e.speed_class, speed_value=e.speed, summary=e.summary)
            for e in analysis.timeline]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return round(v, 6) if np.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    return value


def build_report(analysis: Analysis, model_info: ModelInfo | None = None,
                 dialogue: Sequence[tuple[str, str]] = (), source_name: str | None = None) -> dict[str, Any]:
    """The analysis (and the dialogue about it, as (question, answer) pairs) as a JSON-able dict.

    ``source_name`` names the clip as the user did (the page's upload name); default: the path it was read from.
    """
    clip = analysis.clip
    heat = analysis.heatmaps
    return _jsonable({
        "source": source_name or clip.source,
        "duration_s": clip.duration_s,
        "source_fps": clip.source_fps,
        "source_size": list(clip.source_size),
        "sampled_frame_indices": clip.frame_indices,
        "sampled_timestamps_s": frame_times(analysis),
        "model": model_info,
        "judgement": analysis.judgement,
        "score": analysis.score,
        "frame_scores": analysis.frame_scores,
        "anomaly_intervals_s": [list(s) for s in anomaly_intervals(analysis)],
        "interval_threshold": INTERVAL_THRESHOLD,
        "heatmap_shape": None if heat is None else list(heat.shape),
        "heatmap_max": None if heat is None else float(heat.max()),
        "targets": target_rows(analysis),
        "speed_unit": SPEED_UNIT,
        "tracks": analysis.tracks,
        "timeline": analysis.timeline,
        "timings_s": analysis.timings,
        "dialogue": [{"question": q, "answer": a} for q, a in dialogue],
    })


def write_report(analysis: Analysis, path: str | Path, model_info: ModelInfo | None = None,
                 dialogue: Sequence[tuple[str, str]] = (), source_name: str | None = None) -> Path:
    """Write :func:`build_report` as indented JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_report(analysis, model_info, dialogue, source_name), indent=2))
    return path


def scene_report(analysis: SceneAnalysis, video_name: str, profile_note: str, point: str | None = None) -> dict[str, Any]:
    """The JSON report of a scene analysis (`tvad analyze` and the page's export): the clip's name as the user
    gave it, which profile decided, and the analysis at the operating point ``point``."""
    return {"video": video_name, "profile_note": profile_note, **analysis.to_report(point)}
