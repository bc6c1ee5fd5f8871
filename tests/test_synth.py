"""SynthCampus: determinism, ground-truth consistency, behaviours and their trajectory records, splits, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datasets_builder.synth.agents import Agent, Pose
from datasets_builder.synth.behaviours import ANOMALY_TYPES, NORMAL_BEHAVIOURS, Plan
from datasets_builder.synth.generate import ClipConfig, choose_clip, generate_clip, trajectory_record
from datasets_builder.synth.scenes import SCENES
from datasets_builder.synth.splits import SPLITS
from datasets_builder.synth.writer import generate_split
from tvad_chat.cli import main as cli_main
from tvad_chat.motion import BORDER_MARGIN

SMALL = ClipConfig(frames=24, width=256, height=160)


def _split_of(event: str) -> str:
    return next(s for s, types in SPLITS.items() if event in types)


@pytest.fixture(scope="module")
def event_clips():
    """One clip per anomaly type (forced), the split the type belongs to."""
    return {ev: generate_clip(3, _split_of(ev), k, SMALL, event=ev) for k, ev in enumerate(ANOMALY_TYPES)}


@pytest.fixture(scope="module")
def normal_clips():
    """Normal clips in every scene (two per scene so the normal behaviours all show up)."""
    return [generate_clip(5, "normal_train", k, SMALL, scene_name=name)
            for k, name in enumerate(list(SCENES) * 3)]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "dataset.json"}


# --------------------------------------------------------------------------- determinism


@pytest.mark.slow
def test_same_seed_same_bytes_frames_format_and_worker_count_does_not_matter(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_split(a, "train", 3, seed=11, cfg=SMALL, fmt="frames", workers=1)
    generate_split(b, "train", 3, seed=11, cfg=SMALL, fmt="frames", workers=2)
    generate_split(c, "train", 3, seed=12, cfg=SMALL, fmt="frames", workers=1)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert len(fa) == 3 * (1 + 3 * SMALL.frames)  # annotation + frame, mask, id PNGs per frame
    assert fa == fb
    ann = "train/train_000000/annotation.json"
    assert fa[ann] != fc[ann]  # another seed, another clip


def test_same_seed_same_decoded_mp4_frames(tmp_path):
    from tvad_chat.video import load_clip

    cfg = ClipConfig(frames=8, width=128, height=96)
    for d in ("a", "b"):
        generate_split(tmp_path / d, "val", 1, seed=4, cfg=cfg, fmt="mp4")
    va, vb = (tmp_path / d / "val" / "val_000000" / "video.mp4" for d in ("a", "b"))
    # x264 runs single-threaded with fixed options: the decoded frames must match exactly
    fa, fb = load_clip(va, num_frames=None).frames, load_clip(vb, num_frames=None).frames
    assert fa.shape == (8, 96, 128, 3)
    assert np.array_equal(fa, fb)
    clip = generate_clip(4, "val", 0, cfg)
    assert np.abs(fa.astype(int) - clip.frames.astype(int)).mean() < 6.0  # lossy but close to the render


# --------------------------------------------------------------------------- ground truth


def _check_gt(clip) -> None:
    ann = clip.annotation
    T = ann["num_frames"]
    assert clip.frames.shape == (T, ann["height"], ann["width"], 3)
    assert ann["frame_labels"] == [int(clip.masks[t].any()) for t in range(T)]
    assert set(np.unique(clip.masks)) <= {0, 255}
    for t in range(T):
        fr = ann["frames"][t]
        assert fr["label"] == ann["frame_labels"][t]
        expect = np.zeros(clip.masks[t].shape, bool)
        present = set(np.unique(clip.ids[t])) - {0}
        assert present == {int(o["track_id"]) for o in fr["objects"]}
        for o in fr["objects"]:
            m = clip.ids[t] == int(o["track_id"])
            ys, xs = np.nonzero(m)
            assert o["box"] == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
            if o["anomalous"]:
                expect |= m
        # the mask is exactly the union of the anomalous instances' pixels
        assert np.array_equal(clip.masks[t] > 0, expect)
        assert fr["label"] == int(any(o["anomalous"] for o in fr["objects"]))


def test_masks_agree_with_boxes_ids_and_labels(event_clips, normal_clips):
    for clip in list(event_clips.values()) + normal_clips[:5]:
        _check_gt(clip)


def test_normal_clips_have_no_anomaly_and_event_clips_do(event_clips, normal_clips):
    for clip in normal_clips:
        assert clip.annotation["event"] is None and not any(clip.annotation["frame_labels"])
        assert not clip.masks.any()
    for ev, clip in event_clips.items():
        ann = clip.annotation
        assert ann["event"] == ev, (ev, ann["scene"])
        assert sum(ann["frame_labels"]) >= 3, ev
        first, last = ann["event_frames"]
        assert ann["frame_labels"][first] == 1 and ann["frame_labels"][last] == 1
        anomalous = [o for o in ann["objects"] if o["anomalous"]]
        assert anomalous and all(o["behaviour"] in (ev, "cart") or o["category"] in ("object", "bag")
                                 for o in anomalous)


# --------------------------------------------------------------------------- behaviours and trajectories


def _check_direction(o: dict) -> None:
    tr = o["trajectory"]
    boxes = {int(k): v for k, v in o["boxes"].items()}
    b0, b1 = boxes[tr["start_frame"]], boxes[tr["end_frame"]]
    cx0, cx1 = (b0[0] + b0[2]) / 2, (b1[0] + b1[2]) / 2
    by0, by1 = b0[3], b1[3]
    d = tr["direction"]
    # partial occlusion (legs behind a bench or a cart) can pin one edge of the visible box, so along each
    # labelled component at least one box edge must move that way; for diagonals the minor component
    # must not go clearly the other way
    tol = 0.0 if d in ("left", "right", "up", "down") else 0.15 * max(b0[3] - b0[1], b1[3] - b1[1])
    dx = max(b1[0] - b0[0], b1[2] - b0[2], cx1 - cx0)
    dx_neg = max(b0[0] - b1[0], b0[2] - b1[2], cx0 - cx1)
    dy = max(b1[1] - b0[1], by1 - by0)
    dy_neg = max(b0[1] - b1[1], by0 - by1)
    if "right" in d:
        assert dx > -tol, (o["behaviour"], d, b0, b1)
    if "left" in d:
        assert dx_neg > -tol, (o["behaviour"], d, b0, b1)
    if d.startswith("down"):
        assert dy > -tol, (o["behaviour"], d, b0, b1)
    if d.startswith("up"):
        assert dy_neg > -tol, (o["behaviour"], d, b0, b1)
    if d in ("left", "right", "up", "down"):
        assert (dx if d == "right" else dx_neg if d == "left" else dy if d == "down" else dy_neg) > 0
    W, H = SMALL.width, SMALL.height
    mx, my = BORDER_MARGIN * W, BORDER_MARGIN * H  # the vocabulary's "touches the side"
    if tr["entry"] in ("left", "right", "top", "bottom"):
        x1, y1, x2, y2 = b0
        touch = {"left": x1 <= mx, "right": x2 >= W - mx, "top": y1 <= my, "bottom": y2 >= H - my}
        assert touch[tr["entry"]] and tr["start_frame"] > 0
    if tr["exit"] in ("left", "right", "top", "bottom"):
        x1, y1, x2, y2 = b1
        touch = {"left": x1 <= mx, "right": x2 >= W - mx, "top": y1 <= my, "bottom": y2 >= H - my}
        assert touch[tr["exit"]] and tr["end_frame"] < SMALL.frames - 1


def test_every_behaviour_appears_with_a_trajectory_that_matches_the_motion(event_clips, normal_clips):
    seen: dict[str, list[dict]] = {}
    for clip in list(event_clips.values()) + normal_clips:
        for o in clip.annotation["objects"]:
            assert o["trajectory"] is not None
            seen.setdefault(o["behaviour"], []).append(o)
            _check_direction(o)
            tr = o["trajectory"]
            assert tr["start_frame"] <= tr["end_frame"]
            assert tr["start_time"] == pytest.approx(tr["start_frame"] / clip.annotation["fps"])
            if o["anomalous"]:
                assert tr["anomaly_start_frame"] is not None
    missing = (set(ANOMALY_TYPES) | set(NORMAL_BEHAVIOURS)) - set(seen)
    assert not missing, f"behaviours never generated: {missing}"
    # speed classes follow the behaviour; they are image-plane speeds (sizes per second), so a move along
    # the line of sight reads slower than the same move across the view
    assert all(o["trajectory"]["speed_class"] == "stationary" for o in seen["stand"] + seen["talk"])
    runners = [o for o in seen["chase"] + seen["cycle"] + seen["drive_road"] if o["category"] != "object"]
    assert all(o["trajectory"]["speed_class"] in ("walking", "fast", "very fast") for o in runners)
    crossing = [o for o in runners if o["trajectory"]["direction"] in ("left", "right")]
    assert crossing and all(o["trajectory"]["speed_class"] in ("fast", "very fast") for o in crossing)
    walkers = [o for o in seen["walk"] if o["trajectory"]["end_frame"] - o["trajectory"]["start_frame"] > 4]
    assert all(o["trajectory"]["speed_class"] in ("stationary", "slow", "walking") for o in walkers)
    assert all(o["trajectory"]["speed_class"] in ("slow", "walking") for o in walkers
               if o["trajectory"]["direction"] in ("left", "right"))
    for o in runners + walkers:  # the metric ground speed stays in the record, for reference
        assert o["trajectory"]["speed_mps"] > 0.8
    # moving agents have a direction; the moving ones in normal clips are not flagged
    assert all(not o["anomalous"] for b in NORMAL_BEHAVIOURS for o in seen[b])


def test_anomaly_onsets_follow_the_story(event_clips):
    fall = next(o for o in event_clips["fall"].annotation["objects"] if o["behaviour"] == "fall")
    tr = fall["trajectory"]
    assert tr["anomaly_start_frame"] > tr["start_frame"]  # walks first, then falls
    lying = fall["boxes"][str(tr["end_frame"])]
    standing = fall["boxes"][str(tr["start_frame"])]
    # a fallen person is wider than tall, a walking one taller than wide
    assert (lying[2] - lying[0]) > (lying[3] - lying[1])
    assert (standing[3] - standing[1]) > (standing[2] - standing[0])
    jay = next(o for o in event_clips["jaywalk"].annotation["objects"] if o["behaviour"] == "jaywalk")
    frames = event_clips["jaywalk"].annotation["frames"]
    flags = [next(ob["anomalous"] for ob in fr["objects"] if ob["track_id"] == jay["track_id"])
             for fr in frames if any(ob["track_id"] == jay["track_id"] for ob in fr["objects"])]
    assert not flags[0] and any(flags)  # on the pavement first, anomalous once on the road
    actions = [ob["action"] for fr in frames for ob in fr["objects"] if ob["track_id"] == jay["track_id"]]
    assert [a == "crossing the road" for a in actions] == flags


def test_anomaly_trajectory_describes_the_anomalous_frames_by_the_same_rules(event_clips, normal_clips):
    """The span the corpus's anomaly-focused pass describes: a person who walks, then falls, lies still."""
    fall = next(o for o in event_clips["fall"].annotation["objects"] if o["behaviour"] == "fall")
    tr, at = fall["trajectory"], fall["trajectory"]["anomaly_trajectory"]
    assert [at["start_frame"], at["end_frame"]] == fall["anomalous_frames"] and at["start_frame"] > tr["start_frame"]
    assert tr["direction"] != "none" and tr["speed_class"] != "stationary"  # the walk before the fall
    assert (at["direction"], at["speed_class"]) == ("none", "stationary")  # lying still
    assert at["entry"] in ("inside", "left", "right", "top", "bottom") and tr["entry"] == "start"
    for clip in normal_clips:
        assert all(o["trajectory"]["anomaly_trajectory"] is None for o in clip.annotation["objects"])


