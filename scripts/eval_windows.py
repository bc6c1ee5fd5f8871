"""Yes/No and temporal grounding of the grounded answers on short windows of real benchmark footage.

    .venv/bin/python scripts/eval_windows.py --out /tmp/eval_windows.json [--work /tmp/windows] [--data DIR]

Windows of 3-4 s (``--seconds``, default 3.5, every ``--stride`` seconds) are cut from the test clips in
../shared/data (UCSD Ped2 test 01 and 04 as frame folders at 10 fps; CUHK Avenue test 08 and 21 videos at
25 fps): a window is anomalous when at least 1 s of it is labelled anomalous in frame_labels.json, normal when
no frame of it is, and left out (ambiguous) otherwise. A normal stretch of a test clip too short for a full
window but at least 3 s long gives one window of its own length; a clip shorter than a window is one window
(Avenue 08 is 1.44 s, 21 is 3.04 s). Normal windows also come from the training clips (Ped2 training
folders, Avenue training videos; ``--train-per-clip`` evenly spaced windows per clip). Ped2 windows are
frame folders (the JPEGs copied); Avenue windows are the original video when the window is the whole clip,
otherwise an H.264 mp4 written with PyAV.

Every window goes through the path ``tvad ask VIDEO --json`` runs: a ChatEngine with grounded answers and
``--profile auto``, the judgement question, then ``set_sensitivity`` to each of the profile's operating points
(events re-decided, nothing re-analysed). Reported: Yes/No accuracy and balanced accuracy per operating point,
temporal IoU on the anomalous windows, and how many windows the background matching gave the right profile.

The training clips are the footage the shipped profiles were calibrated on, so their windows are in-sample
for the profiles (optimistic); the figures are also given with only the normal windows of the test clips.
Nothing here tunes anything: the windows are test data.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tvad_chat.chat import JUDGEMENT_QUESTION, ChatEngine, EngineConfig  # noqa: E402
from tvad_chat.video import frame_files  # noqa: E402

PED2_FPS = 10.0  # Ped2 frame folders were recorded at 10 fps
MIN_ANOMALOUS_S = 1.0  # a window with at least this much labelled anomaly is anomalous
MIN_WINDOW_S = 3.0
IOU_LEVELS = (0.3, 0.5, 0.7)
TIOU_CONVENTION = ("temporal IoU (VAU-Bench/VAGU convention): the union of the predicted event intervals against "
                   "the union of the labelled anomalous frames, one IoU per anomalous window, counted on the "
                   "analysed frames (each frame stands for 1/fps s; an event covers its first to its last frame); "
                   "a window with no predicted event scores 0; R@k = share of anomalous windows with tIoU >= k")
PROFILE_OF = {"ucsd_ped2": "ucsd_ped2", "cuhk_avenue": "cuhk_avenue"}  # dataset folder -> shipped profile


@dataclass
class Window:
    """A stretch of one source clip: frames ``first``..``last`` (inclusive, 0-based) and their labels."""

    dataset: str  # ucsd_ped2 | cuhk_avenue
    split: str  # testing | training
    clip: str  # "01" or "12" (the clip's name in its folder)
    source: str  # frame folder or video file
    fps: float
    first: int
    last: int
    labels: list[int]  # 0/1 per frame of the window
    whole_clip: bool

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.split}/{self.clip}@{self.first}-{self.last}"

    @property
    def seconds(self) -> float:
        return (self.last - self.first + 1) / self.fps

    @property
    def anomalous_seconds(self) -> float:
        return sum(self.labels) / self.fps

    @property
    def kind(self) -> str:
        """anomalous | normal | ambiguous (some anomaly, less than MIN_ANOMALOUS_S)."""
        if self.anomalous_seconds >= MIN_ANOMALOUS_S:
            return "anomalous"
        return "normal" if not any(self.labels) else "ambiguous"

    @property
    def group(self) -> str:
        """anomalous | test-normal | training-normal."""
        return "anomalous" if self.kind == "anomalous" else f"{'test' if self.split == 'testing' else 'training'}-normal"


def spans(count: int, fps: float, seconds: float, stride: float, labels: list[int]) -> list[tuple[int, int]]:
    """(first, last) frame spans of one test clip: sliding windows, plus each normal stretch of MIN_WINDOW_S or
    more that no sliding window lies in; the whole clip when it is shorter than a window."""
    length, step = int(round(seconds * fps)), max(1, int(round(stride * fps)))
    if count <= length:
        return [(0, count - 1)]
    out = [(s, s + length - 1) for s in range(0, count - length + 1, step)]
    normal = np.concatenate([[False], np.asarray(labels) == 0, [False]])
    starts = np.flatnonzero(~normal[:-1] & normal[1:])
    ends = np.flatnonzero(normal[:-1] & ~normal[1:]) - 1
    for a, b in zip(starts, ends, strict=True):
        covered = any(a <= first and last <= b for first, last in out)
        if not covered and (b - a + 1) >= round(MIN_WINDOW_S * fps):
            out.append((int(a), int(b)))
    return sorted(out)


def spread(count: int, fps: float, seconds: float, per_clip: int) -> list[tuple[int, int]]:
    """Up to ``per_clip`` non-overlapping windows spread evenly over a clip of ``count`` frames."""
    length = int(round(seconds * fps))
    fits = min(per_clip, count // length)
    if fits == 0:
        return []
    gap = (count - fits * length) / (fits + 1)
    return [(int(gap * (i + 1) + length * i), int(gap * (i + 1) + length * i) + length - 1) for i in range(fits)]


def video_frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def windows(data: Path, seconds: float, stride: float, per_clip: int) -> list[Window]:
    """Every window of the test clips (anomalous, normal and ambiguous) and the training clips' normal ones."""
    out: list[Window] = []
    ped2, avenue = data / "ucsd_ped2", data / "cuhk_avenue"
    ped2_labels = json.loads((ped2 / "testing" / "frame_labels.json").read_text())
    for clip in ("01", "04"):
        folder = ped2 / "testing" / "frames" / clip
        labels = [int(v) for v in ped2_labels[clip]]
        for a, b in spans(len(frame_files(folder)), PED2_FPS, seconds, stride, labels):
            out.append(Window("ucsd_ped2", "testing", clip, str(folder), PED2_FPS, a, b, labels[a:b + 1],
                              (a, b) == (0, len(labels) - 1)))
    avenue_labels = json.loads((avenue / "testing" / "frame_labels.json").read_text())
    for clip in ("08", "21"):
        video = avenue / "testing_videos" / f"{clip}.avi"
        labels = [int(v) for v in avenue_labels[clip]]
        with av.open(str(video)) as container:
            fps = float(container.streams.video[0].average_rate)
        for a, b in spans(len(labels), fps, seconds, stride, labels):
            out.append(Window("cuhk_avenue", "testing", clip, str(video), fps, a, b, labels[a:b + 1],
                              (a, b) == (0, len(labels) - 1)))
    for folder in sorted(p for p in (ped2 / "training" / "frames").iterdir() if p.is_dir()):
        count = len(frame_files(folder))
        for a, b in spread(count, PED2_FPS, seconds, per_clip):
            out.append(Window("ucsd_ped2", "training", folder.name, str(folder), PED2_FPS, a, b, [0] * (b - a + 1),
                              False))
    for video in sorted((avenue / "training_videos").glob("*.avi")):
        with av.open(str(video)) as container:
            fps = float(container.streams.video[0].average_rate)
        count = video_frame_count(video)
        for a, b in spread(count, fps, seconds, per_clip):
            out.append(Window("cuhk_avenue", "training", video.stem, str(video), fps, a, b, [0] * (b - a + 1),
                              (a, b) == (0, count - 1)))
    return out


