"""SynthCampus behaviours: every agent's motion plan, frame by frame, in world coordinates.

A behaviour builder returns one or more :class:`Plan` (one per instance it creates). A plan holds the
world foot position per frame, presence, the pose of the articulated figure and the per-frame anomaly
flag, so the renderer and the ground truth read one source. Normal behaviours: walk, stand, talk, enter,
leave, drive_road, cycle_road. Anomalous ones are listed in :data:`ANOMALY_TYPES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from datasets_builder.synth.agents import COLOURS, Agent, Pose, random_person, random_vehicle
from datasets_builder.synth.scenes import ROAD, Camera, Route, Scene

NORMAL_BEHAVIOURS = ("walk", "stand", "talk", "enter", "leave", "drive_road", "cycle_road")

# anomaly type -> (short description, scenes where it can happen)
ALL_SCENES = ("campus_walkway", "plaza", "road_crossing", "building_entrance", "park_path")
ANOMALY_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "run": ("a person running", ALL_SCENES),
    "cycle": ("riding a bicycle in a pedestrian zone", ALL_SCENES),
    "skate": ("skateboarding in a pedestrian zone", ALL_SCENES),
    "drive": ("a car or van driving in a pedestrian zone",
              ("campus_walkway", "plaza", "road_crossing", "building_entrance")),
    "cart": ("pushing a cart through a pedestrian zone", ALL_SCENES),
    "fall": ("a person falling down", ALL_SCENES),
    "fight": ("two people fighting", ALL_SCENES),
    "jump": ("a person jumping up and down", ALL_SCENES),
    "loiter": ("a person loitering, pacing back and forth", ALL_SCENES),
    "wrong_way": ("walking against the flow of people", ("campus_walkway", "park_path")),
    "throw": ("a person throwing an object", ALL_SCENES),
    "jaywalk": ("crossing the road away from the crossing", ("road_crossing",)),
    "abandon_bag": ("leaving a bag behind", ALL_SCENES),
    "chase": ("one person chasing another", ALL_SCENES),
}


@dataclass
class Plan:
    agent: Agent
    behaviour: str
    pos: np.ndarray  # (T, 2) world X, Z of the feet / ground contact
    present: np.ndarray  # (T,) bool: in the scene (not yet arrived / gone through a door: False)
    poses: list[Pose]
    anomalous: np.ndarray  # (T,) bool
    up: np.ndarray | None = None  # (T,) metres above the ground (thrown objects)
    route: str | None = None
    facing_hint: float | None = None  # fixed facing when stationary
    meta: dict = field(default_factory=dict)


@dataclass
class Context:
    scene: Scene
    cam: Camera
    T: int
    fps: float
    rng: np.random.Generator
    routes: dict[str, Route]
    flow: str | None = None  # the dominant route of this clip (flow scenes)
    lanes: dict = field(default_factory=dict)  # road route -> (speed, start offsets taken): no pile-ups
    _next: int = 1

    def new_id(self) -> int:
        i = self._next
        self._next += 1
        return i


# --------------------------------------------------------------------------- path helpers


def _polyline(points: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    P = np.asarray(points, np.float64)
    seg = np.linalg.norm(np.diff(P, axis=0), axis=1)
    return P, np.concatenate([[0.0], np.cumsum(seg)])


def _at(P: np.ndarray, cum: np.ndarray, s: np.ndarray) -> np.ndarray:
    s = np.clip(s, 0.0, cum[-1])
    x = np.interp(s, cum, P[:, 0])
    z = np.interp(s, cum, P[:, 1])
    return np.stack([x, z], -1)


def follow(route: Route, s0: float, speed: np.ndarray, fps: float, lateral: float = 0.0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions along a route from arc length s0 with per-frame speeds (m/s). Returns (pos, present, s)."""
    P, cum = _polyline(route.points)
    s = s0 + np.concatenate([[0.0], np.cumsum(speed[:-1] / fps)])
    pos = _at(P, cum, s)
    if lateral:
        # offset sideways from the route (walking side by side)
        d = _at(P, cum, s + 0.5) - _at(P, cum, s - 0.5)
        n = np.stack([-d[:, 1], d[:, 0]], -1)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-6)
        pos = pos + lateral * n
    present = (s >= 0.0) & (s <= cum[-1])
    return pos, present, s


