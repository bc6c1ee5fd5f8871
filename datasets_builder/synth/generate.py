"""Generate one SynthCampus clip: plans -> rendered frames, instance ids, anomaly masks, annotation.

Everything is a function of (seed, split, index): the clip's numpy Generator comes from
``SeedSequence([seed, split code, index])``, so clips are independent of worker count and order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from datasets_builder.synth.agents import (
    Painter,
    draw_cart,
    draw_cyclist,
    draw_person,
    draw_prop,
    draw_skateboarder,
    draw_small_object,
    draw_vehicle,
    shadow,
)
from datasets_builder.synth.behaviours import (
    ANOMALY_BUILDERS,
    ANOMALY_TYPES,
    Context,
    Plan,
    action_of,
    normal_population,
    road_mask_flags,
)
from datasets_builder.synth.scenes import SCENES, compose_background, random_lighting, render_background
from datasets_builder.synth.splits import ANOMALOUS_FRACTION, SPLIT_CODES, SPLITS, check_split
from tvad_chat.motion import describe_path

FORMAT = "synthcampus-v1"
MIN_VISIBLE_PX = 4  # fewer visible pixels than this: the object counts as not visible


@dataclass
class ClipConfig:
    frames: int = 32
    width: int = 320
    height: int = 192
    fps: float = 10.0
    effects: bool = True  # sensor noise, blur, compression artefacts
    # one camera per scene: every clip of a scene has the same view, background, lighting, props and
    # effect settings (from the seed and the scene alone); only the people and the per-frame noise differ
    fixed_camera: bool = False


@dataclass
class SynthClip:
    frames: np.ndarray  # uint8 (T, H, W, 3) RGB
    ids: np.ndarray  # uint16 (T, H, W) instance ids, 0 background
    masks: np.ndarray  # uint8 (T, H, W) 0/255 anomaly masks
    annotation: dict[str, Any] = field(default_factory=dict)


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_CODES[split], int(index)]))


def camera_rng(seed: int, scene_name: str) -> np.random.Generator:
    """The generator of a fixed camera's look (ClipConfig.fixed_camera): the same for every clip of the scene."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), len(SPLIT_CODES), list(SCENES).index(scene_name)]))


def choose_clip(split: str, rng: np.random.Generator, event: str | None = None, scene: str | None = None
                ) -> tuple[str, str | None]:
    """(scene name, anomaly type or None) for a clip of the split."""
    if event is None and rng.random() < ANOMALOUS_FRACTION[split]:
        types = SPLITS[split]
        event = str(types[int(rng.integers(len(types)))])
    if scene is None:
        allowed = ANOMALY_TYPES[event][1] if event else tuple(SCENES)
        scene = str(allowed[int(rng.integers(len(allowed)))])
    return scene, event


def generate_clip(seed: int, split: str, index: int, cfg: ClipConfig | None = None, event: str | None = None,
                  scene_name: str | None = None) -> SynthClip:
    """Render clip ``index`` of ``split``; ``event``/``scene_name`` force a choice (contact sheets, tests)."""
    cfg = cfg or ClipConfig()
    check_split(split)
    rng = clip_rng(seed, split, index)
    scene_name, event = choose_clip(split, rng, event, scene_name)
    scene = SCENES[scene_name]
    cam = scene.camera(cfg.width, cfg.height) if cfg.fixed_camera else scene.camera(cfg.width, cfg.height, rng)
    T = cfg.frames
    routes = scene.routes_fn(cam)
    flow = str(scene.flow_routes[int(rng.integers(len(scene.flow_routes)))]) if scene.flow_routes else None
    ctx = Context(scene, cam, T, cfg.fps, rng, routes, flow=flow)
    plans: list[Plan] = []
    if event is not None:
        plans += ANOMALY_BUILDERS[event](ctx)
    n_normal = int(rng.integers(2, 9)) + (3 if event == "wrong_way" else 0)
    plans += normal_population(ctx, n_normal)
    for p in plans:
        if p.meta.get("on_road"):
            p.anomalous = road_mask_flags(p, ctx) & p.present
    look = camera_rng(seed, scene_name) if cfg.fixed_camera else rng
    light = random_lighting(look)
    base, zones = render_background(scene, cam, look)
    background = compose_background(base, zones, scene, cam, light, look)
    effects = _random_effects(look) if cfg.effects else {"noise": 0.0, "blur": 0, "jpeg": 0}
    props = _jitter_props(scene, look)
    frames, ids = _render(plans, props, cam, background, T)
    masks, annotation = _ground_truth(plans, ids, cam, cfg, split, seed, index, scene_name, event, flow)
    frames = _apply_effects(frames, effects, rng)
    annotation["lighting"] = light.name
    annotation["effects"] = effects
    return SynthClip(frames, ids, masks, annotation)