def cut(window: Window, work: Path) -> Path:
    """The window as a clip of its own: a frame folder (copied frames), the source video when the window is the
    whole clip, or an mp4 of its frames (H.264, written with PyAV)."""
    source = Path(window.source)
    target = work / re.sub(r"[^A-Za-z0-9_.-]+", "_", window.name)
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for n, frame in enumerate(frame_files(source)[window.first:window.last + 1]):
            shutil.copyfile(frame, target / f"{n:03d}{frame.suffix}")
        return target
    if window.whole_clip:
        return source
    target = target.with_suffix(".mp4")
    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        stream = writer.add_stream("libx264", rate=int(round(window.fps)), options={"crf": "16"})
        stream.pix_fmt = "yuv420p"
        stream.width, stream.height = reader.streams.video[0].width, reader.streams.video[0].height
        for n, frame in enumerate(reader.decode(video=0)):
            if n > window.last:
                break
            if n < window.first:
                continue
            image = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            writer.mux(stream.encode(image))
        writer.mux(stream.encode())
    return target


@dataclass
class Result:
    window: str
    dataset: str
    group: str
    seconds: float
    anomalous_seconds: float
    clip_path: str
    profile: str | None  # the profile that decided (None: uncalibrated or no analysis)
    right_profile: bool
    default_point: str | None
    answer: str  # the answer to the judgement question at the default point
    judgement: dict[str, str | None] = field(default_factory=dict)  # point -> yes | no (None: no analysis)
    events: dict[str, list[list[float]]] = field(default_factory=dict)  # point -> [[start, end], ...] seconds
    tiou: dict[str, float] = field(default_factory=dict)  # point -> tIoU (anomalous windows)


def said(answer: str) -> str | None:
    found = re.match(r"\s*(yes|no)\b", answer.lower())
    return found.group(1) if found else None


