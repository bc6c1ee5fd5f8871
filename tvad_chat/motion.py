"""The motion vocabulary: what "fast", "to the left", "turns right" and "enters from the left" mean, and
the words that say it.

Defined once, in the image plane, so that every side that describes motion measures and words it the same
way: the corpus builder from extracted boxes (:mod:`datasets_builder.timeline`), SynthCampus from its exact
screen track (:mod:`datasets_builder.synth.generate`), the page's evidence from heatmap boxes
(:mod:`tvad_chat.evidence`) and the evaluators reading answers back (:mod:`tvad_chat.eval.motion_facts`).
:func:`describe_path` measures one target's path into a :class:`Trajectory`; :func:`trajectory_phrasings`
words it. Boxes are compared by :func:`iou`.

* Position: the foot point, the bottom centre of the box. It is where the target stands: walking towards
  the camera moves it down the frame, while the box centre hardly moves because the box grows.
* Size: the box height; for people the longer side of the box, which is their height whether they stand
  or lie (a fallen person's box height collapses). Vehicles' widths change as they turn, so not theirs.
* Full views: a box cut by the left, right or bottom frame edge, or under ``PARTIAL_VIEW`` of the
  target's largest size within ``PARTIAL_WINDOW_S`` (legs behind a bench or another person), shows only
  part of the target; its foot point is not where the target stands, so positions and speeds are measured
  on the full views only (on every box when fewer than two are full).
* Speed: the foot point's speed over windows of about ``SPEED_WINDOW_S`` seconds, divided by the target's
  own size (a rough perspective correction: near and far walkers both cover about 0.8 of their height per
  second), median over the path; in ``SPEED_UNIT`` (explained for readers by ``SPEED_UNIT_TEXT``), classed
  by ``SPEED_CLASSES``. Motion along the line of sight is foreshortened in the image, so a target walking
  straight at the camera reads slower than one crossing.
* Direction: the 8-way image heading of the net displacement of the (lightly smoothed) path; ``"none"``
  when the net move is below ``MIN_DISPLACEMENT`` sizes.
* Legs and turns: the path resampled every ``LEG_STEP`` sizes; a heading change of ``TURN_ANGLE_DEG``
  that persists starts a new leg; "left"/"right" as seen in the image, "back" for a reversal.
* Sides: a box within ``BORDER_MARGIN`` of a frame side touches it; of several touched sides the one the
  motion comes from (entering) or goes through (leaving). A target in view when the clip begins (ends)
  enters at the "start" (leaves at the "end"); one touching no side appears (vanishes) "inside", in one of
  the 3x3 ``REGIONS`` of the frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SIDES = ("left", "right", "top", "bottom")
_SIDE_NORMAL = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "top": (0.0, -1.0), "bottom": (0.0, 1.0)}
# 8 headings, counter-clockwise from "right", with y pointing up (image y flipped)
DIRECTIONS = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")
# speed classes by median speed in sizes per second: a walker crossing the view covers ~0.8 of its height
# per second, a runner ~2.5, a cyclist ~3, a car at 30 km/h ~5
SPEED_CLASSES: tuple[tuple[float, str], ...] = (
    (0.12, "stationary"), (0.45, "slow"), (1.3, "walking"), (3.0, "fast"), (math.inf, "very fast"))
SPEED_WINDOW_S = 0.4  # speed is measured over moves at least this long (frame-to-frame steps are jitter)
MIN_DISPLACEMENT = 0.5  # net move below this many sizes: the target stays in place
BORDER_MARGIN = 0.04  # a box within this fraction of the frame side of an edge touches it
LEG_STEP = 0.35  # resample the path every this many sizes before measuring headings
TURN_ANGLE_DEG = 55.0  # heading change that counts as a turn
MIN_LEG = 0.8  # a leg shorter than this many sizes is not a leg of its own
PARTIAL_VIEW = 0.6  # a box under this share of the target's largest size nearby is a partial view
PARTIAL_WINDOW_S = 2.0  # "nearby": within half this many seconds either side
CUT_MARGIN = 0.01  # a box within this fraction of the frame size of the left, right or bottom edge is cut
SPEED_UNIT = "box heights/s"  # what speeds are measured in (people: the longer side of their box)
SPEED_UNIT_TEXT = ("box heights per second: how many times its own height the target covers each second (for "
                   "people the longer side of their box, so a person lying down keeps their size); it does not "
                   "depend on how far the target is from the camera. A walker crossing the view does about 0.8, "
                   "a runner about 2.5, a car at 30 km/h about 5; motion towards or away from the camera reads "
                   "slower.")
REGIONS = ("top-left", "top", "top-right", "left", "centre", "right", "bottom-left", "bottom", "bottom-right")
# categories measured by their longer side (people, who may lie down); the rest by box height
PEOPLE = frozenset({"person", "pedestrian", "man", "woman", "child", "people", "runner", "jogger", "walker"})


@dataclass
class Leg:
    direction: str
    start_time: float
    end_time: float


@dataclass
class Turn:
    time: float
    frame_index: int
    sense: str  # "left", "right" or "back" (as seen in the image)
    new_direction: str


@dataclass
class Motion:
    """Direction and speed of one path."""

    direction: str  # one of DIRECTIONS, or "none"
    moving: bool
    speed: float  # sizes per second (median over the path)
    speed_class: str
    displacement: tuple[float, float]  # net move of the smoothed path in pixels (x right, y down)
    size: float  # median size in pixels
    path: np.ndarray  # the smoothed path (K, 2) of the full views, the measures were taken on
    kept: np.ndarray  # indices (K,) of the full views among the input points


def heading_label(dx: float, dy: float) -> str:
    """8-way heading of an image-space move (y down)."""
    ang = math.degrees(math.atan2(-dy, dx)) % 360.0
    return DIRECTIONS[int(((ang + 22.5) % 360.0) // 45.0)]


def foot_points(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Bottom centres (N, 2) of boxes (x1, y1, x2, y2)."""
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2.0, b[:, 3]], axis=1)


