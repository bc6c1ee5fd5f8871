"""SynthCampus scenes: a pinhole camera over a ground plane, zones, routes, static props and backgrounds.

World coordinates are metres on the ground plane: X to the right, Z away from the camera. The camera
looks horizontally (horizon row fixed), so a ground point projects to ``x = cx + f X / Z`` and
``y = horizon + f h / Z`` and an object of height ``s`` metres is ``f s / Z`` pixels tall: objects
shrink with distance. Backgrounds are rendered by back-projecting every ground pixel to (X, Z) and
evaluating the scene's zone map there, so paving, lanes and crossings are in true perspective.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

# Ground zones. Pedestrian zones are PAVING and CROSSWALK.
GRASS, PAVING, ROAD, CROSSWALK, WATER, GRAVEL = 0, 1, 2, 3, 4, 5
PEDESTRIAN_ZONES = (PAVING, CROSSWALK)
ZONE_NAMES = {GRASS: "grass", PAVING: "paving", ROAD: "road", CROSSWALK: "crosswalk", WATER: "water",
              GRAVEL: "gravel"}

PERSON_HEIGHT_M = 1.72


@dataclass
class Camera:
    width: int
    height: int
    horizon: float  # image row of the horizon
    f: float  # focal length in pixels
    hc: float  # camera height in metres
    mirror: bool = False  # the layout seen mirrored left-right (more variety from the same scenes)

    @classmethod
    def for_scene(cls, width: int, height: int, horizon_frac: float, near_person_frac: float,
                  mirror: bool = False) -> Camera:
        f = 0.95 * width
        horizon = horizon_frac * height
        z_near = f * PERSON_HEIGHT_M / (near_person_frac * height)  # a person with feet on the bottom row
        hc = z_near * (height - horizon) / f
        return cls(width, height, horizon, f, hc, mirror)

    @property
    def sx(self) -> float:
        return -1.0 if self.mirror else 1.0

    @property
    def z_near(self) -> float:
        return self.f * self.hc / (self.height - self.horizon)

    def project(self, X: float, Z: float, up: float = 0.0) -> tuple[float, float]:
        """Image point of the world point (X, up, Z) (up in metres above the ground)."""
        Z = max(Z, 0.05)
        return self.width / 2 + self.sx * self.f * X / Z, self.horizon + self.f * (self.hc - up) / Z

    def px_per_m(self, Z: float) -> float:
        return self.f / max(Z, 0.05)

    def x_edge(self, Z: float, side: int, margin_m: float = 1.5) -> float:
        """World X just outside the world's left (-1) or right (+1) view border at depth Z."""
        return side * (Z * self.width / (2 * self.f) + margin_m)

    def ground_grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, Z, valid) for every pixel; valid marks pixels below the horizon."""
        ys, xs = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        dy = ys + 0.5 - self.horizon
        valid = dy > 0.5
        Z = np.where(valid, self.f * self.hc / np.maximum(dy, 0.5), 1e4).astype(np.float32)
        X = (self.sx * (xs + 0.5 - self.width / 2) * Z / self.f).astype(np.float32)
        return X, Z, valid


@dataclass
class Route:
    """A polyline on the ground (world metres) that agents follow; ``kind`` says who uses it."""

    name: str
    points: list[tuple[float, float]]
    kind: str = "walk"  # walk | road | cross (pedestrian crossing) | door
    two_way: bool = True


@dataclass
class Prop:
    """A static object that occludes agents behind it (drawn in depth order, id 0)."""

    kind: str  # tree | lamp | bench | planter | bollard | bin
    X: float
    Z: float
    scale: float = 1.0


@dataclass
class Facade:
    """A building front: a vertical plane at depth Z (X from x0 to x1), optionally with a door."""

    Z: float
    x0: float
    x1: float
    height: float
    door: tuple[float, float] | None = None  # X range of the door
    colour: tuple[int, int, int] = (170, 160, 150)


@dataclass
class Scene:
    name: str
    horizon_frac: float
    near_person_frac: float
    zone_fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    routes_fn: Callable[[Camera], dict[str, Route]]
    props: list[Prop] = field(default_factory=list)
    facades: list[Facade] = field(default_factory=list)
    flow_routes: tuple[str, ...] = ()  # routes with a dominant direction (walking against it is anomalous)
    has_road: bool = False
    has_door: bool = False
    paving_tile_m: float = 0.8
    description: str = ""

    def camera(self, width: int, height: int, rng: np.random.Generator | None = None) -> Camera:
        """The scene's camera; with ``rng`` a varied one (height, tilt of the horizon, mirrored layout)."""
        if rng is None:
            return Camera.for_scene(width, height, self.horizon_frac, self.near_person_frac)
        return Camera.for_scene(width, height, self.horizon_frac * float(rng.uniform(0.85, 1.15)),
                                self.near_person_frac * float(rng.uniform(0.85, 1.12)), bool(rng.random() < 0.5))

    def zone_at(self, X: float, Z: float) -> int:
        return int(self.zone_fn(np.array([[X]], np.float32), np.array([[Z]], np.float32))[0, 0])