def temporal_iou(frame_times: np.ndarray, frame_labels: np.ndarray, events: list[list[float]]) -> float:
    """Union of predicted intervals against union of labelled frames, over the analysed frames."""
    predicted = np.zeros(len(frame_times), bool)
    for start, end in events:
        predicted |= (frame_times >= start - 1e-6) & (frame_times <= end + 1e-6)
    truth = frame_labels.astype(bool)
    union = int((predicted | truth).sum())
    return float((predicted & truth).sum()) / union if union else 0.0


def evaluate(engine: ChatEngine, window: Window, clip: Path) -> Result:
    """The window through `tvad ask --json`'s path: judgement at the default point, then at every point."""
    session = engine.new_session()
    engine.load_video(session, clip)
    answer = engine.ask(session, JUDGEMENT_QUESTION)
    scene = session.scene
    expected = PROFILE_OF[window.dataset]
    result = Result(window.name, window.dataset, window.group, round(window.seconds, 3),
                    round(window.anomalous_seconds, 3), str(clip), scene.profile_name if scene else None,
                    scene is not None and scene.profile_name == expected,
                    session.answerer.point if session.answerer else None, answer)
    if session.answerer is None or scene is None:
        engine.close_session(session.id)
        return result
    times = scene.times
    labels = np.array([window.labels[f.index] for f in scene.frames])
    for point in scene.thresholds:
        engine.set_sensitivity(session, point)
        summary = session.answerer.summary()
        spoken = said(engine.ask(session, JUDGEMENT_QUESTION))
        if spoken != summary["judgement"]:
            raise RuntimeError(f"{window.name} at {point}: the answer says {spoken!r}, the summary "
                               f"{summary['judgement']!r}")
        result.judgement[point] = spoken
        result.events[point] = [[e["start"], e["end"]] for e in summary["events"]]
        if window.kind == "anomalous":
            result.tiou[point] = round(temporal_iou(times, labels, result.events[point]), 4)
    engine.close_session(session.id)
    return result


@dataclass
class Figures:
    windows: int
    anomalous: int
    normal: int
    accuracy: float
    balanced_accuracy: float
    detected: float  # share of anomalous windows answered yes
    quiet: float  # share of normal windows answered no


def figures(results: list[Result], point: str | None, groups: tuple[str, ...]) -> Figures:
    """Yes/No figures over the results of these groups, at ``point`` (None: each window's default point)."""
    chosen = [r for r in results if r.group in groups]
    positive = [r for r in chosen if r.group == "anomalous"]
    negative = [r for r in chosen if r.group != "anomalous"]

    def yes(r: Result) -> bool:
        return r.judgement.get(point or r.default_point or "") == "yes"

    hits = sum(yes(r) for r in positive)
    quiet = sum(not yes(r) for r in negative)
    tpr = hits / len(positive) if positive else float("nan")
    tnr = quiet / len(negative) if negative else float("nan")
    return Figures(len(chosen), len(positive), len(negative), round(100 * (hits + quiet) / max(len(chosen), 1), 1),
                   round(100 * (tpr + tnr) / 2, 1), round(100 * tpr, 1), round(100 * tnr, 1))


def grounding(results: list[Result], point: str | None) -> dict[str, float]:
    ious = [r.tiou.get(point or r.default_point or "", 0.0) for r in results if r.group == "anomalous"]
    out = {"windows": len(ious), "mean_tiou": round(100 * float(np.mean(ious)), 1) if ious else float("nan")}
    for level in IOU_LEVELS:
        out[f"R@{level}"] = round(100 * float(np.mean([v >= level for v in ious])), 1) if ious else float("nan")
    return out


ALL = ("anomalous", "test-normal", "training-normal")
TEST_ONLY = ("anomalous", "test-normal")


def report(results: list[Result], skipped: list[Window]) -> dict:
    points = sorted({p for r in results for p in r.judgement}, key=lambda p: -float(p.split("/")[0]))
    rows = {}
    for point in [None, *points]:
        key = "default" if point is None else point
        rows[key] = {
            "all": asdict(figures(results, point, ALL)),
            "test_clips_only": asdict(figures(results, point, TEST_ONLY)),
            "training_normal_quiet": figures(results, point, ("training-normal",)).quiet,
            "test_normal_quiet": figures(results, point, ("test-normal",)).quiet,
            "grounding": grounding(results, point),
            "by_dataset": {d: asdict(figures([r for r in results if r.dataset == d], point, ALL))
                           for d in PROFILE_OF},
        }
    return {
        "convention": TIOU_CONVENTION,
        "note": "windows of the training clips are in the shipped profiles' calibration footage (in-sample, "
                "optimistic); 'test_clips_only' counts only the normal windows of the test clips",
        "windows": len(results),
        "groups": {g: sum(r.group == g for r in results) for g in ALL},
        "right_profile": sum(r.right_profile for r in results),
        "profiles": {f"{d} -> {p}": sum(r.dataset == d and r.profile == p for r in results)
                     for d in PROFILE_OF for p in sorted({str(r.profile) for r in results})
                     if any(r.dataset == d and str(r.profile) == p for r in results)},
        "skipped_ambiguous": [w.name for w in skipped],
        "points": rows,
        "results": [asdict(r) for r in results],
    }