# --------------------------------------------------------------------------- rendering


def _jitter_props(scene, rng: np.random.Generator) -> list:
    """The scene's props, some left out and the rest nudged and resized: no two clips quite alike."""
    from datasets_builder.synth.scenes import Prop

    out = []
    for pr in scene.props:
        if rng.random() < 0.2:
            continue
        out.append(Prop(pr.kind, pr.X + float(rng.uniform(-0.6, 0.6)), pr.Z + float(rng.uniform(-0.8, 0.8)),
                        pr.scale * float(rng.uniform(0.75, 1.0) if pr.kind == "tree" else rng.uniform(0.9, 1.1))))
    return out


def _facings(plan: Plan, cam) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: signed sideways facing (-1..1) and whether the front is visible, from image motion."""
    T = len(plan.pos)
    pts = np.array([cam.project(x, z) for x, z in plan.pos])
    d = np.zeros((T, 2))
    d[1:] = pts[1:] - pts[:-1]
    d[0] = d[1] if T > 1 else 0
    facing = np.zeros(T)
    toward = np.ones(T, bool)
    last_f, last_t = (plan.facing_hint if plan.facing_hint is not None else 1.0), True
    for t in range(T):
        n = float(np.hypot(*d[t]))
        if n > 0.15:
            # depth motion foreshortens: compare with a typical sideways step at this depth
            last_f = float(np.clip(d[t, 0] / n, -1, 1))
            last_f = math.copysign(1.0, last_f) if abs(last_f) > 0.55 else last_f * 0.5
            last_t = bool(d[t, 1] >= 0)
        elif plan.facing_hint is not None:
            last_f = plan.facing_hint
        facing[t], toward[t] = last_f, last_t
    return facing, toward


def _render(plans: list[Plan], props_of_clip, cam, background: np.ndarray, T: int
            ) -> tuple[np.ndarray, np.ndarray]:
    H, W = cam.height, cam.width
    frames = np.empty((T, H, W, 3), np.uint8)
    ids = np.zeros((T, H, W), np.uint16)
    facing = {p.agent.instance_id: _facings(p, cam) for p in plans}
    props = [(pr.Z, pr) for pr in props_of_clip]
    for t in range(T):
        frame = background.copy()
        idm = ids[t]
        items: list[tuple[float, int, Any]] = [(z, 0, pr) for z, pr in props]
        for p in plans:
            if p.present[t]:
                items.append((float(p.pos[t, 1]), 1, p))
        items.sort(key=lambda it: (-it[0], it[1], it[2].agent.instance_id if it[1] else 0))
        # shadows first so no figure is darkened by a nearer one's shadow
        for Z, kind, obj in items:
            if kind == 1 and obj.agent.category not in ("object",):
                x, y = cam.project(*obj.pos[t])
                ppm = cam.px_per_m(Z)
                w = ppm * (0.35 if obj.agent.category in ("person", "bag") else 0.5 * obj.agent.length_m + 0.3)
                shadow(frame, (x, y), w)
        painter = Painter(frame, idm)
        for Z, kind, obj in items:
            ppm = cam.px_per_m(Z)
            if kind == 0:
                draw_prop(painter, obj.kind, cam.project(obj.X, obj.Z), ppm, obj.scale)
                continue
            p: Plan = obj
            x, y = cam.project(*p.pos[t])
            f_side, toward = facing[p.agent.instance_id]
            pose = p.poses[t]
            pose.facing = float(f_side[t]) if not (p.behaviour in ("fight", "throw", "fall", "stand", "talk")
                                                   and p.facing_hint is not None) else p.facing_hint
            if p.behaviour == "fall" and pose.tilt:
                pose.facing = math.copysign(1.0, pose.tilt)
            if pose.tilt and p.behaviour in ("run", "chase"):
                pose.tilt = math.copysign(abs(pose.tilt), pose.facing or 1.0)
            pose.toward = bool(toward[t]) if p.facing_hint is None else pose.toward
            cat = p.agent.category
            h = ppm * p.agent.height_m
            if cat == "person":
                draw_person(painter, _agent_at(p, t), (x, y), h, pose)
            elif cat == "cyclist":
                draw_cyclist(painter, p.agent, (x, y), h, pose)
            elif cat == "skateboarder":
                draw_skateboarder(painter, p.agent, (x, y), h, pose)
            elif cat in ("car", "van"):
                draw_vehicle(painter, p.agent, (x, y), ppm, pose)
            elif cat == "cart":
                draw_cart(painter, p.agent, (x, y), ppm, pose)
            else:
                up = float(p.up[t]) if p.up is not None else 0.0
                draw_small_object(painter, p.agent, cam.project(p.pos[t, 0], p.pos[t, 1], up=up), ppm)
        frames[t] = frame
    return frames, ids


def _agent_at(p: Plan, t: int):
    """The agent as it looks in frame t (an owner who dropped the bag carries nothing any more)."""
    drop = p.meta.get("drops_bag_at")
    if drop is None or t < drop:
        return p.agent
    import dataclasses

    return dataclasses.replace(p.agent, attributes={k: v for k, v in p.agent.attributes.items() if k != "carrying"})


def _random_effects(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "noise": float(rng.choice([0.0, rng.uniform(1.0, 4.0), rng.uniform(4.0, 8.0)], p=[0.3, 0.5, 0.2])),
        "blur": int(rng.choice([0, 3, 5], p=[0.6, 0.3, 0.1])),
        "jpeg": int(rng.choice([0, int(rng.integers(25, 70))], p=[0.6, 0.4])),
        "flicker": float(rng.uniform(0.0, 0.03)),
    }


def _apply_effects(frames: np.ndarray, eff: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(frames)
    for t, f in enumerate(frames):
        g = f.astype(np.float32)
        if eff.get("blur"):
            g = cv2.GaussianBlur(g, (eff["blur"], eff["blur"]), 0)
        if eff.get("flicker"):
            g *= 1.0 + float(rng.uniform(-eff["flicker"], eff["flicker"]))
        if eff.get("noise"):
            g += rng.standard_normal(g.shape, dtype=np.float32) * np.float32(eff["noise"])
        g8 = np.clip(g, 0, 255).astype(np.uint8)
        if eff.get("jpeg"):
            ok, buf = cv2.imencode(".jpg", g8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(eff["jpeg"])])
            g8 = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        out[t] = g8
    return out


# --------------------------------------------------------------------------- ground truth


def _boxes(ids: np.ndarray, plans: list[Plan]) -> dict[int, dict[int, tuple[int, int, int, int]]]:
    """Visible boxes per instance per frame; specks below MIN_VISIBLE_PX are erased from the id map."""
    out: dict[int, dict[int, tuple[int, int, int, int]]] = {p.agent.instance_id: {} for p in plans}
    for t in range(ids.shape[0]):
        idm = ids[t]
        counts = np.bincount(idm.ravel())
        for iid in np.nonzero(counts)[0]:
            if iid == 0:
                continue
            m = idm == iid
            if counts[iid] < MIN_VISIBLE_PX:
                idm[m] = 0
                continue
            ys = np.nonzero(m.any(axis=1))[0]
            xs = np.nonzero(m.any(axis=0))[0]
            out[int(iid)][t] = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
    return out


def _screen_track(plan: Plan, frames: list[int], cam) -> np.ndarray:
    """Exact image foot points (N, 2) of the instance: its projected ground position (or, for an object in
    the air, its projected centre), whatever occludes it or cuts it off at the frame edge."""
    pts = []
    for t in frames:
        up = float(plan.up[t]) if plan.up is not None else 0.0
        pts.append(cam.project(float(plan.pos[t, 0]), float(plan.pos[t, 1]), up=up))
    return np.array(pts, dtype=float)


def _describe_span(plan: Plan, frames: list[int], boxes: dict[int, tuple[int, int, int, int]], cam, fps: float,
                   T: int) -> dict[str, Any]:
    """Entry, exit, direction, speed and turns of the frames ``frames``, by the rules of tvad_chat.motion:
    the exact screen track for the positions, the visible boxes for the sizes and the frame sides."""
    f0, f1 = frames[0], frames[-1]
    tr = describe_path([boxes[t] for t in frames], np.array(frames, np.float64) / fps, frames, cam.width,
                       cam.height, starts_with_clip=f0 == 0, ends_with_clip=f1 == T - 1,
                       category=plan.agent.category, feet=_screen_track(plan, frames, cam))
    world = plan.pos[frames]
    steps = np.linalg.norm(np.diff(world, axis=0), axis=1) * fps if len(frames) > 1 else np.zeros(1)
    return {
        "entry": tr.entry, "exit": tr.exit, "direction": tr.direction,
        "turns": [{"frame": t.frame_index, "time": round(t.time, 3), "sense": t.sense,
                   "new_direction": t.new_direction} for t in tr.turns],
        "speed": round(tr.speed, 3), "speed_class": tr.speed_class,
        "speed_mps": round(float(np.median(steps)), 3),  # metric ground speed, for reference
        "start_frame": int(f0), "end_frame": int(f1), "start_time": round(f0 / fps, 3),
        "end_time": round(f1 / fps, 3),
        "displacement_px": [round(tr.displacement[0], 2), round(tr.displacement[1], 2)],
        "size_px": round(tr.size, 2),  # median size the speed and the "moving" threshold are measured in
    }


def trajectory_record(plan: Plan, boxes: dict[int, tuple[int, int, int, int]], cam, fps: float, T: int
                      ) -> dict[str, Any] | None:
    """The structured trajectory of one instance over the frames where it is visible.

    ``anomaly_trajectory`` describes, by the same rules, only the visible frames where the instance is
    anomalous: the span the corpus builder's anomaly-focused pass describes.
    """
    frames = sorted(boxes)
    if not frames:
        return None
    rec = _describe_span(plan, frames, boxes, cam, fps, T)
    world = plan.pos[frames]
    z0, z1 = float(world[0, 1]), float(world[-1, 1])
    depth = "away from the camera" if z1 - z0 > 1.0 else "towards the camera" if z0 - z1 > 1.0 else "across"
    anom = np.nonzero(plan.anomalous)[0]
    anom_vis = [t for t in frames if plan.anomalous[t]]
    feet = _screen_track(plan, frames, cam)
    stride = max(1, len(frames) // 8)
    rec.update({
        "depth_motion": depth, "route": plan.route,
        "anomaly_start_frame": int(anom[0]) if len(anom) else None,
        "anomaly_end_frame": int(anom[-1]) if len(anom) else None,
        "anomaly_trajectory": _describe_span(plan, anom_vis, boxes, cam, fps, T) if anom_vis else None,
        "path": [[int(frames[i]), round(float(feet[i, 0]), 1), round(float(feet[i, 1]), 1)]
                 for i in sorted(set(range(0, len(frames), stride)) | {len(frames) - 1})],
    })
    return rec


def _ground_truth(plans: list[Plan], ids: np.ndarray, cam, cfg: ClipConfig, split: str, seed: int, index: int,
                  scene_name: str, event: str | None, flow: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    T = ids.shape[0]
    boxes = _boxes(ids, plans)
    masks = np.zeros(ids.shape, np.uint8)
    labels = np.zeros(T, np.int8)
    by_id = {p.agent.instance_id: p for p in plans}
    objects = []
    frame_objs: list[list[dict[str, Any]]] = [[] for _ in range(T)]
    for iid, p in by_id.items():
        bx = boxes[iid]
        for t, b in bx.items():
            an = bool(p.anomalous[t])
            if an:
                masks[t][ids[t] == iid] = 255
                labels[t] = 1
            entry = {"track_id": str(iid), "box": list(b), "anomalous": an, "action": action_of(p, t)}
            now = _agent_at(p, t).attributes
            if now != p.agent.attributes:
                entry["attributes"] = dict(sorted(now.items()))  # only where the look changes mid-clip
            frame_objs[t].append(entry)
        if not bx:
            continue
        traj = trajectory_record(p, bx, cam, cfg.fps, T)
        vis_anom = [t for t in bx if p.anomalous[t]]
        objects.append({
            "track_id": str(iid), "instance_id": iid, "category": p.agent.category,
            "attributes": dict(sorted(p.agent.attributes.items())), "behaviour": p.behaviour,
            "anomalous": bool(vis_anom),
            "anomalous_frames": [int(min(vis_anom)), int(max(vis_anom))] if vis_anom else None,
            "trajectory": traj,
            "boxes": {str(t): list(b) for t, b in sorted(bx.items())},
            "meta": {k: (int(v) if isinstance(v, np.integer | int) and not isinstance(v, bool) else v)
                     for k, v in sorted(p.meta.items())},
        })
    pos = np.nonzero(labels)[0]
    ann = {
        "format": FORMAT, "video_id": f"{split}_{index:06d}", "split": split, "seed": int(seed),
        "index": int(index), "scene": scene_name, "fps": cfg.fps, "num_frames": T, "width": cam.width,
        "height": cam.height, "anomalous": bool(labels.any()),
        "event": event if labels.any() else None, "planned_event": event,
        "event_description": ANOMALY_TYPES[event][0] if event and labels.any() else None,
        "event_frames": [int(pos[0]), int(pos[-1])] if len(pos) else None,
        "flow_route": flow, "frame_labels": [int(v) for v in labels],
        "objects": objects,
        "frames": [{"index": t, "time": round(t / cfg.fps, 3), "label": int(labels[t]),
                    "objects": sorted(frame_objs[t], key=lambda o: int(o["track_id"]))} for t in range(T)],
    }
    return masks, ann