def test_bag_owner_carries_the_bag_until_the_drop(event_clips):
    ann = event_clips["abandon_bag"].annotation
    bag = next(o for o in ann["objects"] if o["category"] == "bag")
    owner = next(o for o in ann["objects"] if str(o["instance_id"]) == str(bag["meta"]["owner"]))
    drop = bag["meta"]["onset"]
    assert owner["attributes"]["carrying"] == "bag" and bag["anomalous_frames"][0] >= drop
    for fr in ann["frames"]:
        ob = next((o for o in fr["objects"] if o["track_id"] == owner["track_id"]), None)
        if ob is not None:
            assert ("carrying" in ob.get("attributes", owner["attributes"])) == (fr["index"] < drop)


def _plan_along(points: list[tuple[float, float]], T: int = 30) -> Plan:
    pts = np.asarray(points, float)
    s = np.linspace(0, 1, T)
    seg = np.linspace(0, 1, len(pts))
    pos = np.stack([np.interp(s, seg, pts[:, 0]), np.interp(s, seg, pts[:, 1])], -1)
    return Plan(Agent(1, "person"), "walk", pos, np.ones(T, bool), [Pose() for _ in range(T)],
                np.zeros(T, bool))


def test_trajectory_record_directions_turns_and_sides_on_known_paths():
    cam = SCENES["plaza"].camera(320, 192)
    # right along the ground at depth 12, then straight towards the camera (down the image)
    plan = _plan_along([(-1.0, 14.0), (1.0, 14.0), (1.0, 7.0)])
    pts = [cam.project(*p) for p in plan.pos]
    boxes = {t: (int(x) - 3, int(y) - 30, int(x) + 3, int(y)) for t, (x, y) in enumerate(pts)}
    tr = trajectory_record(plan, boxes, cam, 10.0, 30)
    assert tr["direction"] == "down-right"
    assert [t["sense"] for t in tr["turns"]] == ["right"]  # heading right, then down: clockwise on screen
    assert tr["turns"][0]["new_direction"] == "down"
    assert tr["entry"] == "start" and tr["exit"] == "end"
    assert tr["depth_motion"] == "towards the camera"
    # leftwards, entering at the right edge after the clip started and leaving through the left edge
    plan = _plan_along([(8.0, 10.0), (-8.0, 10.0)])
    pts = [cam.project(*p) for p in plan.pos]
    boxes = {t: (max(0, int(x) - 3), int(y) - 30, min(320, int(x) + 3), int(y))
             for t, (x, y) in enumerate(pts) if 0 <= x <= 320 and t > 0 and t < 29}
    tr = trajectory_record(plan, boxes, cam, 10.0, 30)
    assert tr["direction"] == "left"
    assert tr["entry"] == "right" and tr["exit"] == "left" and tr["turns"] == []


