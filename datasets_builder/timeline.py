"""From per-frame records to per-target timelines and motion narratives.

1. :func:`associate` links instances of consecutive extracted frames into
   timelines: a Hungarian assignment (scipy's ``linear_sum_assignment``) on a
   score mixing box overlap (IoU against a constant-velocity prediction) and
   appearance similarity (attribute agreement), with hard limits: same
   category, and a centre shift no larger than a few box sizes per step.
2. :func:`describe_trajectory` measures a timeline's geometry: where it
   enters and leaves (image sides), its overall direction, its legs and
   turns, its speed class (in sizes per second, a rough perspective
   correction) and its start and end times, with the rules of
   :mod:`tvad_chat.motion` (the same rules SynthCampus's records use).
3. :func:`trajectory_phrasings` renders that description in several
   phrasings (references for BLEU, variety for training).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from datasets_builder.extract import Box, FrameRecord, region_cue
from tvad_chat.motion import (  # noqa: F401  (DIRECTIONS, SIDES, heading_label: re-exported)
    BORDER_MARGIN,
    DIRECTIONS,
    LEG_STEP,
    MIN_DISPLACEMENT,
    SIDES,
    SPEED_CLASSES,
    SPEED_WINDOW_S,
    TURN_ANGLE_DEG,
    Leg,
    Turn,
    cut_by_frame,
    entry_and_exit,
    foot_points,
    heading_label,
    legs_and_turns,
    measure_motion,
    target_sizes,
)

# --------------------------------------------------------------------------- association


@dataclass
class AssociationConfig:
    iou_weight: float = 0.6
    appearance_weight: float = 0.4
    min_score: float = 0.15  # a pair scoring below this is not linked
    max_center_shift: float = 2.0  # max centre move per extracted step, in sizes of the target's box
    max_gap_steps: int = 4  # a timeline unseen for more extracted steps than this ends
    same_category: bool = True
    min_length: int = 1  # timelines with fewer observations are dropped
    # When every instance carries an annotated track id (ground truth), group by it instead of matching.
    use_track_ids: bool = True


@dataclass
class Observation:
    frame_index: int
    timestamp: float
    box: Box
    confidence: float = 1.0
    anomalous: bool | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    category: str = ""
    track_id: str | None = None  # the annotated id, when the backend had one


@dataclass
class Timeline:
    """One target followed through the clip."""

    target_id: str
    category: str
    attributes: dict[str, str]
    observations: list[Observation]

    @property
    def start_frame(self) -> int:
        return self.observations[0].frame_index

    @property
    def end_frame(self) -> int:
        return self.observations[-1].frame_index

    @property
    def start_time(self) -> float:
        return self.observations[0].timestamp

    @property
    def end_time(self) -> float:
        return self.observations[-1].timestamp

    @property
    def anomaly_rate(self) -> float:
        """Share of observations flagged anomalous (those with a flag)."""
        flags = [o.anomalous for o in self.observations if o.anomalous is not None]
        return float(np.mean(flags)) if flags else 0.0

    @property
    def anomalous(self) -> bool:
        return self.anomaly_rate >= 0.5

    @property
    def confidence(self) -> float:
        return float(np.mean([o.confidence for o in self.observations]))

    def majority_track_id(self) -> tuple[str | None, float]:
        """The annotated id seen most often and its share (1.0 = a pure timeline)."""
        ids = Counter(o.track_id for o in self.observations)
        tid, n = ids.most_common(1)[0]
        return tid, n / len(self.observations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_id": self.target_id, "category": self.category, "attributes": self.attributes,
            "start_frame": self.start_frame, "end_frame": self.end_frame,
            "start_time": round(self.start_time, 3), "end_time": round(self.end_time, 3),
            "anomalous": self.anomalous, "anomaly_rate": round(self.anomaly_rate, 3),
            "confidence": round(self.confidence, 3),
            "boxes": [[o.frame_index] + [round(v, 1) for v in o.box] for o in self.observations],
        }


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _center(b: Sequence[float]) -> np.ndarray:
    return np.array([(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0])


def appearance_similarity(a: dict[str, str], b: dict[str, str]) -> float:
    """Agreement of appearance attributes in [0, 1]; 0.5 when there is nothing to compare.

    'action' is left out: it describes motion and may change along a timeline.
    Values are compared as word sets (Jaccard), so "dark blue" vs "blue" scores 0.5.
    """
    keys = [k for k in set(a) & set(b) if k != "action"]
    if not keys:
        return 0.5
    sims = []
    for k in keys:
        wa, wb = set(str(a[k]).lower().split()), set(str(b[k]).lower().split())
        sims.append(len(wa & wb) / len(wa | wb) if wa | wb else 1.0)
    return float(np.mean(sims))


@dataclass
class _Track:
    obs: list[Observation]
    step_last: int  # index of the extracted step of the last observation

    def predicted_box(self, frame_index: int) -> np.ndarray:
        last = np.array(self.obs[-1].box, dtype=float)
        if len(self.obs) < 2:
            return last
        prev = self.obs[-2]
        df = self.obs[-1].frame_index - prev.frame_index
        if df <= 0:
            return last
        v = (_center(self.obs[-1].box) - _center(prev.box)) / df
        shift = v * (frame_index - self.obs[-1].frame_index)
        return last + np.array([shift[0], shift[1], shift[0], shift[1]])

    def size(self) -> float:
        b = self.obs[-1].box
        return max(b[2] - b[0], b[3] - b[1], 1.0)

    def attributes(self) -> dict[str, str]:
        return _vote_attributes(self.obs[-5:])


def _vote_attributes(obs: Sequence[Observation]) -> dict[str, str]:
    votes: dict[str, Counter] = {}
    for o in obs:
        for k, v in o.attributes.items():
            votes.setdefault(k, Counter())[v] += 1
    return {k: c.most_common(1)[0][0] for k, c in sorted(votes.items())}


def associate(records: Sequence[FrameRecord], config: AssociationConfig | None = None,
              prefix: str = "t") -> list[Timeline]:
    """Link the instances of frame records (any order; sorted by frame) into timelines ``{prefix}0, ...``."""
    cfg = config or AssociationConfig()
    recs = sorted((r for r in records if r.ok), key=lambda r: r.frame_index)
    all_ids = [i.track_id for r in recs for i in r.instances]
    if cfg.use_track_ids and all_ids and all(t is not None for t in all_ids):
        return _group_by_track_id(recs, cfg, prefix)
    active: list[_Track] = []
    finished: list[_Track] = []
    for step, rec in enumerate(recs):
        # retire tracks that have been unseen too long
        still = []
        for t in active:
            (still if step - t.step_last <= cfg.max_gap_steps else finished).append(t)
        active = still
        dets = [Observation(frame_index=rec.frame_index, timestamp=rec.timestamp, box=tuple(i.box),
                            confidence=i.confidence, anomalous=i.anomalous, attributes=dict(i.attributes),
                            category=i.category, track_id=i.track_id) for i in rec.instances]
        if not dets:
            continue
        matched_dets: set[int] = set()
        if active:
            big = 1e6
            cost = np.full((len(active), len(dets)), big)
            for ti, t in enumerate(active):
                pred = t.predicted_box(rec.frame_index)
                pc = _center(pred)
                limit = cfg.max_center_shift * t.size() * max(1, step - t.step_last)
                t_attrs = t.attributes()
                for di, d in enumerate(dets):
                    if cfg.same_category and d.category != t.obs[-1].category:
                        continue
                    if np.linalg.norm(_center(d.box) - pc) > limit:
                        continue
                    score = cfg.iou_weight * box_iou(pred, d.box) + cfg.appearance_weight * appearance_similarity(
                        t_attrs, d.attributes)
                    if score >= cfg.min_score:
                        cost[ti, di] = 1.0 - score
            rows, cols = linear_sum_assignment(cost)
            for ti, di in zip(rows, cols):
                if cost[ti, di] >= big:
                    continue
                active[ti].obs.append(dets[di])
                active[ti].step_last = step
                matched_dets.add(di)
        for di, d in enumerate(dets):
            if di not in matched_dets:
                active.append(_Track(obs=[d], step_last=step))
    finished.extend(active)
    finished = [t for t in finished if len(t.obs) >= cfg.min_length]
    finished.sort(key=lambda t: (t.obs[0].frame_index, t.obs[0].box[0]))
    timelines = []
    for n, t in enumerate(finished):
        cat = Counter(o.category for o in t.obs).most_common(1)[0][0]
        timelines.append(Timeline(target_id=f"{prefix}{n}", category=cat, attributes=_vote_attributes(t.obs),
                                  observations=t.obs))
    return timelines


def _group_by_track_id(recs: Sequence[FrameRecord], cfg: AssociationConfig, prefix: str) -> list[Timeline]:
    groups: dict[str, list[Observation]] = {}
    for rec in recs:
        for i in rec.instances:
            groups.setdefault(str(i.track_id), []).append(Observation(
                frame_index=rec.frame_index, timestamp=rec.timestamp, box=tuple(i.box), confidence=i.confidence,
                anomalous=i.anomalous, attributes=dict(i.attributes), category=i.category, track_id=i.track_id))
    tracks = [obs for obs in groups.values() if len(obs) >= cfg.min_length]
    tracks.sort(key=lambda obs: (obs[0].frame_index, obs[0].box[0]))
    return [Timeline(target_id=f"{prefix}{n}", category=Counter(o.category for o in obs).most_common(1)[0][0],
                     attributes=_vote_attributes(obs), observations=obs) for n, obs in enumerate(tracks)]


# --------------------------------------------------------------------------- trajectory description
# The words' meanings (thresholds, heading rule, position = foot point) live in tvad_chat.motion,
# shared with SynthCampus's trajectory records.


@dataclass
class TrajectoryConfig:
    border_margin: float = BORDER_MARGIN  # a box within this fraction of the frame side of an edge touches it
    min_displacement: float = MIN_DISPLACEMENT  # net move below this many sizes: the target stays in place
    leg_step: float = LEG_STEP  # resample the path every this many sizes before measuring headings
    turn_angle_deg: float = TURN_ANGLE_DEG  # heading change that counts as a turn
    speed_window_s: float = SPEED_WINDOW_S  # speed is measured over moves at least this long
    # speed classes by median speed in sizes (see tvad_chat.motion) per second
    speed_classes: tuple[tuple[float, str], ...] = SPEED_CLASSES


@dataclass
class Trajectory:
    """Geometry of one timeline, in words-ready form."""

    entry: str  # a side ("left"...), "start" (already in view when the clip begins) or "inside"
    exit: str  # a side, "end" (still in view when the clip ends) or "inside"
    entry_region: str
    exit_region: str
    direction: str  # one of DIRECTIONS, or "none" when the target stays in place
    legs: list[Leg]
    turns: list[Turn]
    speed: float  # sizes (box heights; people's longer box side) per second (median over the path)
    speed_class: str
    start_time: float
    end_time: float
    start_frame: int
    end_frame: int
    displacement: tuple[float, float]  # net foot-point move in pixels (x right, y down)

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry, "exit": self.exit, "entry_region": self.entry_region,
            "exit_region": self.exit_region, "direction": self.direction,
            "legs": [vars(leg) for leg in self.legs], "turns": [vars(t) for t in self.turns],
            "speed": round(self.speed, 3), "speed_class": self.speed_class,
            "start_time": round(self.start_time, 3), "end_time": round(self.end_time, 3),
            "start_frame": self.start_frame, "end_frame": self.end_frame,
            "displacement": [round(v, 1) for v in self.displacement],
        }


def describe_trajectory(
    timeline: Timeline, width: int, height: int, clip_start_frame: int = 0, clip_end_frame: int | None = None,
    config: TrajectoryConfig | None = None,
) -> Trajectory:
    """Measure entry/exit sides, direction, turns, speed class and times of a timeline."""
    cfg = config or TrajectoryConfig()
    obs = timeline.observations
    boxes = np.array([o.box for o in obs], dtype=float)
    times = np.array([o.timestamp for o in obs], dtype=float)
    frames = [o.frame_index for o in obs]
    mo = measure_motion(foot_points(boxes), target_sizes(boxes, timeline.category), times,
                        cut_by_frame(boxes, width, height), cfg.speed_classes, cfg.min_displacement,
                        cfg.speed_window_s)
    legs: list[Leg] = []
    turns: list[Turn] = []
    if mo.moving:
        legs, turns = legs_and_turns(mo.path, times[mo.kept], [frames[i] for i in mo.kept], mo.size, cfg.leg_step,
                                     cfg.turn_angle_deg)
    entry, exit_ = entry_and_exit(
        boxes[0], boxes[-1], mo.path, width, height, starts_with_clip=obs[0].frame_index <= clip_start_frame,
        ends_with_clip=clip_end_frame is not None and obs[-1].frame_index >= clip_end_frame,
        margin=cfg.border_margin)
    return Trajectory(
        entry=entry, exit=exit_, entry_region=region_cue(boxes[0], width, height),
        exit_region=region_cue(boxes[-1], width, height), direction=mo.direction, legs=legs, turns=turns,
        speed=mo.speed, speed_class=mo.speed_class, start_time=float(times[0]), end_time=float(times[-1]),
        start_frame=frames[0], end_frame=frames[-1], displacement=mo.displacement,
    )


# --------------------------------------------------------------------------- phrasing

# Each heading in several wordings; every wording names only that heading.
DIRECTION_WORDS: dict[str, tuple[str, ...]] = {
    "right": ("from left to right", "to the right", "rightwards"),
    "left": ("from right to left", "to the left", "leftwards"),
    "up": ("from the bottom of the frame towards the top", "upwards in the frame", "up the frame, away from the camera"),
    "down": ("from the top of the frame towards the bottom", "downwards in the frame",
             "down the frame, towards the camera"),
    "up-right": ("diagonally towards the top right", "up and to the right", "towards the upper right"),
    "up-left": ("diagonally towards the top left", "up and to the left", "towards the upper left"),
    "down-right": ("diagonally towards the bottom right", "down and to the right", "towards the lower right"),
    "down-left": ("diagonally towards the bottom left", "down and to the left", "towards the lower left"),
}
SPEED_WORDS: dict[str, tuple[str, ...]] = {
    "stationary": ("without moving", "standing still", "stationary"),
    "slow": ("slowly", "at a slow pace", "slowly"),
    "walking": ("at walking pace", "at a normal walking speed", "at an ordinary pace"),
    "fast": ("fast", "quickly", "at high speed"),
    "very fast": ("very fast", "very quickly", "at very high speed"),
}
SIDE_WORDS = {"left": "the left", "right": "the right", "top": "the top", "bottom": "the bottom"}
REGION_WORDS = {"top-left": "the top left", "top": "the top", "top-right": "the top right", "left": "the left",
                "centre": "the centre", "right": "the right", "bottom-left": "the bottom left",
                "bottom": "the bottom", "bottom-right": "the bottom right"}


def fmt_time(t: float) -> str:
    return f"{t:.1f} s"


def _entry_phrase(tr: Trajectory, variant: int) -> str:
    if tr.entry in SIDES:
        return (f"enters from {SIDE_WORDS[tr.entry]} at {fmt_time(tr.start_time)}",
                f"comes in from {SIDE_WORDS[tr.entry]} side at {fmt_time(tr.start_time)}",
                f"appears at {SIDE_WORDS[tr.entry]} edge at {fmt_time(tr.start_time)}")[variant % 3]
    if tr.entry == "start":
        return (f"is already in view at the start, in {REGION_WORDS[tr.entry_region]} of the frame",
                f"is visible from the first frame in {REGION_WORDS[tr.entry_region]}",
                f"starts in {REGION_WORDS[tr.entry_region]} of the frame")[variant % 3]
    return (f"appears in {REGION_WORDS[tr.entry_region]} of the frame at {fmt_time(tr.start_time)}",
            f"shows up in {REGION_WORDS[tr.entry_region]} at {fmt_time(tr.start_time)}",
            f"first appears in {REGION_WORDS[tr.entry_region]} at {fmt_time(tr.start_time)}")[variant % 3]


def _exit_phrase(tr: Trajectory, variant: int) -> str:
    if tr.exit in SIDES:
        return (f"leaves on {SIDE_WORDS[tr.exit]} at {fmt_time(tr.end_time)}",
                f"exits through {SIDE_WORDS[tr.exit]} side at {fmt_time(tr.end_time)}",
                f"disappears at {SIDE_WORDS[tr.exit]} edge at {fmt_time(tr.end_time)}")[variant % 3]
    if tr.exit == "end":
        return (f"is still in view at the end, in {REGION_WORDS[tr.exit_region]} of the frame",
                f"remains visible in {REGION_WORDS[tr.exit_region]} until the clip ends",
                f"ends the clip in {REGION_WORDS[tr.exit_region]} of the frame")[variant % 3]
    return (f"disappears in {REGION_WORDS[tr.exit_region]} of the frame at {fmt_time(tr.end_time)}",
            f"is lost from view in {REGION_WORDS[tr.exit_region]} at {fmt_time(tr.end_time)}",
            f"vanishes in {REGION_WORDS[tr.exit_region]} at {fmt_time(tr.end_time)}")[variant % 3]


def _turn_phrase(turn: Turn, variant: int) -> str:
    where = DIRECTION_WORDS[turn.new_direction][variant % 3]
    if turn.sense == "back":
        return f"turns back at {fmt_time(turn.time)} and heads {where}"
    return (f"turns {turn.sense} at {fmt_time(turn.time)} and heads {where}",
            f"at {fmt_time(turn.time)} it turns {turn.sense}, heading {where}",
            f"makes a {turn.sense} turn at {fmt_time(turn.time)}, then goes {where}")[variant % 3]


def motion_summary(tr: Trajectory, variant: int = 0) -> str:
    """A short clause: direction and speed, e.g. 'moving from left to right fast'."""
    speed = SPEED_WORDS[tr.speed_class][variant % 3]
    if tr.direction == "none":
        return ("staying in place", "keeping to one spot", "hardly moving")[variant % 3]
    return f"moving {DIRECTION_WORDS[tr.direction][variant % 3]} {speed}"


def trajectory_phrasings(tr: Trajectory, subject: str) -> list[str]:
    """Several phrasings of one trajectory; each states the same facts.

    ``subject`` is a noun phrase such as "the cyclist"; the first word is capitalised.
    """
    subj = subject[:1].upper() + subject[1:]
    out = []
    for v in range(3):
        speed = SPEED_WORDS[tr.speed_class][v]
        if tr.direction == "none":
            move = ("stays in roughly the same place", "keeps to one spot", "hardly moves")[v]
            if tr.speed_class != "stationary":
                move += (" while moving around slowly", ", shifting about slowly", " but shifts about")[v]
        elif tr.turns:
            move = f"moves {DIRECTION_WORDS[tr.legs[0].direction][v]} {speed}"
            move += ", then " + ", then ".join(_turn_phrase(t, v) for t in tr.turns)
        else:
            move = f"moves {DIRECTION_WORDS[tr.direction][v]} {speed}"
        entry, exit_ = _entry_phrase(tr, v), _exit_phrase(tr, v)
        if v == 0:
            out.append(f"{subj} {entry}, {move}, and {exit_}.")
        elif v == 1:
            out.append(f"{subj} {move}. It {entry} and {exit_}.")
        else:
            out.append(f"Between {fmt_time(tr.start_time)} and {fmt_time(tr.end_time)}, {subject} {move}; "
                       f"it {entry} and {exit_}.")
    return out


def temporal_phrasings(start_time: float, end_time: float, start_frame: int, end_frame: int) -> list[str]:
    """When something happens, in several phrasings."""
    a, b = fmt_time(start_time), fmt_time(end_time)
    return [
        f"It happens from {a} to {b} (frames {start_frame} to {end_frame}).",
        f"The anomaly starts at {a} and ends at {b}.",
        f"Between {a} and {b}, that is frames {start_frame} to {end_frame}.",
    ]
