"""SynthCampus agents: nameable attributes and articulated drawing.

Every drawing routine paints the RGB frame (anti-aliased, sub-pixel) and the instance-id map
(16-bit, hard edges) with the same primitives, so the id map is exactly the object's silhouette up to
the anti-aliased rim. Figures are built from a 2D skeleton whose joints move with the gait phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

SHIFT = 4  # cv2 sub-pixel bits
_S = 1 << SHIFT

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 35, 35), "blue": (40, 70, 200), "green": (40, 150, 60), "yellow": (230, 205, 40),
    "black": (28, 28, 30), "white": (235, 235, 235), "grey": (128, 128, 130), "orange": (235, 125, 30),
    "purple": (120, 50, 150), "brown": (110, 70, 40), "pink": (235, 130, 170), "navy": (25, 35, 90),
}
TOP_COLOURS = ("red", "blue", "green", "yellow", "black", "white", "grey", "orange", "purple", "pink")
BOTTOM_COLOURS = ("black", "blue", "grey", "brown", "navy", "white")
VEHICLE_COLOURS = ("red", "blue", "white", "black", "grey", "yellow", "green")
SKIN = ((230, 190, 160), (200, 150, 110), (150, 100, 70), (95, 65, 45))
HAIR = ((30, 25, 20), (90, 60, 35), (200, 170, 110), (120, 120, 120))

CATEGORIES = ("person", "cyclist", "skateboarder", "car", "van", "cart", "object", "bag")


@dataclass
class Pose:
    """What the skeleton does in one frame."""

    phase: float = 0.0  # gait phase (radians)
    swing: float = 0.0  # leg swing amplitude (radians): 0 standing, ~0.45 walking, ~0.9 running
    facing: float = 1.0  # -1 facing left, +1 facing right, 0 facing the camera or away
    toward: bool = True  # front visible (moving towards the camera)
    tilt: float = 0.0  # whole-body rotation about the feet (radians, + clockwise): falls
    lift: float = 0.0  # feet above the ground in body heights: jumps
    arms: str = "swing"  # swing | punch | throw | gesture | up | hold
    arm_t: float = 0.0  # progress of an arm action 0..1
    crouch: float = 0.0  # 0..1 knees bent


@dataclass
class Agent:
    """An instance with its appearance. ``attributes`` uses the extraction keys (datasets_builder.extract)."""

    instance_id: int
    category: str
    attributes: dict[str, str] = field(default_factory=dict)
    colours: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    height_m: float = 1.72
    length_m: float = 0.5


def random_person(rng: np.random.Generator, iid: int, category: str = "person") -> Agent:
    top = str(rng.choice(TOP_COLOURS))
    bottom = str(rng.choice(BOTTOM_COLOURS))
    attrs = {"upper_color": top, "lower_color": bottom}
    r = rng.random()
    carrying = "backpack" if r < 0.3 else "bag" if r < 0.45 else "umbrella" if r < 0.52 else ""
    if carrying:
        attrs["carrying"] = carrying
    if rng.random() < 0.25:
        attrs["hat"] = "hat"
    cols = {"top": COLOURS[top], "bottom": COLOURS[bottom], "skin": SKIN[int(rng.integers(len(SKIN)))],
            "hair": HAIR[int(rng.integers(len(HAIR)))], "acc": COLOURS[str(rng.choice(TOP_COLOURS))]}
    h = float(rng.uniform(1.6, 1.9))
    attrs["size"] = "tall" if h > 1.82 else "short" if h < 1.66 else "medium"
    return Agent(iid, category, attrs, cols, height_m=h)


def random_vehicle(rng: np.random.Generator, iid: int, kind: str) -> Agent:
    col = str(rng.choice(VEHICLE_COLOURS))
    dims = {"car": (1.5, 4.3), "van": (2.1, 5.0), "cart": (1.0, 1.4), "cyclist": (1.75, 1.8),
            "skateboarder": (1.75, 0.8)}[kind]
    a = Agent(iid, kind, {"color": col}, {"body": COLOURS[col]}, height_m=dims[0], length_m=dims[1])
    a.attributes["size"] = "large" if kind == "van" else "medium" if kind == "car" else "small"
    return a


# --------------------------------------------------------------------------- primitives


class Painter:
    """Draws the same primitive on the RGB frame and (with the instance id) on the id map."""

    def __init__(self, frame: np.ndarray, ids: np.ndarray) -> None:
        self.frame = frame
        self.ids = ids

    @staticmethod
    def _p(pt: tuple[float, float]) -> tuple[int, int]:
        return int(round(pt[0] * _S)), int(round(pt[1] * _S))

    def line(self, a, b, colour, thick: float, iid: int) -> None:
        t = max(1, int(round(thick)))
        cv2.line(self.frame, self._p(a), self._p(b), colour, t, cv2.LINE_AA, SHIFT)
        cv2.line(self.ids, self._p(a), self._p(b), iid, t, cv2.LINE_8, SHIFT)

    def circle(self, c, r: float, colour, iid: int) -> None:
        rr = max(1, int(round(r * _S)))
        cv2.circle(self.frame, self._p(c), rr, colour, -1, cv2.LINE_AA, SHIFT)
        cv2.circle(self.ids, self._p(c), rr, iid, -1, cv2.LINE_8, SHIFT)

    def poly(self, pts, colour, iid: int) -> None:
        arr = np.round(np.asarray(pts, np.float64) * _S).astype(np.int32)[None]
        cv2.fillPoly(self.frame, arr, colour, cv2.LINE_AA, SHIFT)
        cv2.fillPoly(self.ids, arr, iid, cv2.LINE_8, SHIFT)

    def ring(self, c, r: float, colour, thick: float, iid: int) -> None:
        rr = max(1, int(round(r * _S)))
        t = max(1, int(round(thick)))
        cv2.circle(self.frame, self._p(c), rr, colour, t, cv2.LINE_AA, SHIFT)
        cv2.circle(self.ids, self._p(c), rr, iid, t, cv2.LINE_8, SHIFT)

    def ellipse(self, c, axes, angle: float, start: float, end: float, colour, iid: int) -> None:
        ax = (max(1, int(round(axes[0] * _S))), max(1, int(round(axes[1] * _S))))
        cv2.ellipse(self.frame, self._p(c), ax, angle, start, end, colour, -1, cv2.LINE_AA, SHIFT)
        cv2.ellipse(self.ids, self._p(c), ax, angle, start, end, iid, -1, cv2.LINE_8, SHIFT)


def shadow(frame: np.ndarray, foot: tuple[float, float], width: float, strength: float = 0.35) -> None:
    """A soft dark ellipse on the ground under an object (frame only: shadows are not the object)."""
    x, y = foot
    w = max(2.0, width)
    x0, x1 = int(max(0, x - w)), int(min(frame.shape[1], x + w + 1))
    y0, y1 = int(max(0, y - w * 0.25)), int(min(frame.shape[0], y + w * 0.25 + 1))
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = ((xx - x) / w) ** 2 + ((yy - y) / (w * 0.25)) ** 2
    k = (1.0 - strength * np.clip(1.0 - d, 0, 1))[..., None]
    frame[y0:y1, x0:x1] = (frame[y0:y1, x0:x1] * k).astype(np.uint8)


def _rot(pts: np.ndarray, origin: np.ndarray, ang: float) -> np.ndarray:
    c, s = math.cos(ang), math.sin(ang)
    d = pts - origin
    return origin + np.stack([d[..., 0] * c - d[..., 1] * s, d[..., 0] * s + d[..., 1] * c], -1)


def _shade(col, k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * k))) for c in col)  # type: ignore[return-value]


# --------------------------------------------------------------------------- people


def person_skeleton(h: float, pose: Pose) -> dict[str, np.ndarray]:
    """Joint positions relative to the feet midpoint (pixels, y down) for a figure h pixels tall."""
    side = abs(pose.facing)  # 1 profile, 0 frontal
    fdir = 1.0 if pose.facing >= 0 else -1.0
    leg = 0.245 * h
    bend = pose.crouch
    hip_y = -(0.49 - 0.08 * bend) * h
    J: dict[str, np.ndarray] = {}
    J["hip"] = np.array([0.0, hip_y])
    J["neck"] = np.array([0.0, hip_y - 0.33 * h])
    J["head"] = np.array([0.0, hip_y - 0.43 * h])
    spread = (1 - side) * 0.055 * h
    for k, sgn in (("l", 1.0), ("r", -1.0)):
        a = sgn * pose.swing * math.sin(pose.phase)
        knee_bend = max(0.0, -sgn * math.sin(pose.phase)) * pose.swing * 0.9 + bend * 0.8
        hip = J["hip"] + np.array([sgn * spread, 0.0])
        # profile: swing shows as x motion; frontal: as a small lift of the foot
        kx = hip[0] + fdir * side * leg * math.sin(a)
        ky = hip[1] + leg * math.cos(a * side)
        fx = kx + fdir * side * leg * math.sin(a - knee_bend)
        fy = ky + leg * math.cos((a - knee_bend) * side) - (1 - side) * 0.06 * h * max(0.0, math.sin(
            pose.phase + (0 if sgn > 0 else math.pi))) * (pose.swing > 0)
        J["knee_" + k] = np.array([kx, ky])
        J["foot_" + k] = np.array([fx, fy])
    sh_y = J["neck"][1] + 0.035 * h
    arm_u, arm_f = 0.17 * h, 0.16 * h
    for k, sgn in (("l", 1.0), ("r", -1.0)):
        sh = np.array([sgn * (1 - side) * 0.11 * h, sh_y])
        a = -sgn * pose.swing * 0.9 * math.sin(pose.phase)
        elbow_bend = 0.3 + (0.9 if pose.swing > 0.7 else 0.0)
        if pose.arms == "punch" and k == "r":
            a, elbow_bend = fdir * (1.45 * (0.4 + 0.6 * abs(math.sin(pose.arm_t * math.pi * 3)))), 0.1
            a = a if side > 0.3 else 1.3
        elif pose.arms == "punch":
            a, elbow_bend = fdir * 0.9, 1.2
        elif pose.arms == "throw" and k == "r":
            a, elbow_bend = fdir * (-2.6 + 4.0 * pose.arm_t), 0.2
        elif pose.arms == "gesture" and k == "r":
            a, elbow_bend = fdir * (0.5 + 0.3 * math.sin(pose.arm_t * 12)), 1.0
        elif pose.arms == "up":
            a, elbow_bend = sgn * 2.7 if side < 0.3 else fdir * (2.6 + 0.3 * sgn), 0.2
        elif pose.arms == "hold":
            a, elbow_bend = fdir * 0.7, 0.9
        ex = sh[0] + (side * fdir if pose.arms in ("swing",) else 1.0) * arm_u * math.sin(a) + \
            (1 - side) * sgn * 0.02 * h
        ey = sh[1] + arm_u * math.cos(a)
        hx = ex + (side * fdir if pose.arms == "swing" else 1.0) * arm_f * math.sin(a + fdir * elbow_bend)
        hy = ey + arm_f * math.cos(a + fdir * elbow_bend)
        J["shoulder_" + k] = sh
        J["elbow_" + k] = np.array([ex, ey])
        J["hand_" + k] = np.array([hx, hy])
    return J


def draw_person(p: Painter, agent: Agent, foot: tuple[float, float], h: float, pose: Pose) -> None:
    """An articulated person standing with the feet midpoint at ``foot`` and height ``h`` pixels."""
    J = person_skeleton(h, pose)
    origin = np.zeros(2)
    lift = np.array([0.0, -pose.lift * h])
    base = np.array(foot, np.float64)

    def T(v: np.ndarray) -> tuple[float, float]:
        q = _rot(v, origin, pose.tilt) if pose.tilt else v
        q = q + lift + base
        return float(q[0]), float(q[1])

    c = agent.colours
    iid = agent.instance_id
    lw = max(1.0, 0.075 * h)
    aw = max(1.0, 0.055 * h)
    side = abs(pose.facing)
    fdir = 1.0 if pose.facing >= 0 else -1.0
    acc = agent.attributes.get("carrying", "")
    far_k, near_k = ("r", "l") if fdir > 0 else ("l", "r")
    if side < 0.5:
        far_k, near_k = "l", "r"
    # backpack behind the torso when seen in profile or from behind
    if acc == "backpack" and (side >= 0.5 or not pose.toward):
        bx = -fdir * 0.075 * h if side >= 0.5 else 0.0
        pack = np.array([[bx - 0.06 * h, J["neck"][1] + 0.04 * h], [bx + 0.06 * h, J["neck"][1] + 0.04 * h],
                         [bx + 0.06 * h, J["neck"][1] + 0.22 * h], [bx - 0.06 * h, J["neck"][1] + 0.22 * h]])
        if side >= 0.5:
            p.poly([T(v) for v in pack], c["acc"], iid)
    for k, shade in ((far_k, 0.75), (near_k, 1.0)):
        p.line(T(J["hip"] + np.array([0, 0])), T(J["knee_" + k]), _shade(c["bottom"], shade), lw, iid)
        p.line(T(J["knee_" + k]), T(J["foot_" + k]), _shade(c["bottom"], shade), lw, iid)
        p.line(T(J["foot_" + k]), T(J["foot_" + k] + np.array([fdir * side * 0.05 * h, 0])), (30, 30, 30),
               lw * 0.8, iid)
        if k == far_k:
            p.line(T(J["shoulder_" + k]), T(J["elbow_" + k]), _shade(c["top"], 0.75), aw, iid)
            p.line(T(J["elbow_" + k]), T(J["hand_" + k]), _shade(c["skin"], 0.85), aw * 0.9, iid)
    # torso: a tapered quad from shoulders to hips
    tw = (0.09 + 0.06 * (1 - side)) * h
    hw = (0.08 + 0.04 * (1 - side)) * h
    ny, hy = J["neck"][1], J["hip"][1] + 0.03 * h
    torso = [np.array(v) for v in ([-tw, ny + 0.02 * h], [tw, ny + 0.02 * h], [hw, hy], [-hw, hy])]
    p.poly([T(v) for v in torso], c["top"], iid)
    if acc == "backpack" and side < 0.5 and not pose.toward:
        pack = [np.array(v) for v in ([-0.07 * h, ny + 0.05 * h], [0.07 * h, ny + 0.05 * h],
                                      [0.07 * h, ny + 0.23 * h], [-0.07 * h, ny + 0.23 * h])]
        p.poly([T(v) for v in pack], c["acc"], iid)
    elif acc == "backpack" and pose.toward and side < 0.5:
        p.line(T(np.array([-0.06 * h, ny + 0.02 * h])), T(np.array([-0.05 * h, ny + 0.16 * h])), c["acc"],
               max(1.0, 0.025 * h), iid)
        p.line(T(np.array([0.06 * h, ny + 0.02 * h])), T(np.array([0.05 * h, ny + 0.16 * h])), c["acc"],
               max(1.0, 0.025 * h), iid)
    # near arm
    p.line(T(J["shoulder_" + near_k]), T(J["elbow_" + near_k]), c["top"], aw, iid)
    p.line(T(J["elbow_" + near_k]), T(J["hand_" + near_k]), c["skin"], aw * 0.9, iid)
    if acc == "bag":
        hand = J["hand_" + near_k]
        bag = [hand + np.array(v) for v in ([-0.05 * h, 0.0], [0.05 * h, 0.0], [0.055 * h, 0.1 * h],
                                            [-0.055 * h, 0.1 * h])]
        p.poly([T(v) for v in bag], c["acc"], iid)
    # head, hair, hat
    head = J["head"]
    r = 0.068 * h
    p.circle(T(head), r, c["skin"], iid)
    if pose.toward and side < 0.5:
        p.ellipse(T(head - np.array([0, 0.035 * h])), (r, r * 0.55), math.degrees(pose.tilt), 180, 360,
                  c["hair"], iid)
    else:
        p.ellipse(T(head - np.array([fdir * side * 0.02 * h, 0.01 * h])), (r * 1.02, r * 0.85),
                  math.degrees(pose.tilt), 180 if side < 0.5 else (90 if fdir > 0 else -90),
                  360 if side < 0.5 else (270 if fdir > 0 else 90), c["hair"], iid)
    if "hat" in agent.attributes:
        brim = head - np.array([0, 0.06 * h])
        p.line(T(brim - np.array([0.09 * h, 0])), T(brim + np.array([0.09 * h, 0])), c["acc"],
               max(1.0, 0.025 * h), iid)
        p.ellipse(T(brim), (0.058 * h, 0.05 * h), math.degrees(pose.tilt), 180, 360, c["acc"], iid)
    if acc == "umbrella":
        hand = J["hand_" + near_k]
        top = np.array([hand[0], head[1] - 0.16 * h])
        p.line(T(hand), T(top), (40, 40, 40), max(1.0, 0.02 * h), iid)
        p.ellipse(T(top), (0.26 * h, 0.12 * h), math.degrees(pose.tilt), 180, 360, c["acc"], iid)


# --------------------------------------------------------------------------- riders and vehicles


def draw_cyclist(p: Painter, agent: Agent, foot: tuple[float, float], h: float, pose: Pose) -> None:
    """A rider on a bicycle; in profile for sideways motion, end-on otherwise. ``h``: rider height px."""
    iid = agent.instance_id
    fx, fy = foot
    fdir = 1.0 if pose.facing >= 0 else -1.0
    side = abs(pose.facing)
    body = agent.colours["body"]
    rider = agent.colours.get("top", (60, 60, 60))
    if side >= 0.4:
        wr = 0.19 * h
        back = (fx - fdir * 0.33 * h, fy - wr)
        front = (fx + fdir * 0.33 * h, fy - wr)
        tw = max(1.0, 0.025 * h)
        p.ring(back, wr, (25, 25, 25), tw, iid)
        p.ring(front, wr, (25, 25, 25), tw, iid)
        seat = (fx - fdir * 0.12 * h, fy - 0.58 * h)
        crank = (fx, fy - wr)
        bar = (fx + fdir * 0.27 * h, fy - 0.66 * h)
        fw = max(1.0, 0.035 * h)
        for a, b in ((back, seat), (seat, crank), (crank, back), (seat, bar), (bar, front), (crank, bar)):
            p.line(a, b, body, fw, iid)
        # rider: pedalling legs, torso leaning forward, arms to the bar
        hip = np.array([seat[0], seat[1] - 0.02 * h])
        lw = max(1.0, 0.07 * h)
        for k, off in (("far", math.pi), ("near", 0.0)):
            ang = pose.phase + off
            pedal = np.array([crank[0] + 0.09 * h * math.cos(ang), crank[1] + 0.09 * h * math.sin(ang)])
            knee = (hip + pedal) / 2 + np.array([fdir * 0.12 * h, -0.05 * h])
            colr = _shade(agent.colours.get("bottom", (40, 40, 40)), 0.75 if k == "far" else 1.0)
            p.line(tuple(hip), tuple(knee), colr, lw, iid)
            p.line(tuple(knee), tuple(pedal), colr, lw, iid)
        neck = hip + np.array([fdir * 0.17 * h, -0.3 * h])
        p.line(tuple(hip), tuple(neck), rider, max(1.0, 0.14 * h), iid)
        p.line(tuple(neck), bar, rider, max(1.0, 0.05 * h), iid)
        p.circle(tuple(neck + np.array([fdir * 0.05 * h, -0.09 * h])), 0.07 * h,
                 agent.colours.get("skin", (200, 160, 120)), iid)
        if "hat" in agent.attributes or agent.attributes.get("helmet"):
            p.ellipse(tuple(neck + np.array([fdir * 0.05 * h, -0.12 * h])), (0.075 * h, 0.05 * h), 0, 180, 360,
                      agent.colours.get("acc", (200, 200, 0)), iid)
    else:
        # end-on: a thin wheel below a frontal rider
        p.line((fx, fy), (fx, fy - 0.4 * h), (25, 25, 25), max(1.0, 0.05 * h), iid)
        p.line((fx - 0.16 * h, fy - 0.62 * h), (fx + 0.16 * h, fy - 0.62 * h), body, max(1.0, 0.03 * h), iid)
        pers_pose = Pose(phase=pose.phase, swing=0.0, facing=0.0, toward=pose.toward, crouch=0.5, arms="hold")
        draw_person(p, agent, (fx, fy - 0.2 * h), h * 0.95, pers_pose)
        p.line((fx, fy), (fx, fy - 0.3 * h), body, max(1.0, 0.04 * h), iid)


def draw_skateboarder(p: Painter, agent: Agent, foot: tuple[float, float], h: float, pose: Pose) -> None:
    fx, fy = foot
    iid = agent.instance_id
    side = abs(pose.facing)
    bl = (0.34 if side >= 0.4 else 0.12) * h
    board_y = fy - 0.05 * h
    p.line((fx - bl, board_y), (fx + bl, board_y), agent.colours["body"], max(1.0, 0.035 * h), iid)
    for wx in (fx - bl * 0.7, fx + bl * 0.7):
        p.circle((wx, fy - 0.02 * h), max(0.8, 0.025 * h), (30, 30, 30), iid)
    pp = Pose(phase=math.pi / 2, swing=0.25 + 0.1 * math.sin(pose.phase), facing=pose.facing,
              toward=pose.toward, crouch=0.35, arms="up" if math.sin(pose.phase * 0.5) > 0.7 else "hold",
              lift=pose.lift)
    draw_person(p, agent, (fx, board_y), h * 0.97, pp)


def draw_vehicle(p: Painter, agent: Agent, foot: tuple[float, float], ppm: float, pose: Pose) -> None:
    """A car or van seen from the side (sideways motion) or from the front/back; ``ppm`` pixels/metre."""
    iid = agent.instance_id
    fx, fy = foot
    body = agent.colours["body"]
    dark = _shade(body, 0.6)
    glass = (70, 90, 110)
    H = agent.height_m * ppm
    van = agent.category == "van"
    side = abs(pose.facing)
    fdir = 1.0 if pose.facing >= 0 else -1.0
    if side >= 0.5:
        L = agent.length_m * ppm
        x0, x1 = fx - L / 2, fx + L / 2
        wr = 0.33 * ppm
        lower_top = fy - (0.55 if not van else 0.95) * H
        p.poly([(x0, fy - 0.15 * ppm), (x1, fy - 0.15 * ppm), (x1, lower_top + 0.1 * H), (x0, lower_top + 0.1 * H)],
               body, iid)
        if van:
            cab = [(x0, lower_top + 0.1 * H), (x0, fy - H), (x1 - fdir * 0 - 0.0, fy - H),
                   (x1, fy - 0.7 * H)] if fdir > 0 else [(x1, lower_top + 0.1 * H), (x1, fy - H), (x0, fy - H),
                                                         (x0, fy - 0.7 * H)]
            p.poly(cab + [(x1, lower_top + 0.1 * H)] if fdir > 0 else cab + [(x0, lower_top + 0.1 * H)], body, iid)
            # windscreen at the front, a row of side windows behind it, a sliding-door seam
            front = x1 if fdir > 0 else x0
            for k in range(4):
                wx = front - fdir * (0.25 + 1.05 * k) * ppm
                p.poly([(wx, fy - 0.9 * H), (wx - fdir * 0.8 * ppm, fy - 0.9 * H),
                        (wx - fdir * 0.8 * ppm, fy - 0.66 * H), (wx, fy - 0.66 * H)], glass, iid)
            seam = front - fdir * 1.2 * ppm
            p.line((seam, fy - 0.62 * H), (seam, fy - 0.2 * H), dark, max(1.0, 0.04 * ppm), iid)
            p.circle((front - fdir * 0.08 * ppm, fy - 0.35 * H), max(1.0, 0.1 * ppm), (250, 240, 190), iid)
        else:
            rear = x0 if fdir > 0 else x1
            front = x1 if fdir > 0 else x0
            cab = [(rear + fdir * 0.15 * L, lower_top + 0.1 * H), (rear + fdir * 0.28 * L, fy - H),
                   (rear + fdir * 0.66 * L, fy - H), (rear + fdir * 0.8 * L, lower_top + 0.1 * H)]
            p.poly(cab, body, iid)
            win = [(rear + fdir * 0.22 * L, lower_top + 0.05 * H), (rear + fdir * 0.31 * L, fy - 0.92 * H),
                   (rear + fdir * 0.63 * L, fy - 0.92 * H), (rear + fdir * 0.73 * L, lower_top + 0.05 * H)]
            p.poly(win, glass, iid)
            p.line((rear + fdir * 0.47 * L, fy - 0.93 * H), (rear + fdir * 0.47 * L, lower_top + 0.1 * H), body,
                   max(1.0, 0.06 * ppm), iid)
            p.circle((front - fdir * 0.05 * ppm, lower_top + 0.25 * H), max(1.0, 0.1 * ppm), (250, 240, 190), iid)
        for wxc in (x0 + 0.2 * L, x1 - 0.2 * L):
            p.circle((wxc, fy - wr), wr, (20, 20, 20), iid)
            p.circle((wxc, fy - wr), wr * 0.5, (150, 150, 150), iid)
        p.line((x0, fy - 0.3 * H), (x1, fy - 0.3 * H), dark, max(1.0, 0.04 * ppm), iid)
    else:
        W = (2.0 if van else 1.8) * ppm
        x0, x1 = fx - W / 2, fx + W / 2
        p.poly([(x0, fy), (x1, fy), (x1, fy - 0.55 * H), (x0, fy - 0.55 * H)], body, iid)
        p.poly([(x0 + 0.12 * W, fy - 0.55 * H), (x1 - 0.12 * W, fy - 0.55 * H), (x1 - 0.16 * W, fy - H),
                (x0 + 0.16 * W, fy - H)], body, iid)
        p.poly([(x0 + 0.18 * W, fy - 0.58 * H), (x1 - 0.18 * W, fy - 0.58 * H), (x1 - 0.2 * W, fy - 0.9 * H),
                (x0 + 0.2 * W, fy - 0.9 * H)], glass, iid)
        lamp = (250, 240, 190) if pose.toward else (200, 30, 30)
        for lx in (x0 + 0.12 * W, x1 - 0.12 * W):
            p.circle((lx, fy - 0.38 * H), max(1.0, 0.09 * ppm), lamp, iid)
        p.poly([(x0 + 0.3 * W, fy - 0.12 * H), (x1 - 0.3 * W, fy - 0.12 * H), (x1 - 0.3 * W, fy - 0.22 * H),
                (x0 + 0.3 * W, fy - 0.22 * H)], (230, 230, 220), iid)
        for wxc in (x0 + 0.08 * W, x1 - 0.08 * W):
            p.poly([(wxc - 0.07 * W, fy), (wxc + 0.07 * W, fy), (wxc + 0.07 * W, fy - 0.12 * H),
                    (wxc - 0.07 * W, fy - 0.12 * H)], (20, 20, 20), iid)


def draw_cart(p: Painter, agent: Agent, foot: tuple[float, float], ppm: float, pose: Pose) -> None:
    """A hand cart: a box on two wheels with a handle."""
    iid = agent.instance_id
    fx, fy = foot
    body = agent.colours["body"]
    fdir = 1.0 if pose.facing >= 0 else -1.0
    side = abs(pose.facing)
    L = (agent.length_m if side >= 0.5 else 0.8) * ppm
    Hc = 0.75 * ppm
    wr = 0.18 * ppm
    p.poly([(fx - L / 2, fy - wr * 1.4), (fx + L / 2, fy - wr * 1.4), (fx + L / 2 + 0.05 * ppm, fy - Hc),
            (fx - L / 2 - 0.05 * ppm, fy - Hc)], body, iid)
    p.line((fx - L / 2, fy - 0.55 * Hc), (fx + L / 2, fy - 0.55 * Hc), _shade(body, 0.6), max(1.0, 0.04 * ppm), iid)
    for wx in (fx - L * 0.3, fx + L * 0.3):
        p.circle((wx, fy - wr), wr, (25, 25, 25), iid)
    if side >= 0.5:
        hx = fx - fdir * L / 2
        p.line((hx, fy - Hc), (hx - fdir * 0.35 * ppm, fy - 1.05 * ppm), (60, 60, 60), max(1.0, 0.05 * ppm), iid)


def draw_small_object(p: Painter, agent: Agent, centre: tuple[float, float], ppm: float) -> None:
    """A thrown object (a bottle-sized box) or a dropped bag."""
    iid = agent.instance_id
    col = agent.colours["body"]
    if agent.category == "bag":
        w, h = 0.45 * ppm, 0.35 * ppm
        x, y = centre
        p.poly([(x - w / 2, y), (x + w / 2, y), (x + w / 2, y - h), (x - w / 2, y - h)], col, iid)
        p.line((x - w / 4, y - h), (x, y - h * 1.4), _shade(col, 0.6), max(1.0, 0.04 * ppm), iid)
        p.line((x, y - h * 1.4), (x + w / 4, y - h), _shade(col, 0.6), max(1.0, 0.04 * ppm), iid)
    else:
        p.circle(centre, max(1.2, 0.14 * ppm), col, iid)


# --------------------------------------------------------------------------- props (static occluders, id 0)


def draw_prop(p: Painter, kind: str, foot: tuple[float, float], ppm: float, scale: float = 1.0) -> None:
    fx, fy = foot
    s = ppm * scale
    if kind == "tree":
        p.line((fx, fy), (fx, fy - 2.2 * s), (85, 60, 40), max(1.0, 0.3 * s), 0)
        for dx, dy, r, k in ((0, -3.4, 1.5, 1.0), (-0.8, -2.8, 1.0, 0.85), (0.9, -2.9, 1.1, 0.9),
                             (0.2, -4.2, 1.0, 1.1)):
            p.circle((fx + dx * s, fy + dy * s), r * s, _shade((50, 110, 45), k), 0)
    elif kind == "lamp":
        p.line((fx, fy), (fx, fy - 4.0 * s), (60, 60, 65), max(1.0, 0.12 * s), 0)
        p.circle((fx, fy - 4.0 * s), 0.22 * s, (245, 240, 200), 0)
    elif kind == "bench":
        p.poly([(fx - 0.9 * s, fy - 0.45 * s), (fx + 0.9 * s, fy - 0.45 * s), (fx + 0.9 * s, fy - 0.55 * s),
                (fx - 0.9 * s, fy - 0.55 * s)], (120, 80, 50), 0)
        p.poly([(fx - 0.9 * s, fy - 0.6 * s), (fx + 0.9 * s, fy - 0.6 * s), (fx + 0.9 * s, fy - 0.9 * s),
                (fx - 0.9 * s, fy - 0.9 * s)], (110, 75, 45), 0)
        for lx in (fx - 0.75 * s, fx + 0.75 * s):
            p.line((lx, fy), (lx, fy - 0.5 * s), (50, 50, 50), max(1.0, 0.08 * s), 0)
    elif kind == "planter":
        p.poly([(fx - 0.8 * s, fy), (fx + 0.8 * s, fy), (fx + 0.8 * s, fy - 0.6 * s), (fx - 0.8 * s, fy - 0.6 * s)],
               (150, 140, 130), 0)
        p.ellipse((fx, fy - 0.6 * s), (0.85 * s, 0.6 * s), 0, 180, 360, (60, 125, 55), 0)
    elif kind == "bollard":
        p.line((fx, fy), (fx, fy - 0.9 * s), (90, 90, 95), max(1.0, 0.2 * s), 0)
    elif kind == "bin":
        p.poly([(fx - 0.3 * s, fy), (fx + 0.3 * s, fy), (fx + 0.33 * s, fy - 0.9 * s), (fx - 0.33 * s, fy - 0.9 * s)],
               (50, 80, 60), 0)