def target_sizes(boxes: np.ndarray | Sequence[Sequence[float]], category: str = "") -> np.ndarray:
    """Size (N,) of a target in each of its boxes (x1, y1, x2, y2): the height, or for people the longer side."""
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    h = b[:, 3] - b[:, 1]
    if category.strip().lower() in PEOPLE:
        return np.maximum(b[:, 2] - b[:, 0], h)
    return h


def cut_by_frame(boxes: np.ndarray | Sequence[Sequence[float]], width: int, height: int,
                 margin: float = CUT_MARGIN) -> np.ndarray:
    """Per box: is it cut by the left, right or bottom frame edge (so its foot point is not the target's)?"""
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return (b[:, 0] <= margin * width) | (b[:, 2] >= width * (1 - margin)) | (b[:, 3] >= height * (1 - margin))


def full_views(sizes: np.ndarray, times: np.ndarray, cut: np.ndarray | None = None, share: float = PARTIAL_VIEW,
               window_s: float = PARTIAL_WINDOW_S) -> np.ndarray:
    """Indices of the boxes that show the whole target: not cut by the frame, not under `share` of its
    largest size nearby."""
    sizes = np.asarray(sizes, dtype=float)
    times = np.asarray(times, dtype=float)
    cut = np.zeros(len(sizes), bool) if cut is None else np.asarray(cut, bool)
    keep = [i for i in range(len(sizes)) if not cut[i]
            and sizes[i] >= share * float(np.max(sizes[np.abs(times - times[i]) <= window_s / 2 + 1e-9]))]
    return np.array(keep, dtype=int)


def smooth_path(points: np.ndarray) -> np.ndarray:
    """3-tap moving average that keeps both end points (boxes from models jitter)."""
    if len(points) < 3:
        return points.astype(float)
    pad = np.concatenate([points[:1], points, points[-1:]]).astype(float)
    out = (pad[:-2] + pad[1:-1] + pad[2:]) / 3.0
    out[0], out[-1] = points[0], points[-1]
    return out


def path_speed(points: np.ndarray, sizes: np.ndarray, times: np.ndarray,
               window_s: float = SPEED_WINDOW_S) -> float:
    """Median over the path of the speed over >= window_s moves, in the target's own sizes per second."""
    n = len(points)
    if n < 2 or float(times[-1] - times[0]) <= 0:
        return 0.0
    samples = []
    j = 0
    for i in range(n):
        j = max(j, i + 1)
        while j < n and times[j] - times[i] < window_s - 1e-9:
            j += 1
        if j >= n:
            break
        dt = float(times[j] - times[i])
        h = max(0.5 * float(sizes[i] + sizes[j]), 1.0)
        samples.append(float(np.linalg.norm(points[j] - points[i])) / dt / h)
    if not samples:  # shorter than one window: the whole span is the one sample
        dt = float(times[-1] - times[0])
        h = max(float(np.mean(sizes)), 1.0)
        return float(np.linalg.norm(points[-1] - points[0])) / dt / h
    return float(np.median(samples))


