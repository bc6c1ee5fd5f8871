"""The corpus runner: crash-safe JSONL, resuming, a SIGKILL mid-run, and end-to-end builds."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from shared_data import DATA

from datasets_builder.corpus import CorpusConfig, VideoItem, build_corpus
from datasets_builder.extract import GroundTruthBackend, GTObject
from datasets_builder.sources import PED2_FPS
from tvad_chat.errors import DataError
from tvad_chat.files import JsonlAppender, read_jsonl, repair_tail
from tvad_chat.motion import (
    CUT_MARGIN,
    MIN_DISPLACEMENT,
    PARTIAL_VIEW,
    PARTIAL_WINDOW_S,
    PEOPLE,
    SPEED_CLASSES,
    SPEED_WINDOW_S,
    heading_label,
)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
W, H = 320, 240


def make_item(n_video: int, split: str = "test", frames: int = 40) -> VideoItem:
    """A walker going right; odd videos add a cyclist riding right-to-left from frame 10 (with masks)."""
    vid = f"{n_video:03d}"
    anomalous = n_video % 2 == 1
    speed = 2 + n_video % 3

    def ann(f: int) -> list[GTObject]:
        x, y = 10 + speed * f, 90
        if n_video % 3 == 2 and f > 20:  # this walker turns right (down the frame) at frame 20
            x, y = 10 + speed * 20, 90 + speed * (f - 20)
        objs = [GTObject("1", "person", (x, y, x + 20, y + 60),
                         {"upper_color": ["red", "green", "white"][n_video % 3], "lower_color": "blue"}, False)]
        if anomalous and f >= 10:
            x = W - 8 * (f - 10)
            objs.append(GTObject("2", "cyclist", (x - 25, 130, x, 190),
                                 {"upper_color": "yellow", "lower_color": "black"}, True))
        return objs

    def masks(f: int):
        m = np.zeros((H, W), bool)
        for o in ann(f):
            if o.anomalous:
                x1, y1, x2, y2 = (int(max(0, v)) for v in o.box)
                m[y1:y2, x1:x2] = True
        return m

    labels = [int(anomalous and f >= 10) for f in range(frames)]
    return VideoItem(video_id=vid, split=split, video=f"/data/{split}/{vid}", fps=25.0, width=W, height=H,
                     num_frames=frames, annotations=ann, masks=masks, frame_labels=labels,
                     mask_dir=f"/data/{split}/masks/{vid}" if anomalous else None)


class SlowGT(GroundTruthBackend):
    """The ground-truth backend, slowed down so that a kill lands mid-run."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def extract(self, task):
        time.sleep(self.delay)
        return super().extract(task)


def run_builder(out: str, n: int, delay: float) -> None:
    """Entry point of the subprocess the kill test starts."""
    build_corpus([make_item(i) for i in range(n)], SlowGT(delay), CorpusConfig(out_dir=Path(out), progress=False))


# --------------------------------------------------------------------------- JSONL


