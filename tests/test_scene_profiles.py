"""Scene profiles (tvad_chat.scene): calibrated on normal footage of one fixed camera, they flag what moves unlike
that camera's normal objects; profiles round-trip through their folders; every bad input is a clear error of our own
that writes nothing; `--profile auto` recognises a camera by its background; stream_clip is load_clip in chunks.

SynthCampus footage here comes from one fixed camera per scene (ClipConfig.fixed_camera), as a real camera gives.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from media_factory import write_frames, write_video
from shared_data import DATA

from datasets_builder.synth.generate import ClipConfig, generate_clip
from datasets_builder.synth.writer import write_clip
from tvad_chat.cli import main
from tvad_chat.errors import ConfigError, ProfileError, VideoError
from tvad_chat.motion import pairwise_iou
from tvad_chat.scene.analyze import EVENT_EXTEND
from tvad_chat.scene.calibrate import CalibrationConfig, calibrate, fit_profile, measure_footage
from tvad_chat.scene.events import runs_above
from tvad_chat.scene.profile import ARRAYS, PROFILE_JSON, SceneProfile
from tvad_chat.scene.run import analyze_clip, choose_profile
from tvad_chat.video import load_clip, stream_clip

SEED = 7
SCENE = "campus_walkway"
CAMERA = ClipConfig(frames=64, width=320, height=192, fps=10.0, fixed_camera=True)
NORMAL_CLIPS = 10  # 64 s of normal footage: enough to measure the 1/min operating point
WALKER_IOU = 0.3  # a detected box is a walker's when it overlaps the walker's true box this much


def _write(folder: Path, split: str, index: int, cfg: ClipConfig = CAMERA, event: str | None = None,
           scene: str = SCENE) -> Path:
    write_clip(generate_clip(SEED, split, index, cfg, event=event, scene_name=scene), folder)
    return folder / "video.mp4"


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Normal clips of one SynthCampus camera, a held-out normal clip, a clip with a runner, and the profile."""
    root = tmp_path_factory.mktemp("synth_camera")
    normals = [_write(root / f"normal_{k}", "normal_train", k) for k in range(NORMAL_CLIPS)]
    held_out = _write(root / "held_out", "normal_train", NORMAL_CLIPS)
    runner = _write(root / "runner", "train", 1, event="run")
    profile = calibrate(normals, "synth_walkway")
    profile.save(root / "profile")
    return {"root": root, "normals": normals, "held_out": held_out, "runner": runner, "profile": profile,
            "profile_dir": root / "profile"}


# --------------------------------------------------------------------------- the fixed camera


def test_fixed_camera_gives_every_clip_of_a_scene_the_same_view_and_look() -> None:
    cfg = ClipConfig(frames=4, width=160, height=96, fixed_camera=True)
    a = generate_clip(SEED, "normal_train", 0, cfg, scene_name=SCENE)
    b = generate_clip(SEED, "train", 5, cfg, event="run", scene_name=SCENE)
    assert a.annotation["lighting"] == b.annotation["lighting"]
    assert a.annotation["effects"] == b.annotation["effects"]
    # without effects, the pixels away from every object (its edges and shadow) are the same background
    plain = dataclasses.replace(cfg, effects=False)
    a = generate_clip(SEED, "normal_train", 0, plain, scene_name=SCENE)
    b = generate_clip(SEED, "train", 5, plain, event="run", scene_name=SCENE)
    assert np.array_equal(a.frames[0][_away(a, b)], b.frames[0][_away(a, b)])
    # a varied camera (the default) differs from clip to clip
    varied = dataclasses.replace(plain, fixed_camera=False)
    c = generate_clip(SEED, "normal_train", 0, varied, scene_name=SCENE)
    d = generate_clip(SEED, "normal_train", 1, varied, scene_name=SCENE)
    assert np.abs(c.frames[0][_away(c, d)].astype(int) - d.frames[0][_away(c, d)]).mean() > 3


def _away(a, b, margin: int = 5) -> np.ndarray:
    """Pixels of the first frame farther than ``margin`` from every object of either clip."""
    objects = ((a.ids[0] > 0) | (b.ids[0] > 0)).astype(np.uint8)
    away = cv2.dilate(objects, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) == 0
    assert away.mean() > 0.6
    return away