def route_length(route: Route) -> float:
    return float(_polyline(route.points)[1][-1])


def reverse(route: Route) -> Route:
    return Route(route.name + "_rev", list(reversed(route.points)), route.kind, route.two_way)


def gait_poses(dist: np.ndarray, swing: float | np.ndarray, stride_m: float | np.ndarray, phase0: float
               ) -> list[Pose]:
    """Poses whose gait phase advances with the distance covered (one cycle per stride)."""
    T = len(dist)
    swing = np.broadcast_to(np.asarray(swing, np.float64), (T,))
    stride = np.broadcast_to(np.asarray(stride_m, np.float64), (T,))
    phase = phase0 + 2 * math.pi * np.cumsum(np.concatenate([[0.0], dist[1:] / stride[1:]]))
    return [Pose(phase=float(phase[t]), swing=float(swing[t]) if dist[t] > 1e-4 or t == 0 else 0.0)
            for t in range(T)]


def _steps(pos: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.linalg.norm(np.diff(pos, axis=0), axis=1)])


def _pick_route(ctx: Context, kinds: tuple[str, ...] = ("walk", "cross"), exclude: tuple[str, ...] = ()
                ) -> Route:
    names = [n for n, r in ctx.routes.items() if r.kind in kinds and n not in exclude]
    r = ctx.routes[names[int(ctx.rng.integers(len(names)))]]
    if r.two_way and ctx.flow is None and ctx.rng.random() < 0.5:
        r = reverse(r)
    return r


def in_view(ctx: Context, pos: np.ndarray, max_depth: float = 4.5) -> np.ndarray:
    """Per position: the ground point lies inside the image and not farther than max_depth * z_near."""
    cam = ctx.cam
    out = np.zeros(len(pos), bool)
    for i, (x, z) in enumerate(pos):
        u, v = cam.project(float(x), float(z))
        out[i] = 0 <= u < cam.width and cam.horizon + 2 < v < cam.height and z <= max_depth * cam.z_near
    return out


def _start_offset(ctx: Context, route: Route, speed: float, focus: bool = False) -> float:
    """An arc length to start from so the agent spends a good part of the clip in view.

    ``focus`` (anomalous agents): stay within 3 near-depths of the camera and in view most of the clip.
    """
    P, cum = _polyline(route.points)
    s = np.arange(0.0, cum[-1], 0.2)
    vis = np.nonzero(in_view(ctx, _at(P, cum, s), 3.0 if focus else 4.5))[0]
    travel = speed * ctx.T / ctx.fps
    if len(vis) == 0:
        return float(ctx.rng.uniform(-0.3 * travel, max(0.0, cum[-1] - travel)))
    sa, sb = float(s[vis[0]]), float(s[vis[-1]])
    if focus and ctx.rng.random() < 0.5:
        # arrive a while after the clip starts: normal frames first, then the anomaly (temporal localisation)
        return sa - float(ctx.rng.uniform(0.15, 0.45)) * travel
    lo, hi = (sa - 0.15 * travel, sb - 0.85 * travel) if focus else (sa - 0.5 * travel, sb - 0.5 * travel)
    if hi <= lo:
        return float((sa + sb) / 2 - travel / 2 + ctx.rng.uniform(-0.1, 0.1) * travel)
    return float(ctx.rng.uniform(lo, hi))