def speed_class_of(speed: float, moving: bool = True,
                   classes: tuple[tuple[float, str], ...] = SPEED_CLASSES) -> str:
    name = next(n for lim, n in classes if speed < lim)
    if not moving and name in ("walking", "fast", "very fast"):
        return "slow"  # moving around on the spot: no net progress
    if moving and name == "stationary":
        return "slow"  # got somewhere, though standing still most of the time (walks, then falls)
    return name


def measure_motion(points: np.ndarray, sizes: np.ndarray, times: np.ndarray, cut: np.ndarray | None = None,
                   speed_classes: tuple[tuple[float, str], ...] = SPEED_CLASSES,
                   min_displacement: float = MIN_DISPLACEMENT, window_s: float = SPEED_WINDOW_S) -> Motion:
    """Direction and speed of a path of foot points with the target's size at each point (pixels, seconds).

    Measured on the full views (see :func:`full_views`), or on every point when fewer than two are full.
    """
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    sizes = np.asarray(sizes, dtype=float)
    times = np.asarray(times, dtype=float)
    kept = full_views(sizes, times, cut)
    if len(kept) < 2:
        kept = np.arange(len(points))
    points, sizes, times = points[kept], sizes[kept], times[kept]
    h_med = max(float(np.median(sizes)), 1.0)
    path = smooth_path(points)
    disp = path[-1] - path[0]
    moving = float(np.linalg.norm(disp)) >= min_displacement * h_med
    direction = heading_label(float(disp[0]), float(disp[1])) if moving else "none"
    speed = path_speed(path, sizes, times, window_s)
    return Motion(direction=direction, moving=moving, speed=speed,
                  speed_class=speed_class_of(speed, moving, speed_classes),
                  displacement=(float(disp[0]), float(disp[1])), size=h_med, path=path, kept=kept)


def _angle_between(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return math.degrees(math.acos(float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))))


def _resample(points: np.ndarray, step: float) -> np.ndarray:
    """Indices of the points kept each time the path has moved `step` pixels from the last kept one."""
    keep = [0]
    for i in range(1, len(points)):
        if np.linalg.norm(points[i] - points[keep[-1]]) >= step:
            keep.append(i)
    if keep[-1] != len(points) - 1 and len(points) > 1:
        keep.append(len(points) - 1)
    return np.array(keep)


def legs_and_turns(path: np.ndarray, times: np.ndarray, frames: Sequence[int], size: float,
                   leg_step: float = LEG_STEP, turn_angle_deg: float = TURN_ANGLE_DEG,
                   min_leg: float = MIN_LEG) -> tuple[list[Leg], list[Turn]]:
    """Straight legs of a (smoothed) moving path and the turns between them."""
    times = np.asarray(times, dtype=float)
    legs: list[Leg] = []
    turns: list[Turn] = []
    if len(path) < 2:
        return legs, turns
    idx = _resample(path, leg_step * size)
    pts, ts = path[idx], times[idx]
    if len(pts) < 2:
        return legs, turns
    seg_dirs = [pts[i + 1] - pts[i] for i in range(len(pts) - 1)]
    # merge segments into legs while the heading stays within the turn angle of the leg's start
    leg_start = 0
    leg_vec = seg_dirs[0]
    for i in range(1, len(seg_dirs)):
        ang = _angle_between(leg_vec, seg_dirs[i])
        # require the new heading to persist over two segments when available (noise guard)
        persists = i + 1 >= len(seg_dirs) or _angle_between(leg_vec, seg_dirs[i + 1]) >= turn_angle_deg
        if ang >= turn_angle_deg and persists and np.linalg.norm(pts[i] - pts[leg_start]) >= min_leg * size:
            v = pts[i] - pts[leg_start]
            legs.append(Leg(heading_label(v[0], v[1]), float(ts[leg_start]), float(ts[i])))
            leg_start = i
            leg_vec = seg_dirs[i]
        else:
            leg_vec = pts[i + 1] - pts[leg_start]
    v = pts[-1] - pts[leg_start]
    if np.linalg.norm(v) >= min_leg * size or not legs:
        legs.append(Leg(heading_label(v[0], v[1]), float(ts[leg_start]), float(ts[-1])))
    else:  # a short tail: fold into the last leg
        legs[-1].end_time = float(ts[-1])
    for a, b in zip(legs, legs[1:]):
        if a.direction == b.direction:
            continue
        delta = (DIRECTIONS.index(b.direction) * 45 - DIRECTIONS.index(a.direction) * 45 + 540) % 360 - 180
        if abs(delta) < turn_angle_deg:  # signed, counter-clockwise positive (y up)
            continue
        sense = "back" if abs(delta) >= 150 else ("left" if delta > 0 else "right")
        fi = frames[int(np.argmin(np.abs(times - b.start_time)))]
        turns.append(Turn(time=b.start_time, frame_index=int(fi), sense=sense, new_direction=b.direction))
    return legs, turns