# --------------------------------------------------------------------------- detection on SynthCampus


@pytest.mark.slow
def test_profile_flags_a_runner_and_not_the_normal_walkers(camera: dict, tmp_path: Path) -> None:
    profile: SceneProfile = camera["profile"]
    assert profile.size == (320, 192)
    assert profile.made_from["seconds"] == pytest.approx(NORMAL_CLIPS * 6.4, abs=0.1)
    assert [p.name for p in profile.operating_points] == ["1/min", "0.1/min", "0.01/min"]
    assert profile.point("1/min").measured  # over a minute of footage: measured, not extrapolated

    heat = tmp_path / "heat"
    analysis, choice = analyze_clip(camera["runner"], camera["profile_dir"], heatmaps=heat)
    assert choice.how == "given" and analysis.profile_name == "synth_walkway"
    assert sorted(p.name for p in heat.iterdir()) == [f"{i:06d}.png" for i in range(CAMERA.frames)]

    annotation = json.loads((camera["runner"].parent / "annotation.json").read_text())
    labels = np.array(annotation["frame_labels"], bool)
    threshold = analysis.threshold()
    events = [e for e in analysis.events() if labels[e.first_index:e.last_index + 1].any()]
    assert events, f"no event overlaps the runner's frames {annotation['event_frames']}"

    # the event's tracks outline the runner
    ious = []
    for event in events:
        for record in analysis.frames[event.first_index:event.last_index + 1]:
            truth = [o["box"] for o in annotation["frames"][record.index]["objects"] if o["anomalous"]]
            boxes = [b.xyxy for b in record.boxes if b.track_id in event.track_ids]
            if truth and boxes:
                ious.append(max(float(pairwise_iou(b, t)) for b in boxes for t in truth))
    assert len(ious) >= 5
    assert np.mean(np.array(ious) > 0.1) > 0.5, ious

    # the walkers' own boxes (not merged with the runner) stay below the threshold
    runner_ids = {o["track_id"] for o in annotation["objects"] if o["anomalous"]}
    walker_scores = []
    for record in analysis.frames:
        objects = annotation["frames"][record.index]["objects"]
        runner_boxes = [o["box"] for o in objects if o["track_id"] in runner_ids]
        walker_boxes = [o["box"] for o in objects if o["track_id"] not in runner_ids]
        for box in record.boxes:
            if any(pairwise_iou(box.xyxy, r) > 0 for r in runner_boxes):
                continue
            if any(pairwise_iou(box.xyxy, w) >= WALKER_IOU for w in walker_boxes):
                walker_scores.append(box.score)
    assert len(walker_scores) >= 20
    assert max(walker_scores) < threshold, (max(walker_scores), threshold)


@pytest.mark.slow
def test_a_normal_clip_of_the_camera_has_no_event(camera: dict) -> None:
    analysis, _ = analyze_clip(camera["held_out"], camera["profile_dir"])
    assert len(analysis.frames) == CAMERA.frames
    assert analysis.events() == []
    assert analysis.to_report()["events"] == []


# --------------------------------------------------------------------------- profile folders and operating points


@pytest.mark.slow
def test_profile_save_load_round_trip(camera: dict, tmp_path: Path) -> None:
    profile: SceneProfile = camera["profile"]
    loaded = SceneProfile.load(camera["profile_dir"])
    for f in dataclasses.fields(SceneProfile):
        mine, theirs = getattr(profile, f.name), getattr(loaded, f.name)
        if f.name == "normal_times":  # only for a clip scored against itself, never saved
            assert theirs is None
        elif isinstance(mine, np.ndarray):
            assert theirs.dtype == mine.dtype and np.array_equal(theirs, mine), f.name
        else:
            assert theirs == mine, f.name
    # saving over a profile replaces it; the copy loads equal again
    loaded.save(tmp_path / "copy")
    loaded.save(tmp_path / "copy")
    again = SceneProfile.load(tmp_path / "copy")
    assert again.operating_points == profile.operating_points
    assert np.array_equal(again.normal, profile.normal)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no temporary folder left behind