# --------------------------------------------------------------------------- splits


def test_splits_are_disjoint_and_generated_events_stay_in_their_split():
    names = list(SPLITS)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not set(SPLITS[a]) & set(SPLITS[b]), (a, b)
    assert set().union(*SPLITS.values()) == set(ANOMALY_TYPES)
    assert SPLITS["normal_train"] == ()
    for split in names:
        rng = np.random.default_rng(0)
        events = {choose_clip(split, rng)[1] for _ in range(300)}
        assert events - {None} <= set(SPLITS[split])
        if split == "normal_train":
            assert events == {None}
        else:
            assert None in events and events - {None} == set(SPLITS[split])
    for ev, (_, scenes) in ANOMALY_TYPES.items():
        assert scenes and set(scenes) <= set(SCENES), ev


def test_scene_perspective_objects_shrink_with_distance():
    for scene in SCENES.values():
        cam = scene.camera(320, 192)
        near, far = cam.z_near, 3 * cam.z_near
        assert cam.project(0, near)[1] == pytest.approx(192, abs=0.5)  # near limit on the bottom row
        assert cam.px_per_m(far) == pytest.approx(cam.px_per_m(near) / 3)
        assert cam.project(0, far)[1] < cam.project(0, near)[1]


# --------------------------------------------------------------------------- CLI