def test_torn_tail_is_cut_and_ids_are_not_duplicated(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"id": "a", "v": 1}\n{"id": "b", "v": 2}\n{"id": "c", "v"')
    assert repair_tail(p) == len(b'{"id": "c", "v"')
    with JsonlAppender(p) as w:
        assert w.append_batch([{"id": "b", "v": 99}, {"id": "c", "v": 3}, {"id": "c", "v": 4}]) == 1
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b", "c"]
    assert [r["v"] for r in read_jsonl(p)] == [1, 2, 3]
    p.write_bytes(b'{"id": "only torn')
    with JsonlAppender(p) as w:
        w.append_batch([{"id": "z"}])
    assert p.read_text() == '{"id":"z"}\n'


def test_malformed_line_error_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": 1}\n\n[1, 2]\n')
    with pytest.raises(DataError, match=r"bad.jsonl:3: expected a JSON object"):
        list(read_jsonl(p))
    p.write_text('{"id": 1}\n{oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        list(read_jsonl(p))


# --------------------------------------------------------------------------- runs and resumes


def _lines(out: Path, name: str) -> list[str]:
    p = out / name
    return p.read_text().splitlines() if p.exists() else []


def test_build_rerun_and_resume_after_lost_done_marks(tmp_path):
    items = [make_item(i) for i in range(6)]
    out = tmp_path / "out"
    s = build_corpus(items, GroundTruthBackend(), CorpusConfig(out_dir=out, progress=False))
    assert s.videos_done_now == 6 and s.videos_failed == 0 and s.anomalous_videos == 3
    assert s.references["yesno"] == 6 and s.references["target"] == 3 and s.references["trajectory"] == 3
    assert s.samples["judgement"] == 12 and s.samples["temporal"] == 3
    sft = _lines(out, "sft.jsonl")
    ids = [json.loads(line)["id"] for line in sft]
    assert len(ids) == len(set(ids)) == sum(s.samples.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == s.samples
    dump = json.loads((out / "videos" / "test" / "001.json").read_text())
    assert dump["anomalous"] and dump["anomaly_targets"][0]["trajectory"]["direction"] == "left"
    assert len(dump["records"]) == 40 and dump["anomaly_segments"] == [[10, 39]]
    # a rerun does nothing
    s2 = build_corpus(items, GroundTruthBackend(), CorpusConfig(out_dir=out, progress=False))
    assert s2.videos_skipped == 6 and s2.videos_done_now == 0 and _lines(out, "sft.jsonl") == sft
    # a crash after a video's lines were written but before its done mark: no duplicates on resume
    done = _lines(out, "done.jsonl")
    (out / "done.jsonl").write_text("\n".join(done[:3]) + "\n")
    with (out / "sft.jsonl").open("a") as fh:
        fh.write(sft[-1][: len(sft[-1]) // 2])  # and a torn line at the end
    s3 = build_corpus(items, GroundTruthBackend(), CorpusConfig(out_dir=out, progress=False))
    assert s3.videos_done_now == 3
    assert _lines(out, "sft.jsonl") == sft and len(_lines(out, "done.jsonl")) == 6


def test_limit_and_failures_are_recorded_then_retried(tmp_path):
    items = [make_item(i) for i in range(4)]
    broken = VideoItem(video_id="broken", split="test", video="/nope", fps=25.0, width=W, height=H,
                       num_frames=10)  # no annotations: the gt backend refuses it
    out = tmp_path / "out"
    s = build_corpus(items[:2] + [broken] + items[2:], GroundTruthBackend(),
                     CorpusConfig(out_dir=out, progress=False, limit=3))
    assert s.videos_done_now == 2 and s.videos_failed == 1
    fail = [json.loads(x) for x in _lines(out, "failures.jsonl")]
    assert fail[0]["video_id"] == "test/broken" and "needs annotations" in fail[0]["reason"]
    s = build_corpus(items, GroundTruthBackend(), CorpusConfig(out_dir=out, progress=False))
    assert s.videos_done_now == 2 and s.videos_in_corpus == 4


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_loses_and_duplicates_nothing(tmp_path):
    n = 10
    ref = tmp_path / "ref"
    build_corpus([make_item(i) for i in range(n)], GroundTruthBackend(), CorpusConfig(out_dir=ref, progress=False))
    out = tmp_path / "out"
    code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); import test_corpus as t; t.run_builder({str(out)!r}, {n}, 0.004)"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    kills = 0
    for _ in range(4):  # kill it a few times at different points, then let it finish
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
        done_before = len(_lines(out, "done.jsonl"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if len(_lines(out, "done.jsonl")) >= done_before + 2:
                break
            time.sleep(0.02)
        time.sleep(0.05 * kills)  # land the kill at varying points of a video
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            break
    assert kills >= 1
    assert len(_lines(out, "done.jsonl")) < n  # it really was interrupted
    run_builder(str(out), n, 0.0)
    for name in ("sft.jsonl", "eval_refs.jsonl"):
        got, want = _lines(out, name), _lines(ref, name)
        assert len(got) == len(set(got)), f"duplicated lines in {name}"
        assert sorted(got) == sorted(want), f"{name} differs from an uninterrupted run"
    assert sorted(json.loads(x)["id"] for x in _lines(out, "done.jsonl")) == [f"test/{i:03d}" for i in range(n)]
    for p in (ref / "videos" / "test").iterdir():
        assert (out / "videos" / "test" / p.name).read_text() == p.read_text()


# --------------------------------------------------------------------------- statement checks
# A reader of the corpus, written independently of the generator: it parses each claim of a
# statement with its own vocabulary and checks it against the annotated boxes of the track.

HEADING_PHRASES = {  # phrase -> heading (degrees, counter-clockwise, y up)
    "from left to right": 0, "to the right": 0, "rightwards": 0,
    "from right to left": 180, "to the left": 180, "leftwards": 180,
    "from the bottom of the frame towards the top": 90, "upwards in the frame": 90,
    "up the frame, away from the camera": 90,
    "from the top of the frame towards the bottom": 270, "downwards in the frame": 270,
    "down the frame, towards the camera": 270,
    "diagonally towards the top right": 45, "up and to the right": 45, "towards the upper right": 45,
    "diagonally towards the top left": 135, "up and to the left": 135, "towards the upper left": 135,
    "diagonally towards the bottom right": 315, "down and to the right": 315, "towards the lower right": 315,
    "diagonally towards the bottom left": 225, "down and to the left": 225, "towards the lower left": 225,
}
SPEED_PHRASES = {"very fast": "very fast", "very quickly": "very fast", "at very high speed": "very fast",
                 "fast": "fast", "quickly": "fast", "at high speed": "fast",
                 "at walking pace": "walking", "at a normal walking speed": "walking", "at an ordinary pace": "walking",
                 "slowly": "slow", "at a slow pace": "slow"}
_HEAD_RE = "|".join(sorted(map(re.escape, HEADING_PHRASES), key=len, reverse=True))
_SPEED_RE = "|".join(sorted(map(re.escape, SPEED_PHRASES), key=len, reverse=True))
MOVE = re.compile(rf"(?:moves|moving|heads|heading|goes) ({_HEAD_RE})(?: ({_SPEED_RE}))?")
ENTRY = re.compile(r"(?:enters from|comes in from|appears at) the (left|right|top|bottom)(?: side| edge)? at ([\d.]+) s")
EXIT = re.compile(r"(?:leaves on|exits through|disappears at) the (left|right|top|bottom)(?: side| edge)? at ([\d.]+) s")
TURN = re.compile(r"(?:turns (left|right|back) at ([\d.]+) s|at ([\d.]+) s it turns (left|right)"
                  r"|makes a (left|right) turn at ([\d.]+) s)")
STAYS = re.compile(r"stays in roughly the same place|keeps to one spot|hardly moves")
IN_VIEW_AT_START = re.compile(r"is already in view at the start|is visible from the first frame|starts in the")
APPEARS_INSIDE = re.compile(r"(?:appears in|shows up in|first appears in) the [a-z -]+? at ([\d.]+) s")
IN_VIEW_AT_END = re.compile(r"is still in view at the end|remains visible in|ends the clip in")
VANISHES_INSIDE = re.compile(r"(?:disappears in|is lost from view in|vanishes in) the [a-z -]+? at ([\d.]+) s")
COLOURS = {"red", "blue", "green", "yellow", "black", "white", "grey", "gray", "orange", "purple", "brown", "pink"}


def _foot(b):
    """Where a target stands: the bottom centre of its box (the vocabulary's position)."""
    return ((b[0] + b[2]) / 2, b[3])


def _size(b, person: bool = True):
    """A person's size is the longer side of the box (standing or lying); anything else's its height."""
    return max(b[2] - b[0], b[3] - b[1]) if person else b[3] - b[1]


def full_view_track(track: dict[int, tuple], fps: float, width: int, height: int,
                    person: bool = True) -> dict[int, tuple]:
    """The boxes that show the whole target: not cut by the left, right or bottom frame edge, and not under
    PARTIAL_VIEW of its largest size within +-1 s (a box cut by an occluder or the frame does not stand
    where the target stands)."""
    half = PARTIAL_WINDOW_S / 2 * fps
    mx, my = CUT_MARGIN * width, CUT_MARGIN * height
    full = {f: b for f, b in track.items()
            if b[0] > mx and b[2] < width - mx and b[3] < height - my
            and _size(b, person) >= PARTIAL_VIEW * max(_size(track[g], person) for g in track if abs(g - f) <= half)}
    return full if len(full) >= 2 else track


def _heading_deg(p, q):
    return math.degrees(math.atan2(-(q[1] - p[1]), q[0] - p[0])) % 360


def _ang_diff(a, b):
    return abs((a - b + 180) % 360 - 180)


# Margins, only at class boundaries: a speed within 10 % of a class threshold may be called by either
# neighbouring class, a heading within 10 % of a sector (4.5 of 45 degrees) of the sector edge by either
# neighbouring direction, a net move within 10 % of the "moving" threshold either moving or staying.
MARGIN = 0.1


def measured_speed(track: dict[int, tuple], fps: float, window_s: float = SPEED_WINDOW_S,
                   person: bool = True) -> float:
    """Median over the path of the foot point's speed over >= window_s moves, in sizes per second."""
    frames = sorted(track)
    samples = []
    for a in frames:
        b = next((f for f in frames if (f - a) / fps >= window_s - 1e-9), None)
        if b is None:
            break
        size = (_size(track[a], person) + _size(track[b], person)) / 2
        samples.append(math.dist(_foot(track[a]), _foot(track[b])) / ((b - a) / fps) / max(size, 1.0))
    if not samples:
        a, b = frames[0], frames[-1]
        if a == b:
            return 0.0
        size = sum(_size(track[f], person) for f in frames) / len(frames)
        return math.dist(_foot(track[a]), _foot(track[b])) / ((b - a) / fps) / max(size, 1.0)
    samples.sort()
    n = len(samples)
    return samples[n // 2] if n % 2 else (samples[n // 2 - 1] + samples[n // 2]) / 2


def speed_classes_allowed(speed: float) -> set[str]:
    """The classes a speed may be called: its own, and a neighbour within MARGIN of a threshold."""
    lims = [0.0] + [lim for lim, _ in SPEED_CLASSES]
    names = [n for _, n in SPEED_CLASSES]
    return {n for i, n in enumerate(names) if lims[i] * (1 - MARGIN) <= speed < lims[i + 1] * (1 + MARGIN)}


def check_trajectory_statement(text: str, track: dict[int, tuple], fps: float, width: int, height: int,
                               num_frames: int | None = None, person: bool = True) -> int:
    """Assert every claim of `text` against the annotated track {frame: box}; returns how many were checked.

    Sides and times are checked on every box, positions and speeds on the full views."""
    frames = sorted(track)
    f0, f1 = frames[0], frames[-1]
    checked = 0
    if IN_VIEW_AT_START.search(text):
        assert f0 == 0, f"claims it is in view from the start, first seen at frame {f0}: {text}"
        checked += 1
    for t in APPEARS_INSIDE.findall(text):
        assert f0 > 0 and abs(float(t) - f0 / fps) <= 0.051, f"claims it appears at {t} s, first seen at {f0}: {text}"
        checked += 1
    if IN_VIEW_AT_END.search(text) and num_frames is not None:
        assert f1 == num_frames - 1, f"claims it is in view at the end, last seen at frame {f1}: {text}"
        checked += 1
    for t in VANISHES_INSIDE.findall(text):
        assert abs(float(t) - f1 / fps) <= 0.051, f"claims it vanishes at {t} s, last seen at frame {f1}: {text}"
        checked += 1

    def touches(b):
        return {"left": b[0] <= 0.05 * width, "right": b[2] >= 0.95 * width,
                "top": b[1] <= 0.05 * height, "bottom": b[3] >= 0.95 * height}

    for side, t in ENTRY.findall(text):
        b = track[f0]
        assert touches(b)[side], f"claims entry from the {side} but the first box {b} does not touch it: {text}"
        assert abs(float(t) - f0 / fps) <= 0.051, f"claims entry at {t} s, first seen at {f0 / fps:.2f} s: {text}"
        checked += 1
    for side, t in EXIT.findall(text):
        b = track[f1]
        assert touches(b)[side], f"claims exit on the {side} but the last box {b} does not touch it: {text}"
        assert abs(float(t) - f1 / fps) <= 0.051, f"claims exit at {t} s, last seen at {f1 / fps:.2f} s: {text}"
        checked += 1
    turns = []
    for m in TURN.findall(text):
        sense = m[0] or m[3] or m[4]
        t = float(m[1] or m[2] or m[5])
        turns.append((t, sense))
    moves = MOVE.findall(text)
    track = full_view_track(track, fps, width, height, person)
    frames = sorted(track)
    f0, f1 = frames[0], frames[-1]
    bounds = [f0] + [min(frames, key=lambda f: abs(f / fps - t)) for t, _ in turns] + [f1]
    assert len(moves) == len(turns) + 1 or (not moves and STAYS.search(text)), f"unparsed motion: {text}"
    sizes = sorted(_size(track[f], person) for f in frames)
    s_med = sizes[len(sizes) // 2]
    for k, (phrase, speed) in enumerate(moves):
        a, b = bounds[k], bounds[k + 1]
        claimed = HEADING_PHRASES[phrase]
        actual = _heading_deg(_foot(track[a]), _foot(track[b]))
        tol = 22.5 + (8 if turns else 45 * MARGIN)  # a leg's ends are only known to the turn's frame
        assert _ang_diff(claimed, actual) <= tol, f"leg {k}: claims {phrase!r}, the feet go {actual:.0f} deg: {text}"
        if not turns:
            net = math.dist(_foot(track[f0]), _foot(track[f1]))
            assert net >= MIN_DISPLACEMENT * (1 - MARGIN) * s_med, f"claims motion, moved {net:.0f} px: {text}"
        checked += 1
        if speed:
            s = measured_speed(track, fps, person=person)
            allowed = speed_classes_allowed(s)
            if "stationary" in allowed and not turns:
                allowed.add("slow")  # it got somewhere (checked above): at least slow, though mostly still
            assert SPEED_PHRASES[speed] in allowed, f"claims {speed!r} at {s:.2f} sizes/s: {text}"
            checked += 1
    for (t, sense), (a, mid, b) in zip(turns, zip(bounds, bounds[1:], bounds[2:])):
        h_in = _heading_deg(_foot(track[a]), _foot(track[mid]))
        h_out = _heading_deg(_foot(track[mid]), _foot(track[b]))
        delta = (h_out - h_in + 180) % 360 - 180
        want = {"left": delta > 30, "right": delta < -30, "back": abs(delta) > 120}[sense]
        assert want, f"claims a {sense} turn at {t} s, boxes turn {delta:.0f} deg: {text}"
        checked += 1
    if STAYS.search(text):
        net = math.dist(_foot(track[f0]), _foot(track[f1]))
        assert net < MIN_DISPLACEMENT * (1 + MARGIN) * s_med, f"claims it stays in place but it moved {net:.0f} px: {text}"
        checked += 1
    return checked


def check_appearance_statement(text: str, category: str, attributes: dict[str, str]) -> None:
    words = set(re.findall(r"[a-z]+", text.lower()))
    assert category in text.lower(), f"{category!r} not named: {text}"
    for k, v in attributes.items():
        if k == "carrying" and v in ("nothing", "none"):
            continue
        assert v.lower() in text.lower(), f"{k}={v!r} missing: {text}"
    want = {v.lower() for k, v in attributes.items() if "color" in k}
    assert words & COLOURS <= want, f"colours {words & COLOURS - want} not in the attributes: {text}"


def check_corpus_against_tracks(out: Path, track_of, meta_of: dict) -> dict[str, int]:
    """Every trajectory and appearance statement of a built corpus against the annotations.

    track_of(sample) -> {frame: box}: the annotated boxes of the span the sample's target is described over;
    meta_of: {video_key: (fps, width, height, num_frames, category_attrs)} where category_attrs:
    {track_id: (category, attributes)}.
    """
    counts = {"trajectory": 0, "appearance": 0, "claims": 0, "motion_clauses": 0}
    refs = {r["id"]: r for r in read_jsonl(out / "eval_refs.jsonl")}
    for s in read_jsonl(out / "sft.jsonl"):
        m = s["meta"]
        if "track_id" not in m:
            continue
        vkey = s["video_id"]
        fps, w, h, n, cats = meta_of[vkey]
        track = track_of(s)
        answer = s["conversation"][-1]["content"]
        texts = [answer] + (refs[s["id"]]["references"] if s["id"] in refs else [])
        person = cats[m["track_id"]][0] in PEOPLE
        if m["kind"] == "trajectory":
            for t in texts:
                counts["claims"] += check_trajectory_statement(t, track, fps, w, h, n, person)
                counts["trajectory"] += 1
        elif m["kind"] == "target":
            cat, attrs = cats[m["track_id"]]
            for t in texts:
                check_appearance_statement(t, cat, attrs)
                counts["appearance"] += 1
        # motion clauses elsewhere: the judgement answer, the question of a motion->appearance item
        if m["kind"] != "trajectory":
            for t in [c["content"] for c in s["conversation"]]:
                if TURN.search(t):  # a full trajectory answer in the context: checked as a trajectory item
                    continue
                for clause in MOVE.finditer(t):
                    counts["claims"] += check_trajectory_statement(clause.group(0), track, fps, w, h, n, person)
                    counts["motion_clauses"] += 1
    return counts


def test_every_statement_agrees_with_the_annotated_geometry_and_attributes(tmp_path):
    items = [make_item(i) for i in range(6)]
    out = tmp_path / "out"
    build_corpus(items, GroundTruthBackend(), CorpusConfig(out_dir=out, progress=False))
    tracks, meta_of = {}, {}
    for it in items:
        cats = {}
        for f in range(it.num_frames):
            for o in it.annotations(f):
                tracks.setdefault((it.key, o.track_id), {})[f] = o.box
                cats[o.track_id] = (o.category, o.attributes)
        meta_of[it.key] = (it.fps, it.width, it.height, it.num_frames, cats)
    counts = check_corpus_against_tracks(out, lambda s: tracks[(s["video_id"], s["meta"]["track_id"])], meta_of)
    assert counts["trajectory"] >= 20 and counts["appearance"] >= 10 and counts["claims"] >= 40
    assert counts["motion_clauses"] >= 6
    turned = [s for s in read_jsonl(out / "sft.jsonl") if s["meta"].get("trajectory", {}).get("turns")]
    assert turned and any("turns right" in s["conversation"][-1]["content"] or "right turn" in
                          s["conversation"][-1]["content"] for s in turned if s["meta"]["kind"] == "trajectory")


def test_the_checker_catches_false_statements():
    track = {f: (10 + 4 * f, 100, 30 + 4 * f, 160) for f in range(40)}
    good = "It moves from left to right fast, and it is still in view at the end."
    assert check_trajectory_statement(good, track, 25.0, 320, 240) >= 2
    for bad in ["It moves from right to left fast.", "It moves upwards in the frame fast.",
                "It moves from left to right slowly.", "It enters from the right at 0.0 s, moves to the right fast.",
                "It hardly moves."]:
        with pytest.raises(AssertionError):
            check_trajectory_statement(bad, track, 25.0, 320, 240)
    # where it is at the ends of the clip
    late = {f: b for f, b in track.items() if f >= 5}
    assert check_trajectory_statement("It is already in view at the start, moves to the right fast.", track, 25.0,
                                      320, 240, num_frames=40) == 3
    for bad, tr in [("It is already in view at the start.", late), ("It appears in the centre of the frame at 0.4 s.",
                                                                      track),
                    ("It is still in view at the end, in the centre of the frame.", {f: track[f] for f in range(30)})]:
        with pytest.raises(AssertionError):
            check_trajectory_statement(bad, tr, 25.0, 320, 240, num_frames=40)
    # positions come from the full views: legs hidden for a few frames do not make a standing person move
    standing = {f: (100, 60, 120, 120) if not 10 <= f < 16 else (100, 60, 120, 75) for f in range(40)}
    assert check_trajectory_statement("It hardly moves.", standing, 25.0, 320, 240) == 1
    with pytest.raises(AssertionError):
        check_trajectory_statement("It moves upwards in the frame fast.", standing, 25.0, 320, 240)
    with pytest.raises(AssertionError):
        check_appearance_statement("A person in a red top.", "person", {"upper_color": "blue"})
    with pytest.raises(AssertionError):
        check_appearance_statement("A person in a blue top and green trousers.", "person", {"upper_color": "blue"})


# --------------------------------------------------------------------------- SynthCampus, end to end
# The same reader on a generated SynthCampus set: statements against the annotated boxes (above) and
# against SynthCampus's own trajectory records, which the generator measures on its exact screen track.

EXTRACTED_KEYS = ("upper_color", "lower_color", "color", "size", "carrying", "hat")  # what extraction describes


@pytest.fixture(scope="module")
def synth_corpus(tmp_path_factory):
    """30 SynthCampus train clips (24 frames, 256x160) and their ground-truth corpus."""
    from datasets_builder.corpus import source_items
    from datasets_builder.synth.generate import ClipConfig
    from datasets_builder.synth.writer import generate_split

    root = tmp_path_factory.mktemp("synthcampus")
    generate_split(root / "data", "train", 30, seed=7, cfg=ClipConfig(frames=24, width=256, height=160,
                                                                        effects=False))
    out = root / "corpus"
    build_corpus(source_items("synth", root / "data", "train"), GroundTruthBackend(),
                 CorpusConfig(out_dir=out, source="synth", progress=False))  # default settings
    anns = {f"train/{p.parent.name}": json.loads(p.read_text())
            for p in sorted((root / "data" / "train").glob("*/annotation.json"))}
    return out, anns


CORPUS_FILES = ("sft.jsonl", "eval_refs.jsonl", "done.jsonl")


def _same_corpus(out: Path, ref: Path) -> None:
    """The same lines in the same order and the same per-video files (summary.json differs only in its timing)."""
    for name in CORPUS_FILES:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    want = sorted(p.relative_to(ref) for p in (ref / "videos").rglob("*.json"))
    assert sorted(p.relative_to(out) for p in (out / "videos").rglob("*.json")) == want
    for path in want:
        assert (out / path).read_bytes() == (ref / path).read_bytes(), path
    assert not (out / "failures.jsonl").exists() or not (out / "failures.jsonl").read_text()


def test_two_worker_processes_write_the_same_corpus(synth_corpus, tmp_path, capsys):
    """`tvad build-corpus --workers 2`: the 30 SynthCampus videos in two spawned processes, written in the same
    order, give the files the in-process build gave."""
    from tvad_chat.cli import main

    ref, _ = synth_corpus
    out = tmp_path / "two"
    assert main(["build-corpus", "--source", "synth", "--data", str(ref.parent / "data"), "--out", str(out),
                 "--workers", "2", "--no-progress"]) == 0
    assert "videos: 30 built now, 0 already done, 0 failed" in capsys.readouterr().out
    _same_corpus(out, ref)
    summary, want = json.loads((out / "summary.json").read_text()), json.loads((ref / "summary.json").read_text())
    assert {k: v for k, v in summary.items() if k != "seconds"} == {k: v for k, v in want.items() if k != "seconds"}


def _no_answer(image, prompt: str) -> str:
    return "{}"


def test_a_model_backend_reaches_a_worker_as_its_settings(monkeypatch):
    """Pickled (as an executor sends it), a model backend carries its settings, not its model or key, and every copy
    a process unpickles is that process's one backend: a worker loads its model once for all its videos."""
    import pickle

    from datasets_builder.extract import LocalVLMBackend, OpenAICompatibleBackend, OpenAIConfig

    local = LocalVLMBackend(generate_fn=_no_answer, image_max_side=320)
    first, second = pickle.loads(pickle.dumps(local)), pickle.loads(pickle.dumps(local))
    assert first is second and first is not local and first.image_max_side == 320
    monkeypatch.setenv("TVAD_TEST_KEY", "secret-key-1234")
    remote = OpenAICompatibleBackend(OpenAIConfig(base_url="http://127.0.0.1:9/v1", model="m",
                                                  api_key_env="TVAD_TEST_KEY", concurrency=2))
    data = pickle.dumps(remote)
    assert b"secret-key-1234" not in data
    copy = pickle.loads(data)
    assert copy is pickle.loads(pickle.dumps(remote)) and copy.config == remote.config and copy._key == remote._key


def _listening(pids: set[int]) -> set[str]:
    """The addresses the processes listen on (TCP)."""
    import psutil

    return {c.laddr.ip for c in psutil.net_connections(kind="tcp") if c.pid in pids and c.status == psutil.CONN_LISTEN}


def _loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or 127.x written as IPv6 (::ffff:127.0.0.1)."""
    import ipaddress

    ip = ipaddress.ip_address(address)
    return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback


@pytest.mark.slow
def test_a_local_ray_instance_on_loopback_writes_the_same_corpus(synth_corpus, tmp_path):
    """The same build on a Ray instance this test starts (2 CPUs): every Ray process listens on 127.0.0.1 only."""
    import tempfile

    import psutil

    from datasets_builder.corpus import source_items
    from tvad_chat.executor import RayExecutor

    ref, _ = synth_corpus
    out = tmp_path / "ray"
    # Ray's sockets live under its temp dir and a socket path may not exceed 107 bytes: tmp_path is often too deep
    temp = Path(tempfile.mkdtemp(prefix="tvad-ray-"))
    executor = RayExecutor(None, num_cpus=2, _temp_dir=str(temp))
    try:
        build_corpus(source_items("synth", ref.parent / "data", "train"), GroundTruthBackend(),
                     CorpusConfig(out_dir=out, source="synth", progress=False), executor)
        ray_processes = {p.pid for p in psutil.Process().children(recursive=True)}
        addresses = _listening(ray_processes | {os.getpid()})
    finally:
        executor.close()
        shutil.rmtree(temp, ignore_errors=True)
    assert addresses and all(_loopback(a) for a in addresses), addresses
    _same_corpus(out, ref)


def _synth_span(s: dict, anns: dict) -> tuple[dict, dict[int, tuple]]:
    """(record, {frame: box}) of a sample's target: every target, anomalous or not, is described over its
    whole track (a faller is in view before the fall); only the "when" answer is about the anomalous frames."""
    ann = anns[s["video_id"]]
    obj = next(o for o in ann["objects"] if o["track_id"] == s["meta"]["track_id"])
    return obj["trajectory"], {int(f): tuple(b) for f, b in obj["boxes"].items()}


def _directions_allowed(record: dict) -> set[str]:
    """The record's direction, and a neighbour when its heading is within MARGIN of a sector edge (or its
    net move within MARGIN of the "moving" threshold: then "none" too)."""
    dx, dy = record["displacement_px"]
    allowed = {record["direction"]}
    net, limit = math.hypot(dx, dy), MIN_DISPLACEMENT * record["size_px"]
    if net >= limit * (1 - MARGIN):
        ang = math.degrees(math.atan2(-dy, dx))
        allowed |= {heading_label(math.cos(math.radians(a)), -math.sin(math.radians(a)))
                    for a in (ang - 45 * MARGIN, ang + 45 * MARGIN)}
    if net < limit * (1 + MARGIN):
        allowed.add("none")
    return allowed


def check_against_record(text: str, record: dict) -> int:
    """Assert the claims of `text` against a SynthCampus trajectory record; returns how many were checked."""
    checked = 0
    directions = _directions_allowed(record)
    # and the record's own class: a target that got somewhere is at least "slow" even when it mostly stood
    # (walked up, then fought or fell), the rule check_trajectory_statement applies to the boxes too
    speeds = speed_classes_allowed(record["speed"]) | {record["speed_class"]}
    turns = TURN.findall(text)
    for phrase, speed in MOVE.findall(text):
        if not turns:  # with turns, the first clause is the first leg's heading, not the overall one
            claimed = heading_label(math.cos(math.radians(HEADING_PHRASES[phrase])),
                                    -math.sin(math.radians(HEADING_PHRASES[phrase])))
            assert claimed in directions, f"claims {phrase!r}, the record says {record['direction']}: {text}"
            checked += 1
        if speed:
            assert SPEED_PHRASES[speed] in speeds, (
                f"claims {speed!r}, the record says {record['speed_class']} ({record['speed']}/s): {text}")
            checked += 1
    if STAYS.search(text):
        assert "none" in directions, f"claims it stays in place, the record says {record['direction']}: {text}"
        checked += 1
    for side, _ in ENTRY.findall(text):
        assert record["entry"] == side, f"claims entry from the {side}, the record says {record['entry']}: {text}"
        checked += 1
    for side, _ in EXIT.findall(text):
        assert record["exit"] == side, f"claims exit on the {side}, the record says {record['exit']}: {text}"
        checked += 1
    if IN_VIEW_AT_START.search(text) or APPEARS_INSIDE.search(text):
        assert record["entry"] == ("start" if IN_VIEW_AT_START.search(text) else "inside"), (record["entry"], text)
        checked += 1
    if IN_VIEW_AT_END.search(text) or VANISHES_INSIDE.search(text):
        assert record["exit"] == ("end" if IN_VIEW_AT_END.search(text) else "inside"), (record["exit"], text)
        checked += 1
    return checked


def test_synthcampus_statements_agree_with_the_boxes_the_records_and_the_attributes(synth_corpus):
    out, anns = synth_corpus
    samples = [s for s in read_jsonl(out / "sft.jsonl") if "track_id" in s["meta"]]
    meta_of = {}
    for key, ann in anns.items():
        cats = {}
        for o in ann["objects"]:
            attrs = {k: v for k, v in o["attributes"].items() if k in EXTRACTED_KEYS}
            looks = {fr_o.get("attributes", {}).get("carrying") for fr in ann["frames"] for fr_o in fr["objects"]
                     if fr_o["track_id"] == o["track_id"] and "attributes" in fr_o}
            if looks:  # the look changes mid-clip (a dropped bag): either is a fair description
                attrs.pop("carrying", None)
            cats[o["track_id"]] = (o["category"], attrs)
        meta_of[key] = (ann["fps"], ann["width"], ann["height"], ann["num_frames"], cats)
    # 1. against the annotated boxes, by the reader's own measurements
    counts = check_corpus_against_tracks(out, lambda s: _synth_span(s, anns)[1], meta_of)
    assert counts["trajectory"] >= 150 and counts["appearance"] >= 50 and counts["claims"] >= 600
    assert counts["motion_clauses"] >= 50
    # 2. against SynthCampus's trajectory records, which the generator measures on its exact screen track:
    # boxes cannot show everything (a standing person slowly hidden from the feet up looks like one walking
    # away; a falling person's box swings half a body length), so a few targets' statements may disagree
    # with the record while agreeing with the boxes
    refs = {r["id"]: r for r in read_jsonl(out / "eval_refs.jsonl")}
    claims, focused, targets, disagree = 0, 0, set(), {}
    for s in samples:
        record, _ = _synth_span(s, anns)
        texts = [s["conversation"][-1]["content"]]
        texts += refs[s["id"]]["references"] if s["id"] in refs and s["meta"]["kind"] == "trajectory" else []
        if s["meta"]["kind"] != "trajectory":  # only the motion clauses of other items are about this target
            texts = [m.group(0) for c in s["conversation"] for m in MOVE.finditer(c["content"])
                     if not TURN.search(c["content"])]
        target = (s["video_id"], s["meta"]["track_id"], record["start_frame"], record["end_frame"])
        for t in texts:
            targets.add(target)
            try:
                n = check_against_record(t, record)
            except AssertionError as err:
                disagree.setdefault(target, f"{s['id']}: {err}")
                continue
            claims += n
            focused += n if s["meta"].get("anomaly_focused") else 0
    assert claims >= 600 and focused >= 300  # anomaly targets (their whole tracks) among them
    assert len(disagree) <= 0.05 * len(targets), "\n".join(disagree.values())
    # 3. with the default anomaly-pass filters every anomalous clip has its anomaly target, described over
    # the target's whole track, while its anomaly span (the "when") is the frames it is flagged in
    dumps = [json.loads(p.read_text()) for p in sorted((out / "videos" / "train").glob("*.json"))]
    anomalous = [d for d in dumps if d["anomalous"]]
    assert len(anomalous) >= 12 and all(d["anomaly_targets"] for d in anomalous)
    described = 0
    for d in anomalous:
        ann = anns[f"train/{d['video_id']}"]
        for t in d["anomaly_targets"]:
            tid = next(i["track_id"] for r in d["records"] + d["focus_records"] for i in r["instances"]
                       if r["frame_index"] == t["timeline"]["start_frame"] and i["box"] == t["timeline"]["boxes"][0][1:])
            frames = sorted(int(f) for f in next(o for o in ann["objects"] if o["track_id"] == tid)["boxes"])
            flagged = [fr["index"] for fr in ann["frames"] for ob in fr["objects"]
                       if ob["track_id"] == tid and ob["anomalous"]]
            assert (t["trajectory"]["start_frame"], t["trajectory"]["end_frame"]) == (frames[0], frames[-1])
            assert t["anomaly_span"] == [flagged[0], flagged[-1]]
            described += flagged[0] > frames[0]  # in view before its anomaly
    assert described >= 5


def test_the_record_check_catches_false_statements():
    record = {"direction": "right", "speed": 2.0, "speed_class": "fast", "entry": "left", "exit": "end",
              "displacement_px": [100.0, -2.0], "size_px": 40.0}
    good = "It enters from the left at 0.4 s, moves from left to right fast, and is still in view at the end."
    assert check_against_record(good, record) == 4
    assert check_against_record("moving to the right at walking pace", dict(record, speed=1.25)) == 2  # margin
    for bad in ["It moves from right to left fast.", "It moves from left to right slowly.", "It hardly moves.",
                "It comes in from the right side at 0.4 s.", "It vanishes in the centre at 2.0 s.",
                "It moves towards the upper right fast."]:
        with pytest.raises(AssertionError):
            check_against_record(bad, record)


# --------------------------------------------------------------------------- anomaly-focused pass


def _ped2(frame: int):
    import cv2

    img = cv2.imread(f"{DATA}/ucsd_ped2/testing/frames/01/{frame:03d}.jpg")[:, :, ::-1].copy()
    mask = cv2.imread(f"{DATA}/ucsd_ped2/testing/masks/01/{frame:03d}.png", 0) > 0
    return img, mask


@pytest.mark.shared_data("ucsd_ped2")
def test_mask_and_blur_on_real_footage_keeps_the_anomaly_sharp():
    import cv2

    from datasets_builder.enhance import mask_and_blur

    img, mask = _ped2(120)
    out = mask_and_blur(img, mask, sigma=9, dilate_px=5)
    assert out.shape == img.shape and out.dtype == np.uint8 and img is not out
    assert np.array_equal(out[mask], img[mask])
    grey_in, grey_out = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
    far = cv2.dilate(mask.astype(np.uint8), np.ones((41, 41), np.uint8)) == 0
    sharp_in = cv2.Laplacian(grey_in, cv2.CV_64F)[far].var()
    sharp_out = cv2.Laplacian(grey_out, cv2.CV_64F)[far].var()
    assert sharp_out < sharp_in / 10  # the background lost its detail
    assert cv2.Laplacian(grey_out, cv2.CV_64F)[mask].var() == pytest.approx(
        cv2.Laplacian(grey_in, cv2.CV_64F)[mask].var(), rel=0.35)  # the cyclist did not


@pytest.mark.shared_data("ucsd_ped2")
def test_anomaly_pass_keeps_only_masked_targets_and_rejects_weak_timelines():
    from datasets_builder.enhance import EnhanceConfig, anomaly_focused_pass
    from datasets_builder.extract import ExtractionBackend, FrameRecord, FrameTask, Instance

    frames = list(range(100, 130))
    data = {f: _ped2(f) for f in frames}
    seen_images = []

    class FakeVLM(ExtractionBackend):
        """Sees the masked target (from the mask's box), a pedestrian elsewhere, and now and then a ghost."""

        name = "fake"

        def extract(self, task: FrameTask) -> FrameRecord:
            seen_images.append(task.image)
            ys, xs = np.nonzero(data[task.frame_index][1])
            inst = [Instance("cyclist", (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), {"color": "dark"},
                             confidence=0.9),
                    Instance("person", (10, 100, 25, 140), {}, confidence=0.9)]
            if task.frame_index == 111:  # a one-frame ghost on the anomaly
                inst.append(Instance("dog", (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), confidence=0.9))
            return FrameRecord(task.video_id, task.frame_index, task.timestamp, task.width, task.height, inst,
                               self.name)

    tasks = [FrameTask("01", f, f / 25, 360, 240, image=data[f][0]) for f in frames]
    masks = {f: data[f][1] for f in frames if f % 5}  # every fifth frame has no mask: skipped
    res = anomaly_focused_pass(tasks, masks, FakeVLM(), EnhanceConfig(min_observations=3))
    assert res.masked_frames == len(masks) == len(seen_images)
    for img, f in zip(seen_images, sorted(masks)):
        assert not np.array_equal(img, data[f][0]) and np.array_equal(img[data[f][1]], data[f][0][data[f][1]])
    assert len(res.timelines) == 1
    tl = res.timelines[0]
    assert tl.category == "cyclist" and tl.anomalous and len(tl.observations) == len(masks)
    assert all(inst.category != "person" for r in res.records for inst in r.instances)
    assert [why for t, why in res.rejected if t.category == "dog"] == ["seen in 1 frame(s) < 3"]


def _stick_figure(mask: np.ndarray, box) -> None:
    """Draw a person's silhouette into its box: head (apart from the body), body, arms and legs, about a
    quarter of the box's pixels, as thin as a small person at a distance."""
    import cv2

    x1, y1, x2, y2 = (int(round(v)) for v in box)
    h, cx, r = y2 - y1, (x1 + x2) // 2, (y2 - y1) // 10
    m = mask.view(np.uint8)
    cv2.circle(m, (cx, y1 + r), r, 1, -1)
    cv2.line(m, (cx, y1 + 2 * r + 3), (cx, y1 + h // 2), 1, 3)  # 2 px below the head
    cv2.line(m, (cx, y1 + 2 * r + 6), (x1 + 1, y1 + h // 2), 1, 2)
    cv2.line(m, (cx, y1 + 2 * r + 6), (x2 - 2, y1 + h // 2), 1, 2)
    cv2.line(m, (cx, y1 + h // 2), (x1 + 1, y2 - 2), 1, 3)
    cv2.line(m, (cx, y1 + h // 2), (x2 - 2, y2 - 2), 1, 3)


@pytest.mark.shared_data("ucsd_ped2")
def test_mask_cover_is_judged_by_the_mask_regions_extent_not_its_pixel_count():
    import cv2

    from datasets_builder.enhance import mask_box_overlap, mask_region_boxes

    mask = np.zeros((H, W), bool)
    walker = (100, 60, 124, 140)
    _stick_figure(mask, walker)
    lying = (180, 150, 260, 176)  # a fallen person: a diagonal body across a flat box
    cv2.line(mask.view(np.uint8), (181, 174), (258, 152), 1, 5)
    assert cv2.connectedComponents(mask.view(np.uint8))[0] - 1 >= 2  # the head is apart from the body
    ext = mask_region_boxes(mask)
    for box in (walker, lying):
        assert mask_box_overlap(mask, box) < 0.45  # the pixel share: under the old timeline filter's 0.5
        assert mask_box_overlap(ext, box) == 1.0
    assert mask_box_overlap(ext, (118, 60, 142, 140)) == pytest.approx(0.25, abs=0.05)  # brushing its side
    assert mask_box_overlap(ext, (10, 10, 40, 90)) == 0.0  # on the blurred background
    _, real = _ped2(120)  # a real mask: the cyclist fills only part of its box, the extent all of it
    ys, xs = np.nonzero(real)
    box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert mask_box_overlap(real, box) < 0.7 and mask_box_overlap(mask_region_boxes(real), box) == 1.0


def _faller_item(masks: bool, labels: bool) -> VideoItem:
    """A walker in view from the first frame who runs (anomalous) from frame 15 on, masked as a stick figure,
    and a passer-by walking alongside with a quarter of its box inside the runner's."""

    def ann(f: int) -> list[GTObject]:
        x = 20 + 3 * f if f < 15 else 65 + 8 * (f - 15)
        return [GTObject("1", "person", (x, 60, x + 24, 140), {"upper_color": "red"}, f >= 15),
                GTObject("2", "person", (x + 18, 64, x + 42, 144), {"upper_color": "blue"}, False)]

    def mask_of(f: int) -> np.ndarray:
        m = np.zeros((H, W), bool)
        for o in ann(f):
            if o.anomalous:
                _stick_figure(m, o.box)
        return m

    return VideoItem(video_id="faller", split="test", video="/data/faller", fps=25.0, width=W, height=H,
                     num_frames=40, annotations=ann, masks=mask_of if masks else None,
                     frame_labels=[int(f >= 15) for f in range(40)] if labels else None)


class BoxOnly(GroundTruthBackend):
    """Boxes and looks without anomaly flags, as a model backend gives them: the mask decides alone."""

    name = "boxes"

    def extract(self, task):
        rec = super().extract(task)
        for inst in rec.instances:
            inst.anomalous, inst.track_id = None, None
        return rec


@pytest.mark.parametrize("backend, masks", [(GroundTruthBackend(), True), (BoxOnly(), True),
                                            (GroundTruthBackend(), False)])
def test_an_anomaly_target_is_described_over_its_whole_track_and_asked_when_over_its_anomaly(
        tmp_path, backend, masks):
    out = tmp_path / "out"
    build_corpus([_faller_item(masks, labels=False)], backend, CorpusConfig(out_dir=out, progress=False))
    dump = json.loads((out / "videos" / "test" / "faller.json").read_text())
    assert len(dump["anomaly_targets"]) == 1  # the runner, not the passer-by brushing its mask
    target = dump["anomaly_targets"][0]
    assert target["timeline"]["attributes"]["upper_color"] == "red"
    assert target["anomaly_focused"] is masks
    assert (target["trajectory"]["start_frame"], target["trajectory"]["end_frame"]) == (0, 39)
    assert target["trajectory"]["entry"] == "start" and target["anomaly_span"] == [15, 39]
    assert [t["timeline"]["attributes"]["upper_color"] for t in dump["normal_targets"]] == ["blue"]
    by_id = {s["id"]: s for s in read_jsonl(out / "sft.jsonl")}
    traj = by_id["test/faller/trajectory"]["conversation"][-1]["content"]
    assert IN_VIEW_AT_START.search(traj) and not ENTRY.search(traj) and not APPEARS_INSIDE.search(traj), traj
    when = by_id["test/faller/temporal"]["conversation"][-1]["content"]
    assert "0.6 s" in when and "1.6 s" in when and "0.0 s" not in when, when  # frames 15..39, unlabelled clip


def test_the_builder_does_not_import_the_model_pipeline():
    code = ("import sys, datasets_builder.corpus, datasets_builder.enhance, tvad_chat.commands.corpus; "
            "bad = [m for m in sys.modules if m.startswith(('tvad_chat.pipeline', 'torch', 'transformers'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.shared_data("ucsd_ped2")
def test_ped2_with_ground_truth_masks_end_to_end(tmp_path):
    """`tvad build-corpus --source ped2` on the real test clips: statements checked against the masks."""
    import cv2

    from tvad_chat.cli import main

    out = tmp_path / "ped2"
    assert main(["build-corpus", "--source", "ped2", "--backend", "gt", "--out", str(out), "--no-progress"]) == 0
    refs = {r["id"]: r for r in read_jsonl(out / "eval_refs.jsonl")}
    assert refs["test/01/judgement"]["references"][0] == "Yes" and refs["test/04/judgement"]["references"][0] == "Yes"
    assert "test/01/target" not in refs  # masks say nothing about looks: no appearance items
    labels = json.loads((DATA / "ucsd_ped2/testing/frame_labels.json").read_text())
    checked = 0
    for s in read_jsonl(out / "sft.jsonl"):
        vid = s["video_id"].split("/")[1]
        answer = s["conversation"][-1]["content"]
        if s["meta"]["kind"] == "temporal":
            first = labels[vid].index(1)
            last = len(labels[vid]) - 1 - labels[vid][::-1].index(1)
            assert f"{first / PED2_FPS:.1f} s" in answer and f"{last / PED2_FPS:.1f} s" in answer
        if s["meta"]["kind"] != "trajectory" or s["meta"]["question_type"] != "dialogue":
            continue
        track = {}
        for f, lab in enumerate(labels[vid]):
            m = cv2.imread(str(DATA / f"ucsd_ped2/testing/masks/{vid}/{f:03d}.png"), 0) > 0
            if lab and m.any():
                ys, xs = np.nonzero(m)
                track[f] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        for text in [answer] + refs[s["id"]]["references"]:
            checked += check_trajectory_statement(text, track, PED2_FPS, 360, 240, person=False)  # "object"
    assert checked >= 12
    traj01 = refs["test/01/trajectory"]["references"][0]
    # the bicycle, first masked at frame index 60 (frame 61 of the folder)
    assert f"enters from the left at {60 / PED2_FPS:.1f} s" in traj01 and "from left to right" in traj01


def test_a_video_whose_every_frame_is_rejected_is_counted_in_the_summary(tmp_path):
    """The summary's frame counts include a failed video's rejected frames (not 0 beside 'every frame rejected')."""

    class Refusing(GroundTruthBackend):
        def extract(self, task):
            record = super().extract(task)
            return dataclasses.replace(record, ok=False, error="unreadable: the model said nothing")

    item = make_item(0)
    s = build_corpus([item], Refusing(), CorpusConfig(out_dir=tmp_path / "out", progress=False))
    assert s.videos_failed == 1 and s.videos_done_now == 0
    assert s.frames_extracted == s.frames_rejected > 0
    assert s.reject_reasons == {"unreadable": s.frames_rejected}