def _spot(ctx: Context, depth: tuple[float, float] = (1.2, 2.6), pedestrian: bool = True) -> tuple[float, float]:
    """A random visible ground point (in a pedestrian zone when asked)."""
    from datasets_builder.synth.scenes import is_pedestrian_zone

    zn = ctx.cam.z_near
    for _ in range(50):
        Z = float(ctx.rng.uniform(zn * depth[0], zn * depth[1]))
        half = Z * ctx.cam.width / (2 * ctx.cam.f)
        X = float(ctx.rng.uniform(-0.8 * half, 0.8 * half))
        if not pedestrian or is_pedestrian_zone(ctx.scene.zone_at(X, Z), ctx.scene):
            return X, Z
    return 0.0, zn * 1.5


def _constant(T: int, v: float) -> np.ndarray:
    return np.full(T, float(v))


def _onset(ctx: Context, lo: float = 0.15, hi: float = 0.5) -> int:
    return int(ctx.rng.integers(int(lo * ctx.T), max(int(lo * ctx.T) + 1, int(hi * ctx.T))))


# --------------------------------------------------------------------------- normal behaviours


def walk(ctx: Context, route: Route | None = None, speed: float | None = None, behaviour: str = "walk",
         agent: Agent | None = None, focus: bool = False) -> list[Plan]:
    rng = ctx.rng
    if route is None:
        if ctx.flow is not None and rng.random() < 0.75:
            route = ctx.routes[ctx.flow]
        else:
            route = _pick_route(ctx, exclude=tuple(n for n in ctx.scene.flow_routes if n != ctx.flow))
    v = float(speed if speed is not None else rng.uniform(1.1, 1.6))
    agent = agent or random_person(rng, ctx.new_id())
    s0 = _start_offset(ctx, route, v, focus=focus)
    pos, present, _ = follow(route, s0, _constant(ctx.T, v) * rng.uniform(0.95, 1.05, ctx.T), ctx.fps,
                             lateral=float(rng.uniform(-1.0, 1.0)))
    poses = gait_poses(_steps(pos), 0.45, 1.35, float(rng.uniform(0, 6.28)))
    return [Plan(agent, behaviour, pos, present, poses, np.zeros(ctx.T, bool), route=route.name)]


def stand(ctx: Context) -> list[Plan]:
    X, Z = _spot(ctx)
    agent = random_person(ctx.rng, ctx.new_id())
    pos = np.tile([X, Z], (ctx.T, 1)).astype(np.float64)
    facing = float(ctx.rng.choice([-1.0, 1.0, 0.0]))
    poses = [Pose(facing=facing, toward=bool(ctx.rng.random() < 0.5)) for _ in range(ctx.T)]
    return [Plan(agent, "stand", pos, np.ones(ctx.T, bool), poses, np.zeros(ctx.T, bool), facing_hint=facing)]