@pytest.mark.slow
def test_events_are_re_decided_from_stored_scores(camera: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    analysis, _ = analyze_clip(camera["runner"], camera["profile_dir"])
    # from here on nothing may measure a frame again
    monkeypatch.setattr("tvad_chat.scene.analyze.measure_frame", lambda *a, **k: pytest.fail("re-analysed"))
    names = ["1/min", "0.1/min", "0.01/min"]
    thresholds = [analysis.threshold(n) for n in names]
    assert thresholds == sorted(thresholds)
    spans = {n: [(e.first_index, e.last_index) for e in analysis.events(n)] for n in names}
    assert spans["1/min"], "the runner makes at least one event at the most sensitive point"
    for loose, strict in zip(names, names[1:]):
        for first, last in spans[strict]:
            assert any(a <= first and last <= b for a, b in spans[loose]), (loose, strict, spans)
    for name in names:  # runs above the threshold, widened while above EVENT_EXTEND of it
        t = analysis.threshold(name)
        expected = [(analysis.frames[a].index, analysis.frames[b].index)
                    for a, b in runs_above(analysis.scores, analysis.times, EVENT_EXTEND * t)
                    if analysis.scores[a:b + 1].max() > t]
        assert spans[name] == expected
    # a different operating point through the report too
    assert [(e["first_index"], e["last_index"]) for e in analysis.to_report("1/min")["events"]] == spans["1/min"]
    with pytest.raises(ProfileError, match="no operating point"):
        analysis.events("5/min")
    analysis.scores = np.zeros_like(analysis.scores)  # the stored scores decide, nothing else
    assert analysis.events("1/min") == []


# --------------------------------------------------------------------------- bad input


def _short_clip(folder: Path, frames: int = 24, width: int = 320, height: int = 192, scene: str = SCENE) -> Path:
    cfg = dataclasses.replace(CAMERA, frames=frames, width=width, height=height)
    return _write(folder, "normal_train", 0, cfg, scene=scene)


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.slow
def test_too_little_footage_says_how_much_is_needed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    short = _short_clip(tmp_path / "short")  # 2.4 s
    with pytest.raises(ProfileError, match=r"too little normal footage: 2\.4 s.*at least 10 s with 100 objects"):
        calibrate([short], "short")
    line = _cli_error(["calibrate", str(short), "--out", str(tmp_path / "out")], capsys)
    assert "at least 10 s" in line
    assert not (tmp_path / "out").exists()
    # the footage a profile needs is a setting: small enough footage calibrates with a smaller demand
    profile = calibrate([short], "short", CalibrationConfig(min_seconds=2.0, min_objects=10))
    assert profile.made_from["seconds"] == pytest.approx(2.4)
    assert profile.made_from["folds"] == 4  # one clip, cut into stretches of time for the held-out scores
    with pytest.raises(ProfileError, match="at least 3 s"):
        calibrate([short], "short", CalibrationConfig(min_seconds=3.0, min_objects=10))
    # enough objects, but all in the last stretch: nothing is left to hold the others out against
    footage = measure_footage([short])
    frames = footage.clips[0].measures
    assert sum(map(len, frames)) >= 10
    first_late = len(frames) * 4 // 5
    clip = footage.clips[0]
    footage.clips[0] = dataclasses.replace(clip, boxes=[[] if n < first_late else b for n, b in enumerate(clip.boxes)],
                                           measures=[[] if n < first_late else m for n, m in enumerate(frames)])
    with pytest.raises(ProfileError, match="all come within one stretch"):
        fit_profile(footage, "short", CalibrationConfig(min_seconds=2.0, min_objects=1))


@pytest.mark.slow
def test_clips_of_different_sizes_or_cameras_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = _short_clip(tmp_path / "a")
    small = _short_clip(tmp_path / "small", width=256, height=160)
    plaza = _short_clip(tmp_path / "plaza", scene="plaza")
    with pytest.raises(ProfileError, match="different sizes.*320x192.*256x160"):
        calibrate([a, small], "mixed")
    with pytest.raises(ProfileError, match="does not look like the same camera"):
        calibrate([a, plaza], "mixed")
    line = _cli_error(["calibrate", str(a), str(plaza), "--out", str(tmp_path / "out")], capsys)
    assert "same camera" in line
    line = _cli_error(["calibrate", str(a), str(small), "--out", str(tmp_path / "out")], capsys)
    assert "different sizes" in line
    assert not (tmp_path / "out").exists()


def test_unreadable_video_is_a_video_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(VideoError):
        calibrate([bad], "bad")
    _cli_error(["calibrate", str(bad), "--out", str(tmp_path / "out")], capsys)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ProfileError, match="at least one normal clip"):
        calibrate([], "none")


