"""Analyse a clip frame by frame against a scene profile: boxes, tracks, heat, frame scores, events.

Streaming: frames arrive in chunks (tvad_chat.video.stream_clip), each is measured, scored and tracked,
its heat map is handed to an optional callback (written as a PNG, never kept), and only a compact record
per frame stays in memory (index, time, score, a few boxes) in flat arrays (:class:`FrameTable`: about 50
bytes a box instead of a kilobyte of Python objects), so an hour at every frame stays well under 200 MB.

Heat: every object's own pixels (its foreground mask, not its box) carry the heat of its box score s,
``s^2 / (s^2 + t^2)`` with t the threshold of the profile's default operating point (0.5 exactly at the
threshold, low for the normal walkers well below it), lightly blurred so the outline covers the object's
edge; the rest of the frame is 0.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from tvad_chat.errors import ProfileError
from tvad_chat.scene.events import runs_above
from tvad_chat.scene.features import HEIGHT, SPEED, WIDTH, Measure, features, join_stacked, joined, measure
from tvad_chat.scene.objects import ObjectFinder, SceneObject, to_work_grey
from tvad_chat.scene.profile import SceneProfile
from tvad_chat.scene.scoring import BoxScorer, Density, smooth_frame_scores
from tvad_chat.video import Clip, sampled_fps

log = logging.getLogger(__name__)

HEAT_BLUR = 5  # working pixels (odd)
HEAT_POWER = 2.0  # heat = s^p / (s^p + t^p): 0.5 at the threshold t, a walker at half of it 0.2 (not 0.33)
MAX_BOXES_PER_FRAME = 12  # the highest-scoring boxes of a frame are kept in the record
GREYSCALE_SPREAD = 3.0  # grey levels: frames whose channels differ less than this on average carry no colour
SELF_EXCLUDE_S = 5.0  # scoring a clip against itself: neighbours nearer in time than this are skipped
# Hysteresis: an event is a run above the threshold, widened on both sides while the score stays above this
# share of it. The smoothed score reaches the threshold a few frames after the object turns up (the robust
# filter waits for 3 hits of 5, the track's mean for 5 frames) and leaves it before the object is gone.
# Chosen on SynthCampus: on 24 anomalous clips mean tIoU 0.45 at 1.0, 0.48 at 0.8, 0.54 at 0.5, but held-out
# normal clips spend 10 % of their frames above 0.8 of the threshold and 50 % above 0.5 (a false alarm would
# swallow the clip), so 0.8 (on a second scene, plaza, the best too: 0.39 at 1.0, 0.41 at 0.8, 0.36 at 0.35). It merges events, never adds one: the calibrated false-alarm rates still bound it.
EVENT_EXTEND = 0.8


@dataclass
class FrameBox:
    xyxy: tuple[float, float, float, float]  # display pixels
    score: float
    track_id: int
    measures: tuple[float, float, float]  # speed (heights/s), height and width (expected heights)
    colour: tuple[int, int, int]  # mean RGB of the object's own pixels


@dataclass
class FrameRecord:
    index: int  # source frame index
    time: float  # seconds
    raw_score: float  # highest box score of the frame
    boxes: list[FrameBox]


class FrameTable(Sequence[FrameRecord]):
    """Frame records kept as flat arrays; indexing builds the FrameRecord (and its FrameBoxes) on demand."""

    def __init__(self, records: Iterable[FrameRecord] = ()) -> None:
        self._index, self._time, self._raw = array("q"), array("d"), array("f")
        self._first_box = array("q", [0])  # frame k's boxes are rows _first_box[k] .. _first_box[k + 1] - 1
        self._box_values = array("f")  # per box: x1 y1 x2 y2 score speed height width
        self._track = array("q")
        self._colour = array("B")  # per box: R G B
        for record in records:
            self.append(record)

    def append(self, record: FrameRecord) -> None:
        self._index.append(record.index)
        self._time.append(record.time)
        self._raw.append(record.raw_score)
        for b in record.boxes:
            self._box_values.extend((*b.xyxy, b.score, *b.measures))
            self._track.append(b.track_id)
            self._colour.extend(b.colour)
        self._first_box.append(len(self._track))

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, key):  # int -> FrameRecord, slice -> list[FrameRecord]
        if isinstance(key, slice):
            return [self._record(k) for k in range(*key.indices(len(self)))]
        if key < 0:
            key += len(self)
        if not 0 <= key < len(self):
            raise IndexError(f"frame {key} of {len(self)}")
        return self._record(key)

    def __iter__(self) -> Iterator[FrameRecord]:
        return (self._record(k) for k in range(len(self)))

    @property
    def times(self) -> np.ndarray:
        return np.frombuffer(self._time, np.float64).copy() if len(self) else np.zeros(0, np.float64)

    @property
    def raw_scores(self) -> np.ndarray:
        return np.frombuffer(self._raw, np.float32).copy() if len(self) else np.zeros(0, np.float32)

    @property
    def indices(self) -> np.ndarray:
        return np.frombuffer(self._index, np.int64).copy() if len(self) else np.zeros(0, np.int64)

    def _record(self, k: int) -> FrameRecord:
        boxes = []
        for row in range(self._first_box[k], self._first_box[k + 1]):
            v = self._box_values[8 * row:8 * row + 8]
            boxes.append(FrameBox((v[0], v[1], v[2], v[3]), v[4], self._track[row], (v[5], v[6], v[7]),
                                  tuple(self._colour[3 * row:3 * row + 3])))
        return FrameRecord(self._index[k], self._time[k], self._raw[k], boxes)


@dataclass
class Event:
    start_s: float
    end_s: float
    first_index: int
    last_index: int
    peak_score: float
    peak_time: float
    track_ids: list[int]
    why: str


@dataclass
class SceneAnalysis:
    """The result of analysing one clip with one profile (or uncalibrated)."""

    profile_name: str | None  # None: uncalibrated
    size: tuple[int, int]
    fps: float  # analysed frames per second
    frames: FrameTable  # a list of FrameRecords is turned into one
    scores: np.ndarray  # (N,) smoothed frame scores
    thresholds: dict[str, float]  # operating point name -> threshold
    default_point: str
    reference: dict[str, dict[str, float]] = field(default_factory=dict)
    greyscale: bool = False  # the footage carries no colour (every analysed frame's channels agree)
    point_notes: dict[str, str] = field(default_factory=dict)  # operating point -> its measured false-alarm rate
    # False: the clip was scored against itself and is too short for that (tvad_chat.scene.scoring.judges_itself),
    # so no object was compared with anything: the absence of events says nothing
    judged: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.frames, FrameTable):
            self.frames = FrameTable(self.frames)

    @property
    def times(self) -> np.ndarray:
        return self.frames.times

    def events(self, point: str | None = None) -> list[Event]:
        """Events at an operating point: re-decided from the stored scores, no re-analysis."""
        threshold = self.threshold(point)
        times = self.times
        out = []
        for first, last in runs_above(self.scores, times, EVENT_EXTEND * threshold):
            if not self.scores[first:last + 1].max() > threshold:
                continue
            span = self.frames[first:last + 1]
            peak = first + int(np.argmax(self.scores[first:last + 1]))
            tracks = sorted({b.track_id for f in span for b in f.boxes if b.score > threshold})
            top = max((b for f in span for b in f.boxes), key=lambda b: b.score, default=None)
            out.append(Event(float(times[first]), float(times[last]), span[0].index, span[-1].index,
                             float(self.scores[peak]), float(times[peak]), tracks, self._why(top)))
        return out

    def to_report(self, point: str | None = None) -> dict[str, Any]:
        """The JSON report: every analysed frame with its boxes, the events and the operating point used."""
        name = point or self.default_point
        return {
            "profile": self.profile_name,
            "calibrated": self.profile_name is not None,
            "judged": self.judged,
            "size": list(self.size),
            "fps": round(self.fps, 4),
            "operating_point": {"name": name, "threshold": round(self.threshold(name), 4),
                                "all": {k: round(v, 4) for k, v in self.thresholds.items()}},
            "events": [{"start": round(e.start_s, 3), "end": round(e.end_s, 3), "first_index": e.first_index,
                        "last_index": e.last_index, "peak_score": round(e.peak_score, 4),
                        "peak_time": round(e.peak_time, 3), "track_ids": e.track_ids, "why": e.why}
                       for e in self.events(name)],
            "frames": [{"index": f.index, "time": round(f.time, 4), "score": round(float(score), 4),
                        "boxes": [[round(v, 1) for v in b.xyxy] + [round(b.score, 4), b.track_id] for b in f.boxes]}
                       for f, score in zip(self.frames, self.scores, strict=True)],
        }

    def threshold(self, point: str | None = None) -> float:
        name = point or self.default_point
        if name not in self.thresholds:
            raise ProfileError(f"no operating point {name!r}; choose one of {', '.join(self.thresholds)}")
        return self.thresholds[name]

    def _why(self, box: FrameBox | None) -> str:
        if box is None:
            return "unusual motion in the frame"
        speed, height, width = box.measures
        parts = []
        for label, value, key, unit in (("speed", speed, "speed", "box heights/s"),
                                        ("height", height, "height", "x the usual person height there"),
                                        ("width", width, "width", "x the usual person height there")):
            ref = self.reference.get(key, {})
            high = ref.get("99.8")
            if high and value > high:
                parts.append(f"{label} {value:.1f} {unit}; 99.8th percentile of the reference: {high:.1f}")
        if not parts:
            ref = self.reference.get("speed", {})
            parts.append(f"unusual combination of motion and size (speed {speed:.1f} box heights/s, "
                         f"median of the reference {ref.get('50.0', 0.0):.1f})")
        return "; ".join(parts)


def _mean_colour(frame: np.ndarray, pieces: list[SceneObject]) -> tuple[int, int, int]:
    """Mean RGB over the pixels of an object's pieces."""
    total, count = np.zeros(3), 0
    for piece in pieces:
        x1, y1, x2, y2 = piece.box
        total += frame[y1:y2, x1:x2][piece.mask].reshape(-1, 3).sum(axis=0)
        count += piece.area
    mean = total / max(count, 1)
    return int(mean[0]), int(mean[1]), int(mean[2])


