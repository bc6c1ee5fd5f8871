"""What a scene profile knows about one object: measures in the object's own units.

A camera sees near people large and far people small, so every motion and size measure is divided by
the height a person is expected to have where the object stands (its foot row): the perspective line
``height = slope * foot_row + intercept``, fitted on the calibration footage (median object height per
band of rows, then a least-squares line). Outside the rows seen in calibration the line is not trusted:
the foot row is clamped to the 1st-99th percentile of the rows seen, and the expected height never drops
below the median height of the farthest band (without these, the line reaches tiny or negative heights
near the top of the frame and everything there looks fast).

Per object (``FEATURE_NAMES``):
- ``speed``: the 90th percentile of the flow magnitude on its pixels, in expected heights per second;
- ``dir_0`` .. ``dir_7``: magnitude-weighted histogram of the flow direction over 8 sectors (0 = right,
  counter-clockwise, image y up), each bin the mean flow per pixel in that sector in heights per second;
- ``height``, ``width``: box height and width over the expected height (a cart is wide, a car big,
  a far-away object small);
- ``fill``: share of the box covered by the object's pixels (a person about 0.5, a vehicle more).

Pieces of one object: where a person's clothes match the background, background subtraction splits them
into stacked pieces (torso above legs: in more than half of Avenue's training frames). ``join_stacked`` groups
pieces that lie one above the other, horizontally aligned, move alike and together stand no taller than about
one expected person (two people one above the other in the image stay two), and ``joined`` measures each group
as one object. Calibration and analysis join the same way, after the perspective line is known.

The density model standardises with one scale per group (all motion features share one: scaling each
direction bin on its own blows up bins that almost never fire in normal footage) and one per size measure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tvad_chat.scene.objects import SceneObject

DIRECTION_BINS = 8
SECTOR_ANGLES = np.arange(DIRECTION_BINS) * 2 * np.pi / DIRECTION_BINS  # centre of each direction sector
JOIN_OVERLAP = 0.5  # horizontal overlap, as a share of the narrower piece, of pieces of one object
JOIN_GAP = 0.3  # expected heights: the most vertical gap between pieces of one object
JOIN_HEIGHT = 1.25  # expected heights: the tallest one object made of pieces may stand
JOIN_FLOW = 0.25  # expected heights per second, plus half the faster piece's flow: pieces that move alike
FEATURE_NAMES = ("speed", *(f"dir_{i}" for i in range(DIRECTION_BINS)), "height", "width", "fill")
MOTION_FEATURES = slice(0, 1 + DIRECTION_BINS)
SPEED, HEIGHT, WIDTH, FILL = 0, 1 + DIRECTION_BINS, 2 + DIRECTION_BINS, 3 + DIRECTION_BINS
ROW_BANDS = 8  # bands of foot rows for the perspective fit
MIN_BAND = 3  # objects a band needs to count


@dataclass
class Perspective:
    """Expected person height (working pixels) at a foot row."""

    slope: float
    intercept: float
    row_min: float
    row_max: float
    min_height: float

    def expected_height(self, foot_rows: np.ndarray | float) -> np.ndarray:
        rows = np.clip(np.asarray(foot_rows, dtype=np.float64), self.row_min, self.row_max)
        return np.maximum(self.slope * rows + self.intercept, self.min_height)

    @classmethod
    def fit(cls, foot_rows: np.ndarray, heights: np.ndarray) -> Perspective:
        rows, heights = np.asarray(foot_rows, float), np.asarray(heights, float)
        edges = np.unique(np.quantile(rows, np.linspace(0, 1, ROW_BANDS + 1)))
        centres, medians, weights = [], [], []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            inside = (rows >= lo) & (rows <= hi)
            if inside.sum() >= MIN_BAND:
                centres.append(float(np.median(rows[inside])))
                medians.append(float(np.median(heights[inside])))
                weights.append(float(inside.sum()))
        if len(centres) >= 2 and np.ptp(centres) > 0:
            slope, intercept = np.polyfit(centres, medians, 1, w=np.sqrt(weights))
        else:  # one band of rows: no perspective to measure
            slope, intercept = 0.0, float(np.median(heights))
        if slope < 0:  # objects do not shrink towards the camera: the fit saw mostly noise
            slope, intercept = 0.0, float(np.median(heights))
        # never expect less than the far band's typical object: the line is not trusted beyond the data
        floor = medians[0] if medians else float(np.median(heights))
        low, high = np.percentile(rows, [1, 99])
        return cls(float(slope), float(intercept), float(low), float(high), float(max(floor, 2.0)))

    def to_dict(self) -> dict[str, float]:
        return {"slope": self.slope, "intercept": self.intercept, "row_min": self.row_min,
                "row_max": self.row_max, "min_height": self.min_height}


@dataclass
class Measure:
    """Raw measures of one object, before perspective: enough to compute its features later."""

    box: tuple[int, int, int, int]  # working pixels
    p90_flow: float  # pixels per second
    direction_flow: np.ndarray  # (8,) mean flow per pixel in each sector, pixels per second
    fill: float

    @property
    def area(self) -> float:
        return self.fill * max(self.width * self.height, 1.0)

    @property
    def mean_flow(self) -> np.ndarray:
        """(dx, dy) mean flow per pixel, pixels per second, image y up (from the direction histogram)."""
        return np.array([self.direction_flow @ np.cos(SECTOR_ANGLES), self.direction_flow @ np.sin(SECTOR_ANGLES)])

    @property
    def foot_row(self) -> float:
        return float(self.box[3])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])


def measure(obj: SceneObject, seconds_per_step: float) -> Measure:
    """Raw measures of an object whose flow spans ``seconds_per_step`` seconds."""
    flow = obj.flow.astype(np.float64) / seconds_per_step
    magnitude = np.hypot(flow[:, 0], flow[:, 1])
    angle = np.arctan2(-flow[:, 1], flow[:, 0]) % (2 * np.pi)
    sector = ((angle + np.pi / DIRECTION_BINS) // (2 * np.pi / DIRECTION_BINS)).astype(int) % DIRECTION_BINS
    direction = np.bincount(sector, weights=magnitude, minlength=DIRECTION_BINS) / max(len(magnitude), 1)
    x1, y1, x2, y2 = obj.box
    # 90th percentile by partial sort (np.percentile interpolates; at hundreds of pixels the difference is nil)
    p90 = float(np.partition(magnitude, int(0.9 * (len(magnitude) - 1)))[int(0.9 * (len(magnitude) - 1))]) \
        if len(magnitude) else 0.0
    return Measure(obj.box, p90, direction, obj.area / max((x2 - x1) * (y2 - y1), 1))


def join_stacked(measures: list[Measure], perspective: Perspective) -> list[list[int]]:
    """Groups of positions in ``measures``: the pieces of one object (see the module's docstring), each group
    sorted, every position in exactly one group, groups in order of their first position."""
    group_of = list(range(len(measures)))
    current = list(measures)  # the joined measure of each group, at its first position
    merged = True
    while merged:  # greedy: a person may come in three pieces
        merged = False
        heads = sorted(set(group_of))
        for i, a in enumerate(heads):
            for b in heads[i + 1:]:
                if _pieces_of_one(current[a], current[b], perspective):
                    group_of = [a if g == b else g for g in group_of]
                    current[a] = _join(current[a], current[b])
                    merged = True
                    break
            if merged:
                break
    groups: dict[int, list[int]] = {}
    for position, group in enumerate(group_of):
        groups.setdefault(group, []).append(position)
    return [groups[g] for g in sorted(groups)]


def joined(measures: list[Measure], groups: list[list[int]]) -> list[Measure]:
    """One measure per group (``join_stacked``)."""
    out = []
    for group in groups:
        whole = measures[group[0]]
        for position in group[1:]:
            whole = _join(whole, measures[position])
        out.append(whole)
    return out


def _pieces_of_one(a: Measure, b: Measure, perspective: Perspective) -> bool:
    top, bottom = (a, b) if a.box[1] <= b.box[1] else (b, a)
    overlap = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])
    if overlap < JOIN_OVERLAP * min(a.width, b.width):
        return False
    expected = float(perspective.expected_height(max(a.foot_row, b.foot_row)))
    if bottom.box[1] - top.box[3] > JOIN_GAP * expected:
        return False
    if max(a.box[3], b.box[3]) - min(a.box[1], b.box[1]) > JOIN_HEIGHT * expected:
        return False
    flow_a, flow_b = a.mean_flow, b.mean_flow
    tolerance = JOIN_FLOW * expected + 0.5 * max(np.hypot(*flow_a), np.hypot(*flow_b))
    return bool(np.hypot(*(flow_a - flow_b)) <= tolerance)


def _join(a: Measure, b: Measure) -> Measure:
    """Two pieces as one object. Exact but for the 90th percentile of flow, which the pieces' alone do not
    give: the larger of the two (the faster piece is the one that matters)."""
    box = (min(a.box[0], b.box[0]), min(a.box[1], b.box[1]), max(a.box[2], b.box[2]), max(a.box[3], b.box[3]))
    area_a, area_b = a.area, b.area
    direction = (a.direction_flow * area_a + b.direction_flow * area_b) / max(area_a + area_b, 1e-9)
    box_area = max((box[2] - box[0]) * (box[3] - box[1]), 1)
    return Measure(box, max(a.p90_flow, b.p90_flow), direction, min(1.0, (area_a + area_b) / box_area))


def features(measures: list[Measure], perspective: Perspective) -> np.ndarray:
    """(N, len(FEATURE_NAMES)) features of measured objects."""
    if not measures:
        return np.zeros((0, len(FEATURE_NAMES)), np.float32)
    expected = perspective.expected_height(np.array([m.foot_row for m in measures]))
    out = np.empty((len(measures), len(FEATURE_NAMES)), np.float64)
    out[:, SPEED] = np.array([m.p90_flow for m in measures]) / expected
    out[:, 1:1 + DIRECTION_BINS] = np.stack([m.direction_flow for m in measures]) / expected[:, None]
    out[:, HEIGHT] = np.array([m.height for m in measures]) / expected
    out[:, WIDTH] = np.array([m.width for m in measures]) / expected
    out[:, FILL] = np.array([m.fill for m in measures])
    return out.astype(np.float32)


def feature_scales(normal: np.ndarray) -> np.ndarray:
    """Per-feature divisor: one shared scale for the motion group, the standard deviation for the rest."""
    scales = np.asarray(normal, np.float64).std(axis=0)
    scales[MOTION_FEATURES] = float(np.asarray(normal, np.float64)[:, MOTION_FEATURES].std())
    return np.maximum(scales, 1e-6).astype(np.float32)