def _copy_profile(camera: dict, folder: Path) -> Path:
    camera["profile"].save(folder)
    return folder


@pytest.mark.slow
def test_profiles_made_by_a_newer_version_or_corrupt_are_refused(camera: dict, tmp_path: Path) -> None:
    newer = _copy_profile(camera, tmp_path / "newer")
    meta = json.loads((newer / PROFILE_JSON).read_text())
    meta["format_version"] += 1
    (newer / PROFILE_JSON).write_text(json.dumps(meta))
    with pytest.raises(ProfileError, match="made by a newer T-VAD Chat"):
        SceneProfile.load(newer)

    broken_json = _copy_profile(camera, tmp_path / "broken_json")
    text = (broken_json / PROFILE_JSON).read_text()
    (broken_json / PROFILE_JSON).write_text(text[: len(text) // 2])
    with pytest.raises(ProfileError, match="corrupt.*calibrate the profile again"):
        SceneProfile.load(broken_json)

    incomplete = _copy_profile(camera, tmp_path / "incomplete")
    meta = json.loads((incomplete / PROFILE_JSON).read_text())
    del meta["operating_points"]
    (incomplete / PROFILE_JSON).write_text(json.dumps(meta))
    with pytest.raises(ProfileError, match="incomplete"):
        SceneProfile.load(incomplete)

    data = (camera["profile_dir"] / ARRAYS).read_bytes()
    flipped = data[:200] + bytes(b ^ 0xFF for b in data[200:400]) + data[400:]
    for name, blob in (("truncated", data[: len(data) // 2]), ("tail_cut", data[:-30]), ("flipped", flipped),
                       ("empty", b"")):
        folder = _copy_profile(camera, tmp_path / name)
        (folder / ARRAYS).write_bytes(blob)
        with pytest.raises(ProfileError, match="arrays.npz is missing or corrupt"):
            SceneProfile.load(folder)
    (folder / ARRAYS).unlink()
    with pytest.raises(ProfileError, match="missing or corrupt"):
        SceneProfile.load(folder)
    with pytest.raises(ProfileError, match="not a scene profile"):
        SceneProfile.load(tmp_path / "nowhere")


@pytest.mark.slow
def test_a_clip_of_another_size_than_the_profile_is_refused(camera: dict, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    small = _short_clip(tmp_path / "small", width=256, height=160)
    heat = tmp_path / "heat"
    with pytest.raises(ProfileError, match=r"profile 'synth_walkway'.*320x192"):
        analyze_clip(small, camera["profile_dir"], heatmaps=heat)
    assert not heat.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small"]  # no half-written heat folder


@pytest.mark.slow
def test_calibrate_out_into_a_folder_that_is_not_a_profile_deletes_nothing(camera: dict, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "holiday_photos"
    out.mkdir()
    (out / "beach.jpg").write_bytes(b"keep me")
    (out / "album").mkdir()
    (out / "album" / "notes.txt").write_text("keep me too")
    line = _cli_error(["calibrate", *map(str, camera["normals"]), "--fps", "5", "--out", str(out)], capsys)
    assert "is not a scene profile" in line
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["album", "album/notes.txt",
                                                                               "beach.jpg"]
    assert (out / "beach.jpg").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holiday_photos"]


# --------------------------------------------------------------------------- --profile auto


@pytest.mark.slow
@pytest.mark.shared_data("ucsd_ped2")
def test_auto_picks_the_ped2_profile_for_ped2_and_none_for_synthcampus(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    installed = tmp_path / "profiles"
    training = DATA / "ucsd_ped2" / "training" / "frames"
    argv = ["calibrate", *(str(training / f"{k:02d}") for k in (1, 2, 3)), "--folder-fps", "10",
            "--out", str(installed / "ucsd_ped2_test")]
    assert main(argv) == 0
    assert "scene profile 'ucsd_ped2_test' written" in capsys.readouterr().out
    monkeypatch.setenv("TVAD_PROFILES", str(installed))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no user profiles of this machine

    choice = choose_profile(DATA / "ucsd_ped2" / "testing" / "frames" / "01", "auto", folder_fps=10)
    assert choice.how == "matched"
    assert choice.profile is not None and choice.profile.name.startswith("ucsd_ped2")
    assert "matched by background" in choice.note

    # a SynthCampus clip of Ped2's size: only its background can tell it is another camera
    synth = _short_clip(tmp_path / "synth", width=360, height=240)
    choice = choose_profile(synth, "auto")
    assert choice.profile is None and choice.how == "uncalibrated"
    assert "uncalibrated" in choice.note
    assert choose_profile(synth, "none").how == "uncalibrated"


# --------------------------------------------------------------------------- streaming


def _concatenated(chunks: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.concatenate([c.frames for c in chunks]), np.concatenate([c.timestamps for c in chunks]),
            np.concatenate([c.frame_indices for c in chunks]))


@pytest.mark.parametrize("kind", ["video", "folder"])
@pytest.mark.parametrize("fps", [None, 10.0])
def test_stream_clip_chunks_concatenate_to_load_clip(tmp_path: Path, kind: str, fps: float | None) -> None:
    if kind == "video":
        source = write_video(tmp_path / "clip.mp4", num_frames=70, fps=25)
    else:
        source = write_frames(tmp_path / "frames", 70)
    folder_fps = 25.0 if kind == "folder" else None
    whole = load_clip(source, num_frames=None, fps=fps, folder_fps=folder_fps)
    chunks = list(stream_clip(source, fps=fps, folder_fps=folder_fps, chunk=16))
    frames, times, indices = _concatenated(chunks)
    assert len(whole.frames) == (70 if fps is None else 28)
    assert np.array_equal(frames, whole.frames)
    assert np.array_equal(times, whole.timestamps)
    assert np.array_equal(indices, whole.frame_indices)
    assert all(0 < len(c.frames) <= 16 for c in chunks)
    assert len(chunks) == math.ceil(len(whole.frames) / 16)


@pytest.mark.parametrize("kwargs", [{"fps": 0}, {"fps": -2.0}, {"fps": float("nan")}, {"fps": float("inf")},
                                    {"chunk": 0}])
def test_stream_clip_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    source = write_frames(tmp_path / "frames", 4)
    with pytest.raises(ConfigError):
        next(stream_clip(source, **kwargs))


def test_frame_table_keeps_every_record_and_box():
    from tvad_chat.scene.analyze import FrameBox, FrameRecord, FrameTable

    rng = np.random.default_rng(3)
    records = []
    for k in range(40):
        boxes = [FrameBox(tuple(float(v) for v in rng.uniform(0, 4000, 4).round(1)), float(rng.uniform(0, 5)),
                          int(rng.integers(1, 10**6)), tuple(float(v) for v in rng.uniform(0, 20, 3)),
                          tuple(int(v) for v in rng.integers(0, 256, 3)))
                 for _ in range(int(rng.integers(0, 5)))]
        records.append(FrameRecord(3 * k + 7, k / 12.5, max((b.score for b in boxes), default=0.0), boxes))
    table = FrameTable(records)
    assert len(table) == 40 and table.indices.tolist() == [r.index for r in records]
    assert np.array_equal(table.times, [r.time for r in records])
    for got, want in zip(table, records, strict=True):
        assert (got.index, got.time) == (want.index, want.time) and len(got.boxes) == len(want.boxes)
        for a, b in zip(got.boxes, want.boxes, strict=True):
            assert a.track_id == b.track_id and a.colour == b.colour
            assert np.allclose(a.xyxy, b.xyxy, atol=1e-3) and np.allclose(a.measures, b.measures, rtol=1e-6)
            assert a.score == pytest.approx(b.score, rel=1e-6)
    assert table[-1].index == records[-1].index and [r.index for r in table[5:8]] == [22, 25, 28]
    with pytest.raises(IndexError):
        table[40]