def measure_frame(finder: ObjectFinder, frame: np.ndarray, work_size: tuple[int, int],
                  seconds_since_previous: float) -> tuple[list[SceneObject], list[Measure]]:
    """Objects of one RGB frame and their raw measures (no motion on the first frame of a stream)."""
    objects = finder.step(to_work_grey(frame, work_size))  # the first frame's flow is all zero
    dt = seconds_since_previous if seconds_since_previous > 0 else 1.0
    return objects, [measure(o, dt) for o in objects]


def heat_to_uint8(heat: np.ndarray) -> np.ndarray:
    """Heat 0..1 as 8-bit levels 0-255 (the PNG export; evaluation reads the same levels)."""
    return np.clip(np.asarray(heat, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


HeatSink = Callable[[int, np.ndarray], None]  # (source index, heat (H, W) float 0..1 at display size)
FrameSink = Callable[[int, float, np.ndarray, np.ndarray], None]  # (source index, seconds, RGB frame, its heat)


class SceneAnalyzer:
    """Feeds frames through one profile; ``run`` consumes chunks and returns the SceneAnalysis."""

    def __init__(self, profile: SceneProfile, background: np.ndarray | None = None) -> None:
        """``background``: the clip's own background (grey, work size) to start from; the profile's when None.
        The clip's own is better: a camera nudged or relit since calibration shows its whole scene as
        foreground against the profile's."""
        self.profile = profile
        self.density = Density(profile.normal, profile.scales, profile.scoring.neighbours, profile.normal_times,
                               SELF_EXCLUDE_S)
        self.finder = ObjectFinder(profile.objects, background=profile.background if background is None else background)
        self.scorer = BoxScorer(profile.scoring)
        self.heat_scale = profile.point().threshold
        self._previous_time: float | None = None
        self._step = 0
        self._colourfulness = 0.0  # largest mean channel difference of any frame

    def push(self, frame: np.ndarray, index: int, time: float, heat: HeatSink | None = None,
             frames: FrameSink | None = None) -> tuple[FrameRecord, list[Measure]]:
        """One frame: its record, and the measures of its objects (for calibration); its heat map to ``heat``,
        and with the frame itself to ``frames`` (an overlay being written)."""
        profile = self.profile
        width, height = profile.size
        if (frame.shape[1], frame.shape[0]) != (width, height):
            raise ProfileError(f"frame is {frame.shape[1]}x{frame.shape[0]} but profile {profile.name!r} is for "
                               f"{width}x{height} footage: use a profile of this camera, or analyse uncalibrated")
        dt = time - self._previous_time if self._previous_time is not None else 0.0
        self._previous_time = time
        small = frame if (width, height) == profile.work_size else cv2.resize(frame, profile.work_size,
                                                                                interpolation=cv2.INTER_AREA)
        sample = small[::8, ::8].astype(np.int16)
        self._colourfulness = max(self._colourfulness, float(np.abs(np.diff(sample, axis=2)).mean()))
        objects, pieces = measure_frame(self.finder, small, profile.work_size, dt)
        groups = join_stacked(pieces, profile.perspective)  # objects[g] for g in groups[k]: the pieces of object k
        measures = joined(pieces, groups)
        feats = features(measures, profile.perspective)
        scored = self.scorer.push(self._step, [m.box for m in measures], self.density.score(feats, time))
        self._step += 1
        sx, sy = width / profile.work_size[0], height / profile.work_size[1]
        boxes = sorted((FrameBox((b.box[0] * sx, b.box[1] * sy, b.box[2] * sx, b.box[3] * sy), b.score, b.track_id,
                                 (float(feats[b.object_index, SPEED]), float(feats[b.object_index, HEIGHT]),
                                  float(feats[b.object_index, WIDTH])),
                                 _mean_colour(small, [objects[g] for g in groups[b.object_index]]))
                        for b in scored),
                       key=lambda b: -b.score)[:MAX_BOXES_PER_FRAME]
        if heat is not None or frames is not None:
            heat_map = self._heat(objects, groups, scored)
            if heat is not None:
                heat(index, heat_map)
            if frames is not None:
                frames(index, time, frame, heat_map)
        raw = max((b.score for b in boxes), default=0.0)
        return FrameRecord(int(index), float(time), float(raw), boxes), measures

    def _heat(self, objects, groups, scored) -> np.ndarray:
        work = np.zeros((self.profile.work_size[1], self.profile.work_size[0]), np.float32)
        for b in scored:
            if b.score <= 0:
                continue
            value = b.score ** HEAT_POWER / (b.score ** HEAT_POWER + self.heat_scale ** HEAT_POWER)
            for piece in (objects[g] for g in groups[b.object_index]):
                x1, y1, x2, y2 = piece.box
                region = work[y1:y2, x1:x2]
                np.maximum(region, piece.mask * np.float32(value), out=region)
        work = cv2.GaussianBlur(work, (HEAT_BLUR, HEAT_BLUR), 0)
        return cv2.resize(work, self.profile.size, interpolation=cv2.INTER_LINEAR)

    def run(self, chunks: Iterable[Clip], heat: HeatSink | None = None,
            progress: Callable[[int], None] | None = None, frames: FrameSink | None = None) -> SceneAnalysis:
        records = FrameTable()
        for clip in chunks:
            for frame, index, time in zip(clip.frames, clip.frame_indices, clip.timestamps, strict=True):
                records.append(self.push(frame, int(index), float(time), heat, frames)[0])
            if progress is not None:
                progress(len(clip.frames))
        return self.finish(records)

    def finish(self, records: FrameTable) -> SceneAnalysis:
        fps = sampled_fps(records.times, 1.0)
        raw = np.array(records.raw_scores, np.float32)
        profile = self.profile
        # a profile fitted on the clip itself (uncalibrated) measured its rates on the clip's own stretches of time
        footage = ("this camera's normal footage" if profile.normal_times is None
                   else "this clip, its stretches of time scored against each other")
        return SceneAnalysis(
            profile_name=profile.name, size=profile.size, fps=fps, frames=records,
            scores=smooth_frame_scores(raw, fps, profile.scoring.smooth_sigma_s),
            thresholds={p.name: p.threshold for p in profile.operating_points},
            default_point=profile.default_point, reference=profile.reference,
            greyscale=self._colourfulness < GREYSCALE_SPREAD,
            point_notes={p.name: p.describe(footage) for p in profile.operating_points}, judged=self.density.judges)