def talk(ctx: Context) -> list[Plan]:
    X, Z = _spot(ctx)
    n = int(ctx.rng.integers(2, 4))
    plans = []
    for k in range(n):
        ang = 2 * math.pi * k / n + ctx.rng.uniform(-0.3, 0.3)
        x, z = X + 0.55 * math.cos(ang), Z + 0.45 * math.sin(ang)
        facing = -1.0 if math.cos(ang) > 0.3 else 1.0 if math.cos(ang) < -0.3 else 0.0
        agent = random_person(ctx.rng, ctx.new_id())
        t0 = float(ctx.rng.uniform(0, 5))
        poses = [Pose(facing=facing, toward=math.sin(ang) > 0, arms="gesture" if (t // 8 + k) % n == 0 else "swing",
                      arm_t=t0 + t / ctx.fps) for t in range(ctx.T)]
        plans.append(Plan(agent, "talk", np.tile([x, z], (ctx.T, 1)).astype(np.float64), np.ones(ctx.T, bool),
                          poses, np.zeros(ctx.T, bool), facing_hint=facing, meta={"group": int(X * 100)}))
    return plans


def enter_leave(ctx: Context, which: str) -> list[Plan]:
    names = [n for n, r in ctx.routes.items() if r.kind == "door" and n.startswith(which)]
    route = ctx.routes[names[int(ctx.rng.integers(len(names)))]]
    v = float(ctx.rng.uniform(1.1, 1.5))
    L = route_length(route)
    travel = v * ctx.T / ctx.fps
    # entering: reach the door during the clip; leaving: come out of the door during the clip
    s0 = float(ctx.rng.uniform(L - travel, L - 0.3 * travel)) if which == "enter" else \
        float(ctx.rng.uniform(-0.6 * travel, -0.05 * travel))
    plans = walk(ctx, route=route, speed=v, behaviour=which)
    p = plans[0]
    pos, present, _ = follow(route, s0, _constant(ctx.T, v), ctx.fps)
    p.pos, p.present = pos, present
    p.poses = gait_poses(_steps(pos), 0.45, 1.35, float(ctx.rng.uniform(0, 6.28)))
    return plans


def drive_road(ctx: Context, anomalous: bool = False) -> list[Plan]:
    route = ctx.routes[str(ctx.rng.choice([n for n, r in ctx.routes.items() if r.kind == "road"]))]
    kind = "car" if ctx.rng.random() < 0.7 else "van"
    agent = random_vehicle(ctx.rng, ctx.new_id(), kind)
    # one speed per lane and at least 9 m between vehicles, so they never drive through each other
    v, taken = ctx.lanes.setdefault(route.name, (float(ctx.rng.uniform(5.0, 9.0)), []))
    for _ in range(20):
        s0 = _start_offset(ctx, route, v)
        if all(abs(s0 - o) > 9.0 for o in taken):
            break
    else:
        return []
    taken.append(s0)
    pos, present, _ = follow(route, s0, _constant(ctx.T, v), ctx.fps)
    return [Plan(agent, "drive_road", pos, present, [Pose() for _ in range(ctx.T)], np.zeros(ctx.T, bool),
                 route=route.name)]


def _rider(ctx: Context, kind: str) -> Agent:
    person = random_person(ctx.rng, ctx.new_id(), category=kind)
    board = random_vehicle(ctx.rng, person.instance_id, kind)
    person.colours["body"] = board.colours["body"]
    person.attributes["color"] = board.attributes["color"]
    return person


def cycle_road(ctx: Context) -> list[Plan]:
    route = ctx.routes[str(ctx.rng.choice([n for n, r in ctx.routes.items() if r.kind == "road"]))]
    v = float(ctx.rng.uniform(3.5, 5.5))
    agent = _rider(ctx, "cyclist")
    s0 = _start_offset(ctx, route, v)
    pos, present, _ = follow(route, s0, _constant(ctx.T, v), ctx.fps, lateral=-1.0)
    poses = gait_poses(_steps(pos), 0.0, 2.0, float(ctx.rng.uniform(0, 6.28)))
    return [Plan(agent, "cycle_road", pos, present, poses, np.zeros(ctx.T, bool), route=route.name)]


# --------------------------------------------------------------------------- anomalous behaviours


def _ped_route(ctx: Context) -> Route:
    # the far pavement of the road scene hides behind passing traffic: anomalies use the near one
    return _pick_route(ctx, kinds=("walk",), exclude=("grass", "lawn", "jay", "walk_far"))


def run(ctx: Context) -> list[Plan]:
    route = _ped_route(ctx)
    onset = _onset(ctx, 0.0, 0.4) if ctx.rng.random() < 0.5 else 0
    v_walk, v_run = float(ctx.rng.uniform(1.1, 1.5)), float(ctx.rng.uniform(3.8, 5.5))
    speed = np.where(np.arange(ctx.T) < onset, v_walk, v_run)
    agent = random_person(ctx.rng, ctx.new_id())
    s0 = _start_offset(ctx, route, float(speed.mean()), focus=True)
    pos, present, _ = follow(route, s0, speed, ctx.fps)
    running = np.arange(ctx.T) >= onset
    poses = gait_poses(_steps(pos), np.where(running, 0.72, 0.45), np.where(running, 2.3, 1.35),
                       float(ctx.rng.uniform(0, 6.28)))
    for t in np.nonzero(running)[0]:
        poses[t].tilt = 0.12  # lean into the run (sign fixed later by the facing)
    return [Plan(agent, "run", pos, present, poses, running.copy(), route=route.name, meta={"onset": onset})]


def ride(ctx: Context, kind: str) -> list[Plan]:
    route = _ped_route(ctx)
    v = float(ctx.rng.uniform(4.0, 6.0) if kind == "cyclist" else ctx.rng.uniform(2.8, 4.2))
    agent = _rider(ctx, kind)
    s0 = _start_offset(ctx, route, v, focus=True)
    pos, present, _ = follow(route, s0, _constant(ctx.T, v), ctx.fps)
    poses = gait_poses(_steps(pos), 0.0, 2.0 if kind == "cyclist" else 3.0, float(ctx.rng.uniform(0, 6.28)))
    beh = "cycle" if kind == "cyclist" else "skate"
    return [Plan(agent, beh, pos, present, poses, np.ones(ctx.T, bool), route=route.name)]


def drive(ctx: Context) -> list[Plan]:
    route = _ped_route(ctx)
    kind = "car" if ctx.rng.random() < 0.6 else "van"
    agent = random_vehicle(ctx.rng, ctx.new_id(), kind)
    v = float(ctx.rng.uniform(3.0, 6.0))
    s0 = _start_offset(ctx, route, v, focus=True)
    pos, present, _ = follow(route, s0, _constant(ctx.T, v), ctx.fps)
    return [Plan(agent, "drive", pos, present, [Pose() for _ in range(ctx.T)], np.ones(ctx.T, bool),
                 route=route.name)]


def cart(ctx: Context) -> list[Plan]:
    route = _ped_route(ctx)
    v = float(ctx.rng.uniform(1.0, 1.5))
    cart_agent = random_vehicle(ctx.rng, ctx.new_id(), "cart")
    s0 = _start_offset(ctx, route, v, focus=True)
    pos, present, _ = follow(route, s0 + 1.1, _constant(ctx.T, v), ctx.fps)
    pusher = walk(ctx, route=route, speed=v, behaviour="cart")[0]
    ppos, ppresent, _ = follow(route, s0, _constant(ctx.T, v), ctx.fps)
    pusher.pos, pusher.present = ppos, ppresent
    pusher.poses = gait_poses(_steps(ppos), 0.35, 1.2, 0.0)
    for p in pusher.poses:
        p.arms = "hold"
    pusher.anomalous = np.ones(ctx.T, bool)
    pusher.meta["pushing"] = cart_agent.instance_id
    pusher.agent.attributes["action"] = "pushing a cart"
    return [Plan(cart_agent, "cart", pos, present, [Pose() for _ in range(ctx.T)], np.ones(ctx.T, bool),
                 route=route.name), pusher]


def fall(ctx: Context) -> list[Plan]:
    p = walk(ctx, route=_ped_route(ctx), behaviour="fall", focus=True)[0]
    # choose the fall moment while the walker is in view
    vis = np.nonzero(p.present & in_view(ctx, p.pos))[0]
    onset = int(vis[len(vis) // 3]) if len(vis) > 6 else _onset(ctx)
    p.pos[onset:] = p.pos[onset]
    direction = 1.0 if ctx.rng.random() < 0.5 else -1.0
    for t in range(onset, ctx.T):
        k = min(1.0, (t - onset + 1) / 5.0)
        p.poses[t] = Pose(phase=p.poses[onset].phase, swing=0.0, tilt=direction * k * 1.45,
                          arms="up" if k < 1 else "swing", crouch=0.3 * k)
    p.present[onset:] = True
    p.anomalous[onset:] = True
    p.meta["onset"] = onset
    p.facing_hint = direction
    return [p]


def fight(ctx: Context) -> list[Plan]:
    X, Z = _spot(ctx)
    onset = _onset(ctx, 0.1, 0.4)
    plans = []
    for k, side in enumerate((-1.0, 1.0)):
        agent = random_person(ctx.rng, ctx.new_id())
        start = np.array([X + side * 2.5, Z + ctx.rng.uniform(-0.3, 0.3)])
        end = np.array([X + side * 0.35, Z])
        t = np.arange(ctx.T)
        a = np.clip(t / max(onset, 1), 0, 1)[:, None]
        pos = start * (1 - a) + end * a
        jitter = np.where(t[:, None] >= onset, ctx.rng.normal(0, 0.06, (ctx.T, 2)), 0.0)
        pos = pos + jitter
        poses = gait_poses(_steps(pos), 0.45, 1.2, float(ctx.rng.uniform(0, 6)))
        for i in range(onset, ctx.T):
            poses[i] = Pose(phase=0.0, swing=0.2, facing=-side, arms="punch", arm_t=(i - onset) / 6.0 + k * 0.5,
                            tilt=-side * 0.08 * math.sin(i * 1.3 + k))
        anom = t >= onset
        plans.append(Plan(agent, "fight", pos, np.ones(ctx.T, bool), poses, anom, facing_hint=-side,
                          meta={"onset": onset}))
    return plans


def jump(ctx: Context) -> list[Plan]:
    X, Z = _spot(ctx)
    agent = random_person(ctx.rng, ctx.new_id())
    onset = _onset(ctx, 0.1, 0.4)
    period = float(ctx.rng.uniform(6, 9))
    poses = []
    for t in range(ctx.T):
        if t < onset:
            poses.append(Pose(facing=0.0, toward=True))
        else:
            ph = (t - onset) / period * 2 * math.pi
            lift = 0.22 * max(0.0, math.sin(ph))
            poses.append(Pose(facing=0.0, toward=True, lift=lift, arms="up" if lift > 0.05 else "swing",
                              crouch=0.5 if lift < 0.03 else 0.0))
    return [Plan(agent, "jump", np.tile([X, Z], (ctx.T, 1)).astype(np.float64), np.ones(ctx.T, bool), poses,
                 np.arange(ctx.T) >= onset, facing_hint=0.0, meta={"onset": onset})]


def loiter(ctx: Context) -> list[Plan]:
    X, Z = _spot(ctx, pedestrian=False)
    agent = random_person(ctx.rng, ctx.new_id())
    amp = float(ctx.rng.uniform(0.9, 1.6))
    w = 2 * math.pi / float(ctx.rng.uniform(0.5, 0.8) * ctx.T)
    t = np.arange(ctx.T)
    ph0 = float(ctx.rng.uniform(0, 6.28))
    pos = np.stack([X + amp * np.sin(w * t + ph0), Z + 0.4 * np.sin(0.5 * w * t)], -1)
    poses = gait_poses(_steps(pos), 0.3, 1.0, ph0)
    return [Plan(agent, "loiter", pos, np.ones(ctx.T, bool), poses, np.ones(ctx.T, bool))]


def wrong_way(ctx: Context) -> list[Plan]:
    assert ctx.flow is not None
    route = reverse(ctx.routes[ctx.flow])
    p = walk(ctx, route=route, behaviour="wrong_way", focus=True)[0]
    p.anomalous[:] = True
    return [p]


def throw(ctx: Context) -> list[Plan]:
    X, Z = _spot(ctx)
    agent = random_person(ctx.rng, ctx.new_id())
    onset = _onset(ctx, 0.15, 0.45)
    side = 1.0 if ctx.rng.random() < 0.5 else -1.0
    poses = [Pose(facing=side) if t < onset else
             Pose(facing=side, arms="throw", arm_t=min(1.0, (t - onset) / 4.0)) for t in range(ctx.T)]
    thrower = Plan(agent, "throw", np.tile([X, Z], (ctx.T, 1)).astype(np.float64), np.ones(ctx.T, bool), poses,
                   (np.arange(ctx.T) >= onset) & (np.arange(ctx.T) < onset + 8), facing_hint=side,
                   meta={"onset": onset})
    obj = Agent(ctx.new_id(), "object", {"color": "white"}, {"body": COLOURS["white"]}, height_m=0.3)
    release = onset + 3
    t = (np.arange(ctx.T) - release) / ctx.fps
    vx, vy = side * float(ctx.rng.uniform(5, 8)), float(ctx.rng.uniform(3, 5))
    tt = np.clip(t, 0, None)
    h0 = 1.9 * agent.height_m / 1.72
    up = h0 + vy * tt - 4.9 * tt**2
    land = (vy + math.sqrt(vy**2 + 2 * 9.8 * h0)) / 9.8
    tt = np.minimum(tt, land)
    up = np.maximum(h0 + vy * tt - 4.9 * tt**2, 0.0)
    pos = np.stack([X + side * 0.3 + vx * tt, np.full(ctx.T, Z)], -1)
    present = t >= 0
    throwing = present.copy()
    return [thrower, Plan(obj, "throw", pos, present, [Pose() for _ in range(ctx.T)], throwing, up=up,
                          facing_hint=side, meta={"thrown_by": agent.instance_id})]


def jaywalk(ctx: Context) -> list[Plan]:
    route = ctx.routes["jay"]
    if ctx.rng.random() < 0.5:
        route = reverse(route)
    v = float(ctx.rng.uniform(1.3, 1.8))
    p = walk(ctx, route=route, behaviour="jaywalk", speed=v)[0]
    # start so the walker steps onto the road within the first third of the clip
    P, cum = _polyline(route.points)
    s = np.arange(0.0, cum[-1], 0.1)
    on_road = [ctx.scene.zone_at(float(x), float(z)) == ROAD for x, z in _at(P, cum, s)]
    s_kerb = float(s[on_road.index(True)]) if True in on_road else 0.0
    s0 = s_kerb - v * float(ctx.rng.uniform(0.05, 0.33)) * ctx.T / ctx.fps
    p.pos, p.present, _ = follow(route, s0, _constant(ctx.T, v), ctx.fps)
    p.poses = gait_poses(_steps(p.pos), 0.45, 1.35, 0.0)
    p.meta["on_road"] = True  # anomalous while on the road surface: set by the generator from the zone map
    return [p]


def abandon_bag(ctx: Context) -> list[Plan]:
    p = walk(ctx, route=_ped_route(ctx), behaviour="walk", focus=True)[0]
    # drop the bag where it stays in view (not under the bottom edge)
    vis = np.nonzero(p.present & in_view(ctx, p.pos + np.array([0.25, -0.1]), 3.5))[0]
    drop = int(vis[min(len(vis) - 1, len(vis) // 4)]) if len(vis) else _onset(ctx)
    p.agent.attributes["carrying"] = "bag"
    bag = Agent(ctx.new_id(), "bag", {"color": "brown"}, {"body": COLOURS[str(ctx.rng.choice(
        ["brown", "black", "red", "navy"]))]}, height_m=0.35)
    bag.attributes["color"] = [k for k, v in COLOURS.items() if v == bag.colours["body"]][0]
    pos = np.tile(p.pos[drop] + np.array([0.25, -0.1]), (ctx.T, 1))
    present = np.arange(ctx.T) >= drop
    # the owner keeps the bag until the drop; afterwards the owner carries nothing
    p.meta["drops_bag_at"] = drop
    return [p, Plan(bag, "abandon_bag", pos, present, [Pose() for _ in range(ctx.T)], present.copy(),
                    meta={"owner": p.agent.instance_id, "onset": drop})]


def chase(ctx: Context) -> list[Plan]:
    route = _ped_route(ctx)
    v = float(ctx.rng.uniform(3.8, 5.0))
    s0 = _start_offset(ctx, route, v, focus=True)
    plans = []
    for k, gap in enumerate((0.0, -2.2)):
        agent = random_person(ctx.rng, ctx.new_id())
        pos, present, _ = follow(route, s0 + gap, _constant(ctx.T, v * (1.0 + 0.04 * k)), ctx.fps,
                                 lateral=0.3 * k)
        poses = gait_poses(_steps(pos), 0.72, 2.3, float(ctx.rng.uniform(0, 6.28)))
        plans.append(Plan(agent, "chase", pos, present, poses, np.ones(ctx.T, bool), route=route.name,
                          meta={"role": "chased" if k == 0 else "chaser"}))
    return plans


# what an instance is doing, per frame: the anomalous action while flagged, else the normal one
ACTIONS_NORMAL = {"walk": "walking", "stand": "standing", "talk": "talking", "enter": "walking", "leave": "walking",
                  "drive_road": "driving", "cycle_road": "riding a bicycle", "run": "walking", "fall": "walking",
                  "fight": "walking", "jump": "standing", "throw": "standing", "jaywalk": "walking",
                  "abandon_bag": "lying on the ground", "cart": "pushing a cart", "wrong_way": "walking",
                  "loiter": "walking", "chase": "running", "cycle": "riding a bicycle", "skate": "skateboarding",
                  "drive": "driving"}
ACTIONS_ANOMALOUS = {"run": "running", "fall": "falling", "fight": "fighting", "jump": "jumping",
                     "throw": "throwing", "jaywalk": "crossing the road", "abandon_bag": "left unattended",
                     "cart": "pushing a cart", "wrong_way": "walking against the flow", "loiter": "loitering",
                     "chase": "running", "cycle": "riding a bicycle", "skate": "skateboarding", "drive": "driving"}


def action_of(plan: Plan, t: int) -> str:
    if plan.agent.category == "object":
        return "flying through the air" if plan.anomalous[t] else "lying on the ground"
    if plan.agent.category == "cart":
        return "being pushed"
    if plan.behaviour == "fall" and plan.anomalous[t]:
        return "falling" if t - plan.meta.get("onset", 0) < 5 else "lying on the ground"
    table = ACTIONS_ANOMALOUS if plan.anomalous[t] else ACTIONS_NORMAL
    return table.get(plan.behaviour, "walking")


ANOMALY_BUILDERS: dict[str, Callable[[Context], list[Plan]]] = {
    "run": run, "cycle": lambda c: ride(c, "cyclist"), "skate": lambda c: ride(c, "skateboarder"),
    "drive": drive, "cart": cart, "fall": fall, "fight": fight, "jump": jump, "loiter": loiter,
    "wrong_way": wrong_way, "throw": throw, "jaywalk": jaywalk, "abandon_bag": abandon_bag, "chase": chase,
}
assert set(ANOMALY_BUILDERS) == set(ANOMALY_TYPES)


def normal_population(ctx: Context, n: int) -> list[Plan]:
    """A mix of normal behaviours suited to the scene."""
    rng = ctx.rng
    plans: list[Plan] = []
    options = ["walk"] * 6 + ["stand"] + ["talk"]
    if ctx.scene.has_door:
        options += ["enter", "leave"] * 2
    if ctx.scene.has_road:
        options += ["drive_road"] * 3 + ["cycle_road"]
    while len(plans) < n:
        b = options[int(rng.integers(len(options)))]
        if b == "walk":
            plans += walk(ctx)
        elif b == "stand":
            plans += stand(ctx)
        elif b == "talk":
            plans += talk(ctx)
        elif b in ("enter", "leave"):
            plans += enter_leave(ctx, b)
        elif b == "drive_road":
            got = drive_road(ctx)
            plans += got
            if not got:  # the lanes are full
                options = [o for o in options if o != "drive_road"]
        else:
            plans += cycle_road(ctx)
    return plans


def road_mask_flags(plan: Plan, ctx: Context) -> np.ndarray:
    """Per frame: is the plan's ground point on the road surface (not the zebra crossing)?"""
    return np.array([ctx.scene.zone_at(float(x), float(z)) == ROAD for x, z in plan.pos])