def print_report(summary: dict) -> None:
    print(f"{summary['windows']} windows: {summary['groups']}; ambiguous, left out: "
          f"{', '.join(summary['skipped_ambiguous']) or 'none'}")
    print(f"profile auto-matching: {summary['right_profile']}/{summary['windows']} right ({summary['profiles']})")
    print()
    for r in summary["results"]:
        point = r["default_point"] or "-"
        events = " ".join(f"{a:.1f}-{b:.1f}" for a, b in r["events"].get(point, [])) or "none"
        tiou = f"{r['tiou'][point]:.2f}" if point in r["tiou"] else "-"
        print(f"  {r['window']:<34} {r['group']:<16} {r['seconds']:4.2f}s anom {r['anomalous_seconds']:4.2f}s "
              f"{str(r['profile']):<12} {str(r['judgement'].get(point)):<4} tIoU {tiou:<5} events {events}")
    print()
    header = (f"{'point':<9} {'n':>3} {'acc':>6} {'bal':>6} {'TPR':>6} {'TNR tr':>7} {'TNR te':>7} | "
              f"{'n te':>4} {'acc te':>6} {'bal te':>6} | {'mtIoU':>6} {'R@.3':>6} {'R@.5':>6} {'R@.7':>6}")
    print(header)
    print("-" * len(header))
    for key, row in summary["points"].items():
        a, t, g = row["all"], row["test_clips_only"], row["grounding"]
        print(f"{key:<9} {a['windows']:>3} {a['accuracy']:>6.1f} {a['balanced_accuracy']:>6.1f} {a['detected']:>6.1f} "
              f"{row['training_normal_quiet']:>7.1f} {row['test_normal_quiet']:>7.1f} | {t['windows']:>4} "
              f"{t['accuracy']:>6.1f} {t['balanced_accuracy']:>6.1f} | {g['mean_tiou']:>6.1f} {g['R@0.3']:>6.1f} "
              f"{g['R@0.5']:>6.1f} {g['R@0.7']:>6.1f}")
    print()
    print("default = each profile's default operating point. acc/bal: Yes/No accuracy and balanced accuracy (%) over "
          "all windows; TPR: anomalous windows answered yes; TNR tr / te: normal windows answered no, from the "
          "training clips (in the profiles' calibration footage: optimistic) / from the test clips; 'te' columns: "
          "anomalous windows against the test-clip normal windows only.")
    print(summary["convention"] + ".")
    for d, row in summary["points"]["default"]["by_dataset"].items():
        print(f"{d} at the default point: {row['windows']} windows, acc {row['accuracy']:.1f}, balanced "
              f"{row['balanced_accuracy']:.1f}, TPR {row['detected']:.1f}, TNR {row['quiet']:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("TVAD_SHARED_DATA",
                                                                       ROOT.parent / "shared" / "data")))
    parser.add_argument("--out", type=Path, required=True, help="JSON file with the figures and every window")
    parser.add_argument("--work", type=Path, default=None, help="where the windows are written (default: a temp "
                                                                "folder, removed afterwards)")
    parser.add_argument("--seconds", type=float, default=3.5, help="window length (3-4 s)")
    parser.add_argument("--stride", type=float, default=1.0, help="seconds between test-clip windows")
    parser.add_argument("--train-per-clip", type=int, default=1, help="normal windows per training clip")
    args = parser.parse_args(argv)
    if not 3.0 <= args.seconds <= 4.0:
        parser.error("--seconds must be between 3 and 4")
    logging.basicConfig(level=logging.WARNING)
    every = windows(args.data, args.seconds, args.stride, args.train_per_clip)
    kept = [w for w in every if w.kind != "ambiguous"]
    skipped = [w for w in every if w.kind == "ambiguous"]
    engine = ChatEngine(EngineConfig(answers="grounded", profile="auto", folder_fps=PED2_FPS))
    work = args.work or Path(tempfile.mkdtemp(prefix="tvad-windows-"))
    try:
        results = []
        for n, window in enumerate(kept, start=1):
            results.append(evaluate(engine, window, cut(window, work)))
            print(f"[{n}/{len(kept)}] {window.name}: {results[-1].answer[:60]}", file=sys.stderr, flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = report(results, skipped)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print_report(summary)
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