def touching(box: Sequence[float], width: int, height: int, margin: float = BORDER_MARGIN) -> list[str]:
    """Frame sides the box touches (within `margin` of the frame size)."""
    mx, my = margin * width, margin * height
    sides = []
    if box[0] <= mx:
        sides.append("left")
    if box[2] >= width - mx:
        sides.append("right")
    if box[1] <= my:
        sides.append("top")
    if box[3] >= height - my:
        sides.append("bottom")
    return sides


def pick_side(sides: list[str], motion: np.ndarray | Sequence[float], entering: bool) -> str:
    """Of the touched sides, the one the motion comes from (entering) or goes to (leaving)."""
    motion = np.asarray(motion, dtype=float)
    if len(sides) == 1 or not np.any(motion):
        return sides[0]
    sign = -1.0 if entering else 1.0
    return max(sides, key=lambda s: sign * float(np.dot(_SIDE_NORMAL[s], motion)))


def entry_and_exit(first_box: Sequence[float], last_box: Sequence[float], path: np.ndarray, width: int,
                   height: int, starts_with_clip: bool, ends_with_clip: bool,
                   margin: float = BORDER_MARGIN) -> tuple[str, str]:
    """("start" | a side | "inside", "end" | a side | "inside") of a path seen from first_box to last_box."""
    n = len(path)
    first_motion = path[min(n - 1, 2)] - path[0] if n > 1 else np.zeros(2)
    last_motion = path[-1] - path[max(0, n - 3)] if n > 1 else np.zeros(2)
    if starts_with_clip:
        entry = "start"
    else:
        sides = touching(first_box, width, height, margin)
        entry = pick_side(sides, first_motion, entering=True) if sides else "inside"
    if ends_with_clip:
        exit_ = "end"
    else:
        sides = touching(last_box, width, height, margin)
        exit_ = pick_side(sides, last_motion, entering=False) if sides else "inside"
    return entry, exit_


def region_cue(box: Sequence[float], width: int, height: int) -> str:
    """Cell of a 3x3 grid of the frame (one of REGIONS) that holds the box centre."""
    cx = (box[0] + box[2]) / 2.0
    cy = (box[1] + box[3]) / 2.0
    col = min(2, max(0, int(3 * cx / max(width, 1))))
    row = min(2, max(0, int(3 * cy / max(height, 1))))
    return REGIONS[row * 3 + col]


# --------------------------------------------------------------------------- one target's path, described


@dataclass
class TrajectoryConfig:
    border_margin: float = BORDER_MARGIN  # a box within this fraction of the frame side of an edge touches it
    min_displacement: float = MIN_DISPLACEMENT  # net move below this many sizes: the target stays in place
    leg_step: float = LEG_STEP  # resample the path every this many sizes before measuring headings
    turn_angle_deg: float = TURN_ANGLE_DEG  # heading change that counts as a turn
    speed_window_s: float = SPEED_WINDOW_S  # speed is measured over moves at least this long
    speed_classes: tuple[tuple[float, str], ...] = SPEED_CLASSES  # by speed in SPEED_UNIT