def test_tvad_synth_cli_writes_clips_and_rejects_bad_options(tmp_path, capsys):
    out = tmp_path / "sc"
    rc = cli_main(["synth", "--out", str(out), "--clips", "2", "--split", "test", "--seed", "3", "--frames", "6",
                   "--size", "128x96", "--format", "frames", "--no-progress"])
    assert rc == 0
    clips = sorted((out / "test").iterdir())
    assert [c.name for c in clips] == ["test_000000", "test_000001"]
    ann = json.loads((clips[0] / "annotation.json").read_text())
    assert ann["num_frames"] == 6 and ann["width"] == 128 and len(list((clips[0] / "frames").iterdir())) == 6
    assert json.loads((out / "dataset.json").read_text())["splits"]["test"] == list(SPLITS["test"])
    assert "2 clips written" in capsys.readouterr().out
    # a rerun skips finished clips
    assert cli_main(["synth", "--out", str(out), "--clips", "2", "--split", "test", "--seed", "3", "--frames", "6",
                     "--size", "128x96", "--format", "frames", "--no-progress"]) == 0
    assert "0 clips written" in capsys.readouterr().out
    assert cli_main(["synth", "--out", str(out), "--clips", "1", "--size", "129x96", "--no-progress"]) == 1
    assert "even" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["synth", "--out", str(out), "--clips", "1", "--split", "bogus"])
    # extending a folder with other settings would mix clips: refused
    assert cli_main(["synth", "--out", str(out), "--clips", "3", "--split", "test", "--seed", "4", "--frames", "6",
                     "--size", "128x96", "--no-progress"]) == 1
    assert "seed=3" in capsys.readouterr().err