# --------------------------------------------------------------------------- layouts


def _walkway_zone(X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    z = np.full(X.shape, GRASS, np.uint8)
    z[np.abs(X) < 2.2] = PAVING
    z[(Z > 15.5) & (Z < 18.0)] = PAVING  # a cross path
    z[(np.abs(X) >= 2.2) & (np.abs(X) < 2.5)] = GRAVEL  # kerb strip
    return z


def _walkway_routes(cam: Camera) -> dict[str, Route]:
    zn = cam.z_near
    xl, xr = cam.x_edge(16.75, -1), cam.x_edge(16.75, 1)
    return {
        "main": Route("main", [(0.7, zn - 2.5), (0.7, 42.0)], "walk"),
        "main_b": Route("main_b", [(-0.8, 42.0), (-0.8, zn - 2.5)], "walk"),
        "cross": Route("cross", [(xl, 16.75), (xr, 16.75)], "walk"),
        "turn": Route("turn", [(xl, 16.4), (0.2, 16.4), (0.2, zn - 2.5)], "walk"),
        "grass": Route("grass", [(cam.x_edge(10, -1), 10.0), (cam.x_edge(13, 1), 13.0)], "walk"),
    }


def _plaza_zone(X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    z = np.full(X.shape, PAVING, np.uint8)
    z[(X**2 + (Z - 17.0) ** 2) < 2.3**2] = WATER  # fountain basin
    z[Z > 30] = GRASS
    return z


def _plaza_routes(cam: Camera) -> dict[str, Route]:
    zn = cam.z_near
    return {
        "lr_near": Route("lr_near", [(cam.x_edge(10, -1), 10.0), (cam.x_edge(10, 1), 10.0)]),
        "lr_far": Route("lr_far", [(cam.x_edge(22, -1), 22.0), (cam.x_edge(22, 1), 22.0)]),
        "diag": Route("diag", [(cam.x_edge(12, -1), 12.0), (-3.6, 14.5), (-3.4, 20.5), (3.0, 26.0)]),
        "around": Route("around", [(3.6, zn - 2.5), (3.8, 17.0), (cam.x_edge(24, 1), 24.0)]),
        "toward": Route("toward", [(-2.5, 28.0), (-1.2, zn - 2.5)]),
    }


def _crossing_zone(X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    z = np.full(X.shape, PAVING, np.uint8)
    road = (Z >= 11.0) & (Z < 17.0)
    z[road] = ROAD
    z[road & (np.abs(X) < 1.6)] = CROSSWALK
    z[Z >= 20.0] = GRASS
    return z


def _crossing_routes(cam: Camera) -> dict[str, Route]:
    return {
        "walk_near": Route("walk_near", [(cam.x_edge(9.4, -1), 9.4), (cam.x_edge(9.4, 1), 9.4)]),
        "walk_far": Route("walk_far", [(cam.x_edge(18.6, -1), 18.6), (cam.x_edge(18.6, 1), 18.6)]),
        "zebra": Route("zebra", [(cam.x_edge(9.6, -1), 9.6), (0.2, 9.6), (0.2, 18.4),
                                 (cam.x_edge(18.4, 1), 18.4)], "cross"),
        "zebra_b": Route("zebra_b", [(cam.x_edge(18.8, 1), 18.8), (-0.4, 18.8), (-0.4, 9.2),
                                     (cam.x_edge(9.2, -1), 9.2)], "cross"),
        "lane1": Route("lane1", [(cam.x_edge(12.5, -1, 5), 12.5), (cam.x_edge(12.5, 1, 5), 12.5)], "road", False),
        "lane2": Route("lane2", [(cam.x_edge(15.5, 1, 5), 15.5), (cam.x_edge(15.5, -1, 5), 15.5)], "road", False),
        "jay": Route("jay", [(-5.5, 9.3), (-4.5, 18.6), (cam.x_edge(18.6, -1), 18.6)], "cross"),
    }


def _entrance_zone(X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    z = np.full(X.shape, PAVING, np.uint8)
    z[(np.abs(X) > 5.5) & (Z > 11.0) & (Z < 17.0)] = GRASS  # lawns either side of the forecourt
    z[(np.abs(X) > 5.3) & (np.abs(X) < 5.5) & (Z > 11.0) & (Z < 17.0)] = GRAVEL
    return z


def _entrance_routes(cam: Camera) -> dict[str, Route]:
    zn = cam.z_near
    return {
        "enter": Route("enter", [(0.6, zn - 2.5), (0.4, 17.0), (0.3, 18.2)], "door", False),
        "leave": Route("leave", [(-0.3, 18.2), (-0.5, 14.0), (cam.x_edge(9.0, -1), 9.0)], "door", False),
        "side": Route("side", [(cam.x_edge(9.0, -1), 9.0), (cam.x_edge(9.0, 1), 9.0)]),
        "side_far": Route("side_far", [(cam.x_edge(10.5, 1), 10.5), (cam.x_edge(10.5, -1), 10.5)]),
        "leave_b": Route("leave_b", [(0.0, 18.2), (0.8, 12.0), (1.0, zn - 2.5)], "door", False),
    }


def _park_centre(Z: np.ndarray | float) -> np.ndarray | float:
    return 2.4 * np.sin(np.asarray(Z) / 4.5) - 1.0


def _park_zone(X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    z = np.full(X.shape, GRASS, np.uint8)
    d = np.abs(X - _park_centre(Z))
    z[d < 1.5] = GRAVEL
    z[(X - 7.0) ** 2 / 9.0 + (Z - 24.0) ** 2 / 16.0 < 1.0] = WATER  # a pond
    return z


def _park_routes(cam: Camera) -> dict[str, Route]:
    zn = cam.z_near
    pts = [(float(_park_centre(z)) + 0.4, z) for z in np.linspace(zn - 2.5, 40.0, 14)]
    back = [(float(_park_centre(z)) - 0.4, z) for z in np.linspace(40.0, zn - 2.5, 14)]
    return {
        "path": Route("path", pts),
        "path_b": Route("path_b", back),
        "lawn": Route("lawn", [(cam.x_edge(11, 1), 11.0), (2.0, 14.0), (cam.x_edge(19, -1), 19.0)]),
    }


SCENES: dict[str, Scene] = {
    s.name: s
    for s in [
        Scene("campus_walkway", 0.26, 0.42, _walkway_zone, _walkway_routes,
              props=[Prop("tree", -4.2, 11.0), Prop("tree", 4.4, 13.5), Prop("tree", -4.0, 21.0),
                     Prop("tree", 4.6, 24.0), Prop("lamp", 2.7, 9.5), Prop("lamp", -2.7, 20.0),
                     Prop("bench", -3.0, 13.0), Prop("bin", 2.8, 19.5)],
              facades=[Facade(44.0, -30.0, 30.0, 14.0, colour=(160, 150, 140))],
              flow_routes=("main", "main_b"), paving_tile_m=0.7,
              description="a straight campus walkway between lawns, a cross path, a building far away"),
        Scene("plaza", 0.24, 0.40, _plaza_zone, _plaza_routes,
              props=[Prop("planter", -6.0, 12.0), Prop("planter", 6.0, 12.0), Prop("lamp", -5.0, 20.0),
                     Prop("lamp", 5.5, 20.0), Prop("bench", 6.5, 15.0), Prop("tree", -8.0, 26.0),
                     Prop("tree", 9.0, 28.0)],
              facades=[Facade(32.0, -40.0, 40.0, 12.0, colour=(185, 175, 165))],
              paving_tile_m=1.2, description="a paved plaza around a fountain"),
        Scene("road_crossing", 0.30, 0.45, _crossing_zone, _crossing_routes,
              props=[Prop("lamp", -3.0, 10.3), Prop("lamp", 4.0, 18.0), Prop("bollard", 2.0, 10.5),
                     Prop("bollard", -2.0, 10.5), Prop("tree", -7.0, 19.5), Prop("tree", 8.0, 19.5)],
              facades=[Facade(23.0, -40.0, 40.0, 10.0, colour=(150, 140, 150))],
              has_road=True, paving_tile_m=0.9,
              description="a road with a zebra crossing between two pavements"),
        Scene("building_entrance", 0.28, 0.42, _entrance_zone, _entrance_routes,
              props=[Prop("planter", -3.2, 15.0), Prop("planter", 3.2, 15.0), Prop("lamp", 4.2, 11.0),
                     Prop("bin", -4.5, 12.5)],
              facades=[Facade(18.5, -25.0, 25.0, 9.0, door=(-1.3, 1.3), colour=(175, 150, 130))],
              has_door=True, paving_tile_m=0.6,
              description="the forecourt of a building with its entrance door"),
        Scene("park_path", 0.30, 0.40, _park_zone, _park_routes,
              props=[Prop("tree", -5.0, 10.5), Prop("tree", 4.5, 12.5), Prop("tree", -6.0, 17.0),
                     Prop("tree", 2.5, 21.0), Prop("tree", -3.5, 27.0), Prop("bench", 2.3, 15.0),
                     Prop("lamp", -2.0, 13.0)],
              flow_routes=("path", "path_b"), paving_tile_m=0.0,
              description="a winding gravel path through a park with a pond"),
    ]
}


def is_pedestrian_zone(zone: int, scene: Scene) -> bool:
    # In the park the gravel path is the pedestrian zone; elsewhere gravel is a kerb strip.
    if scene.name == "park_path":
        return zone in (GRAVEL, GRASS)
    return zone in PEDESTRIAN_ZONES


# --------------------------------------------------------------------------- background


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    small = rng.random((max(2, h // cell + 2), max(2, w // cell + 2))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


ZONE_COLOURS = {
    GRASS: (78, 128, 60), PAVING: (168, 164, 156), ROAD: (78, 80, 86), CROSSWALK: (78, 80, 86),
    WATER: (70, 110, 150), GRAVEL: (170, 150, 120),
}


@dataclass
class Lighting:
    gain: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    sky_top: tuple[int, int, int] = (120, 160, 215)
    sky_bottom: tuple[int, int, int] = (200, 215, 230)
    shadow_side: float = 0.0  # -1..1: a soft shade over one side of the ground
    name: str = "day"


def random_lighting(rng: np.random.Generator) -> Lighting:
    kind = rng.choice(["day", "overcast", "evening", "bright"], p=[0.4, 0.25, 0.2, 0.15])
    if kind == "day":
        return Lighting(float(rng.uniform(0.9, 1.05)), (1.0, 1.0, 1.0), name="day",
                        shadow_side=float(rng.uniform(-1, 1)))
    if kind == "overcast":
        return Lighting(float(rng.uniform(0.78, 0.9)), (0.97, 0.99, 1.02), (170, 175, 182), (205, 208, 212),
                        name="overcast")
    if kind == "evening":
        return Lighting(float(rng.uniform(0.55, 0.7)), (1.08, 0.95, 0.85), (70, 80, 130), (230, 160, 110),
                        name="evening", shadow_side=float(rng.uniform(-1, 1)))
    return Lighting(float(rng.uniform(1.05, 1.15)), (1.03, 1.0, 0.95), (110, 165, 230), (210, 225, 240),
                    name="bright", shadow_side=float(rng.uniform(-1, 1)))


def render_background(scene: Scene, cam: Camera, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float32 background without lighting, zone map uint8 with 255 above the horizon)."""
    h, w = cam.height, cam.width
    X, Z, valid = cam.ground_grid()
    zones = scene.zone_fn(X, Z).astype(np.uint8)
    zones[~valid] = 255
    img = np.zeros((h, w, 3), np.float32)
    jitter = rng.uniform(0.85, 1.12, size=3).astype(np.float32)
    for zid, col in ZONE_COLOURS.items():
        m = zones == zid
        if m.any():
            img[m] = np.array(col, np.float32) * (jitter if zid in (PAVING, GRAVEL) else 1.0)
    fine = _smooth_noise(rng, h, w, 3)
    coarse = _smooth_noise(rng, h, w, 24)
    tex = (0.85 + 0.2 * coarse + 0.12 * (fine - 0.5))[..., None]
    img *= tex
    # distance fades texture contrast and tile lines (aerial perspective)
    near = np.clip(cam.z_near * 1.2 / Z, 0.0, 1.0)
    if scene.paving_tile_m > 0:
        t = scene.paving_tile_m
        fx = np.abs(((X / t) % 1.0) - 0.5)
        fz = np.abs(((Z / t) % 1.0) - 0.5)
        # line half-width in tile units grows with distance so far lines blur instead of alias
        lw = np.clip(0.03 * Z / cam.z_near, 0.03, 0.5)
        lines = ((fx > 0.5 - lw) | (fz > 0.5 - lw)) & (zones == PAVING)
        img[lines] *= (1.0 - 0.22 * near[lines])[:, None]
    road = zones == ROAD
    if road.any():
        # dashed centre line of the road and the zebra stripes
        mid = (np.abs(Z - 14.0) < 0.12) & (((X / 3.0) % 1.0) < 0.55) & road
        img[mid] = (225, 220, 200)
        # zebra bars run along the walking direction (away from the camera), alternating across the road
        zebra = (zones == CROSSWALK) & ((((X + 1.6) / 0.5) % 1.0) < 0.55) & (np.abs(Z - 14.0) < 2.7)
        img[zebra] = (232, 232, 228)
        kerb = (np.abs(Z - 11.0) < 0.1) | (np.abs(Z - 17.0) < 0.1)
        img[kerb & valid & ~(zones == GRASS)] = (200, 200, 195)
    water = zones == WATER
    if water.any():
        ripple = 0.9 + 0.15 * np.sin(X * 3.0 + Z * 1.3)
        img[water] *= ripple[water][:, None]
    grass = zones == GRASS
    if grass.any():
        blades = _smooth_noise(rng, h, w, 1)
        img[grass] *= (0.85 + 0.3 * blades[grass])[:, None]
    return img, zones


def compose_background(base: np.ndarray, zones: np.ndarray, scene: Scene, cam: Camera, light: Lighting,
                       rng: np.random.Generator) -> np.ndarray:
    """Sky, distant trees, facades, lighting: the static RGB uint8 background of a clip."""
    h, w = cam.height, cam.width
    img = base.copy()
    hz = int(math.ceil(cam.horizon))
    sky = zones == 255
    if hz > 0:
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None]
        grad = (np.array(light.sky_top, np.float32) * (1 - t) + np.array(light.sky_bottom, np.float32) * t)
        grad = np.broadcast_to(grad[:, None, :], (h, w, 3))
        img[sky] = grad[sky]
        # distant tree line / hills along the horizon
        xs = np.arange(w, dtype=np.float32)
        phase = rng.uniform(0, 10)
        ridge = cam.horizon - (4 + 3 * np.sin(xs / 17.0 + phase) + 2 * np.sin(xs / 5.3 + 2 * phase)) * h / 192
        ys = np.arange(h, dtype=np.float32)[:, None]
        hill = (ys >= ridge[None, :]) & sky
        img[hill] = np.array((60, 95, 60), np.float32) * (0.9 + 0.2 * _smooth_noise(rng, h, w, 4)[hill])[:, None]
    for fa in scene.facades:
        _draw_facade(img, fa, cam, rng)
    # lighting: global gain and tint, soft shade across one side, slight vignette
    img *= np.array(light.tint, np.float32) * light.gain
    if light.shadow_side:
        xs = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
        shade = 1.0 - 0.25 * np.clip(xs * np.sign(light.shadow_side), 0, 1) * abs(light.shadow_side)
        img *= shade[..., None]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    img *= (1.0 - 0.12 * r2)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_facade(img: np.ndarray, fa: Facade, cam: Camera, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    x0, yb = cam.project(fa.x0, fa.Z)
    x1, yt = cam.project(fa.x1, fa.Z, up=fa.height)
    x0, x1 = min(x0, x1), max(x0, x1)
    xa, xb = max(0, int(x0)), min(w, int(math.ceil(x1)))
    ya, yb_i = max(0, int(yt)), min(h, int(math.ceil(yb)))
    if xa >= xb or ya >= yb_i:
        return
    col = np.array(fa.colour, np.float32) * rng.uniform(0.85, 1.1, 3).astype(np.float32)
    region = img[ya:yb_i, xa:xb]
    region[:] = col * (0.9 + 0.15 * _smooth_noise(rng, yb_i - ya, xb - xa, 6))[..., None]
    ppm = cam.px_per_m(fa.Z)
    # windows: a grid in metres on the facade
    win = np.array((70, 90, 120), np.float32) * rng.uniform(0.8, 1.2)
    for fy in np.arange(2.5, fa.height - 0.8, 3.2):
        for fx in np.arange(fa.x0 + 1.0, fa.x1 - 1.0, 2.6):
            if fa.door and fa.door[0] - 1.5 < fx < fa.door[1] + 0.5 and fy < 3.0:
                continue
            px0, py0 = cam.project(fx, fa.Z, up=fy + 1.4)
            px0 = min(px0, px0 + cam.sx * 1.3 * ppm)
            px1 = px0 + 1.3 * ppm
            py1 = py0 + 1.4 * ppm
            if px1 < 0 or px0 >= w:
                continue
            cv2.rectangle(img, (int(px0), int(py0)), (int(px1), int(py1)), win.tolist(), -1)
    if fa.door:
        dx0, dy0 = cam.project(fa.door[0], fa.Z, up=2.4)
        dx1, dy1 = cam.project(fa.door[1], fa.Z)
        dx0, dx1 = min(dx0, dx1), max(dx0, dx1)
        cv2.rectangle(img, (int(dx0), int(dy0)), (int(dx1), int(dy1)), (45, 40, 38), -1)
        cv2.line(img, (int((dx0 + dx1) / 2), int(dy0)), (int((dx0 + dx1) / 2), int(dy1)), (120, 120, 120), 1)
        # canopy above the door
        cx0, cy0 = cam.project(fa.door[0] - 0.6, fa.Z, up=2.9)
        cx1, cy1 = cam.project(fa.door[1] + 0.6, fa.Z, up=2.6)
        cx0, cx1 = min(cx0, cx1), max(cx0, cx1)
        cv2.rectangle(img, (int(cx0), int(cy0)), (int(cx1), int(cy1)), (90, 60, 50), -1)
    # the facade base line
    cv2.line(img, (xa, int(yb) - 1), (xb, int(yb) - 1), (col * 0.6).tolist(), 1)