@dataclass
class Trajectory:
    """What the motion vocabulary says about one target's path, in words-ready form."""

    entry: str  # a side ("left"...), "start" (already in view when the clip begins) or "inside"
    exit: str  # a side, "end" (still in view when the clip ends) or "inside"
    entry_region: str  # REGIONS cell of the first box
    exit_region: str
    direction: str  # one of DIRECTIONS, or "none" when the target stays in place
    legs: list[Leg]
    turns: list[Turn]
    speed: float  # in SPEED_UNIT: the target's own sizes per second (median over the path)
    speed_class: str
    start_time: float
    end_time: float
    start_frame: int
    end_frame: int
    displacement: tuple[float, float]  # net foot-point move in pixels (x right, y down)
    size: float  # median size in pixels that speed and displacement are measured in

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry, "exit": self.exit, "entry_region": self.entry_region,
            "exit_region": self.exit_region, "direction": self.direction,
            "legs": [vars(leg) for leg in self.legs], "turns": [vars(t) for t in self.turns],
            "speed": round(self.speed, 3), "speed_class": self.speed_class,
            "start_time": round(self.start_time, 3), "end_time": round(self.end_time, 3),
            "start_frame": self.start_frame, "end_frame": self.end_frame,
            "displacement": [round(v, 1) for v in self.displacement], "size": round(self.size, 2),
        }


def describe_path(boxes: np.ndarray | Sequence[Sequence[float]], times: np.ndarray | Sequence[float],
                  frames: Sequence[int], width: int, height: int, starts_with_clip: bool, ends_with_clip: bool,
                  category: str = "", feet: np.ndarray | None = None,
                  config: TrajectoryConfig | None = None) -> Trajectory:
    """Entry and exit, direction, legs and turns, speed and times of one target seen in ``boxes`` (N, 4, xyxy
    pixels of a ``width`` x ``height`` frame) at ``times`` (seconds) in ``frames`` (frame numbers).

    Positions are the boxes' foot points unless ``feet`` (N, 2) gives the exact ones (SynthCampus's projected
    ground track); sizes and frame sides always come from the boxes.
    """
    cfg = config or TrajectoryConfig()
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    times = np.asarray(times, dtype=float)
    points = foot_points(boxes) if feet is None else np.asarray(feet, dtype=float)
    mo = measure_motion(points, target_sizes(boxes, category), times, cut_by_frame(boxes, width, height),
                        cfg.speed_classes, cfg.min_displacement, cfg.speed_window_s)
    legs: list[Leg] = []
    turns: list[Turn] = []
    if mo.moving:
        legs, turns = legs_and_turns(mo.path, times[mo.kept], [frames[i] for i in mo.kept], mo.size, cfg.leg_step,
                                     cfg.turn_angle_deg)
    entry, exit_ = entry_and_exit(boxes[0], boxes[-1], mo.path, width, height, starts_with_clip, ends_with_clip,
                                  cfg.border_margin)
    return Trajectory(
        entry=entry, exit=exit_, entry_region=region_cue(boxes[0], width, height),
        exit_region=region_cue(boxes[-1], width, height), direction=mo.direction, legs=legs, turns=turns,
        speed=mo.speed, speed_class=mo.speed_class, start_time=float(times[0]), end_time=float(times[-1]),
        start_frame=int(frames[0]), end_frame=int(frames[-1]), displacement=mo.displacement, size=mo.size)


# --------------------------------------------------------------------------- phrasing
# Every sentence about a target's motion (corpus narratives, the page's evidence summaries) is worded here.

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
STILL_WORDS = ("stays in roughly the same place", "keeps to one spot", "hardly moves")  # direction "none"
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
# how a path begins (entering) or ends: through a frame side, at the clip's edge in time, or inside the frame;
# three wordings each, {where} a side or region, {time} the moment
_END_WORDS: dict[tuple[bool, str], tuple[str, str, str]] = {
    (True, "side"): ("enters from {where} at {time}", "comes in from {where} side at {time}",
                     "appears at {where} edge at {time}"),
    (True, "clip"): ("is already in view at the start, in {where} of the frame",
                     "is visible from the first frame in {where}", "starts in {where} of the frame"),
    (True, "inside"): ("appears in {where} of the frame at {time}", "shows up in {where} at {time}",
                       "first appears in {where} at {time}"),
    (False, "side"): ("leaves on {where} at {time}", "exits through {where} side at {time}",
                      "disappears at {where} edge at {time}"),
    (False, "clip"): ("is still in view at the end, in {where} of the frame",
                      "remains visible in {where} until the clip ends", "ends the clip in {where} of the frame"),
    (False, "inside"): ("disappears in {where} of the frame at {time}", "is lost from view in {where} at {time}",
                        "vanishes in {where} at {time}"),
}


def fmt_time(t: float) -> str:
    return f"{t:.1f} s"


def end_phrase(tr: Trajectory, entering: bool, variant: int = 0) -> str:
    """How the path begins (``entering``) or ends, e.g. "enters from the left at 1.2 s"."""
    end, region, time = (tr.entry, tr.entry_region, tr.start_time) if entering else (tr.exit, tr.exit_region,
                                                                                        tr.end_time)
    kind = "side" if end in SIDES else "inside" if end == "inside" else "clip"
    where = SIDE_WORDS[end] if kind == "side" else REGION_WORDS[region]
    return _END_WORDS[(entering, kind)][variant % 3].format(where=where, time=fmt_time(time))


def _turn_phrase(turn: Turn, variant: int) -> str:
    where = DIRECTION_WORDS[turn.new_direction][variant % 3]
    if turn.sense == "back":
        return f"turns back at {fmt_time(turn.time)} and heads {where}"
    return (f"turns {turn.sense} at {fmt_time(turn.time)} and heads {where}",
            f"at {fmt_time(turn.time)} it turns {turn.sense}, heading {where}",
            f"makes a {turn.sense} turn at {fmt_time(turn.time)}, then goes {where}")[variant % 3]


def movement_phrase(tr: Trajectory, variant: int = 0) -> str:
    """Which way and how fast, with the turns: e.g. "moves from left to right at walking pace"."""
    v = variant % 3
    if tr.direction == "none":
        move = STILL_WORDS[v]
        if tr.speed_class != "stationary":
            move += (" while moving around slowly", ", shifting about slowly", " but shifts about")[v]
        return move
    speed = SPEED_WORDS[tr.speed_class][v]
    if tr.turns:
        return (f"moves {DIRECTION_WORDS[tr.legs[0].direction][v]} {speed}, then "
                + ", then ".join(_turn_phrase(t, v) for t in tr.turns))
    return f"moves {DIRECTION_WORDS[tr.direction][v]} {speed}"


def motion_summary(tr: Trajectory, variant: int = 0) -> str:
    """A short clause: direction and speed, e.g. 'moving from left to right fast'."""
    if tr.direction == "none":
        return ("staying in place", "keeping to one spot", "hardly moving")[variant % 3]
    return f"moving {DIRECTION_WORDS[tr.direction][variant % 3]} {SPEED_WORDS[tr.speed_class][variant % 3]}"


def trajectory_phrasings(tr: Trajectory, subject: str) -> list[str]:
    """Three phrasings of one trajectory; each states the same facts.

    ``subject`` is a noun phrase such as "the cyclist"; the first word is capitalised.
    """
    subj = subject[:1].upper() + subject[1:]
    out = []
    for v in range(3):
        move, entry, exit_ = movement_phrase(tr, v), end_phrase(tr, True, v), end_phrase(tr, False, v)
        if v == 0:
            out.append(f"{subj} {entry}, {move}, and {exit_}.")
        elif v == 1:
            out.append(f"{subj} {move}. It {entry} and {exit_}.")
        else:
            out.append(f"Between {fmt_time(tr.start_time)} and {fmt_time(tr.end_time)}, {subject} {move}; "
                       f"it {entry} and {exit_}.")
    return out


# --------------------------------------------------------------------------- box overlap


def pairwise_iou(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float],
                 inclusive: bool = False) -> np.ndarray:
    """Intersection over union of xyxy boxes ``a[..., 4]`` and ``b[..., 4]``, broadcast elementwise (0 where the
    union is empty).

    Coordinates are continuous (width = x2 - x1) unless ``inclusive``: then they are integer pixels with
    x2, y2 the last pixel inside (width = x2 - x1 + 1), the convention of the public RBDC/TBDC scripts.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    plus = 1.0 if inclusive else 0.0
    ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + plus, 0, None)
    iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + plus, 0, None)
    inter = ix * iy
    area_a = (a[..., 2] - a[..., 0] + plus) * (a[..., 3] - a[..., 1] + plus)
    area_b = (b[..., 2] - b[..., 0] + plus) * (b[..., 3] - b[..., 1] + plus)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros(np.shape(inter), dtype=float), where=union > 0)


def iou_matrix(a: np.ndarray | Sequence[Sequence[float]], b: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Intersection over union of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), xyxy: (N, M)."""
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    return pairwise_iou(a[:, None, :], b[None, :, :])


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes (0 when both are empty)."""
    return float(pairwise_iou(a, b))
