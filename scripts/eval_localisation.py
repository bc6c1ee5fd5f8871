"""How well a scene profile outlines what is unusual, and how many boxes it raises on normal footage.

    .venv/bin/python scripts/eval_localisation.py [--work /tmp/eval_localisation] [--per-type 3] [--json OUT]
                                                  [--no-synth] [--no-real] [--no-plant]

(a) SynthCampus, with ground truth (never the labelled test clips of ../shared/data): ``--normal`` normal clips
of one fixed camera (scene ``--scene``, 64 frames of 320x192 at 10 fps, as tests/test_scene_profiles.py)
calibrate a profile; ``--per-type`` clips of every anomaly type of that scene are analysed with it exactly as
`tvad analyze` does. Clips are written once under ``--work`` and reused. Measured, with the project's
evaluators (tvad_chat.eval.frames / heatmaps / pixels, the same calls as `tvad eval scene`):

- ``AUC``: frame micro-AUC of the smoothed frame scores;
- ``RBDC``, ``TBDC``: every reported box with a score > 0, ranked by score, against the connected regions
  of the anomaly masks (IoU >= 0.1; false positives per frame up to 1);
- ``pxAUROC``, ``pxF1``: pooled pixel AUROC and max-F1 of the 8-bit heat; ``taoF1``: the TAO protocol's F1;
- at the profile's default operating point (boxes whose score is above its threshold), per mask region:
  ``hit``: share of regions some box overlaps with IoU >= 0.1, ``IoU.5``: share with IoU >= 0.5, ``mIoU``:
  mean best IoU over the regions hit; ``FP/min``: boxes above the threshold that overlap no region with
  IoU >= 0.1, per minute of these clips.

(b) Held-out normal footage of real cameras: the training clips of UCSD Ped2 (16 frame folders at 10 fps)
and CUHK Avenue (2 videos), leave one clip out: a profile is fitted on the others (measured once,
tvad_chat.scene.calibrate.measure_footage / fit_profile; Avenue's single remaining clip is under the usual
10 s, so it is fitted with ``min_seconds=5``) and the held-out clip analysed with it. Measured: ``box/min``,
boxes above the default threshold per minute (every one is a false positive: the footage is normal),
``event/min``, events at the default point per minute, and the analysis speed (frames/s, with the load
average: the machine is shared).

(c) Anomalies planted into that held-out footage (no labelled clip needed): each held-out clip's most typical
lone walker (a box about one expected height tall and half as wide, away from the frame's edges) is cut out
against the clip's background and slid left to right along its own foot row, from a third of the clip on,
through 5-95 % of the width, analysed with the same leave-one-clip-out profile. Kinds (``PLANTS``): ``fast
walker``, at twice the 99th percentile of the normal objects' speed (in its own heights per second); ``wide,
walking pace``, stretched 2.5 times wider (a cart) at half that speed. Measured per camera and kind: ``AUC``,
frame micro-AUC of the smoothed frame scores (planted frames against the clip's other frames), ``hit`` and
``IoU.5``, share of planted frames with a box above the default threshold overlapping the sprite's box with
IoU >= 0.1 and >= 0.5.

Output: one markdown table per part (synth: one row for all clips, then one per anomaly type; real: one
row per camera), and with ``--json`` every number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets_builder.synth.behaviours import ANOMALY_TYPES  # noqa: E402
from datasets_builder.synth.generate import ClipConfig, generate_clip  # noqa: E402
from datasets_builder.synth.writer import ANNOTATION, write_clip  # noqa: E402
from tvad_chat.eval.frames import frame_auc  # noqa: E402
from tvad_chat.eval.heatmaps import mask_regions, object_metrics  # noqa: E402
from tvad_chat.eval.pixels import PixelFrame, PooledAccumulator, TaoAccumulator, choose_binning  # noqa: E402
from tvad_chat.motion import pairwise_iou  # noqa: E402
from tvad_chat.scene.analyze import heat_to_uint8  # noqa: E402
from tvad_chat.scene.calibrate import (  # noqa: E402
    CalibrationConfig,
    calibrate,
    clip_background,
    fit_profile,
    measure_footage,
)
from tvad_chat.scene.events import footage_seconds  # noqa: E402
from tvad_chat.scene.run import analyze_source, clip_analyzer  # noqa: E402
from tvad_chat.video import Clip, load_clip, probe, stream_clip  # noqa: E402

SEED = 11  # not the tests' seed: the evaluation's clips are its own
CAMERA = ClipConfig(frames=64, width=320, height=192, fps=10.0, fixed_camera=True)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HIT_IOU = 0.1  # RBDC's overlap
GOOD_IOU = 0.5


def _clip(work: Path, name: str, split: str, index: int, scene: str, event: str | None) -> Path:
    folder = work / scene / name
    if not (folder / ANNOTATION).is_file():
        write_clip(generate_clip(SEED, split, index, CAMERA, event=event, scene_name=scene), folder)
    return folder


def _load_average() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


# --------------------------------------------------------------------------- (a) SynthCampus


def synth_part(work: Path, scene: str, normal: int, per_type: int) -> dict:
    normals = [_clip(work, f"normal_{k}", "normal_train", k, scene, None) / "video.mp4" for k in range(normal)]
    profile = calibrate(normals, f"synth_{scene}")
    threshold = profile.point().threshold
    types = [t for t, (_, scenes) in ANOMALY_TYPES.items() if scene in scenes]
    binning = choose_binning([PixelFrame(np.zeros((1, 1), np.uint8), np.zeros((1, 1), bool))])
    pooled, tao = PooledAccumulator(binning), TaoAccumulator()
    scores, labels, detections = {}, {}, []
    per: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    seconds = 0.0
    for t, kind in enumerate(types):
        for k in range(per_type):
            folder = _clip(work, f"{kind}_{k}", "train", 1000 * t + k, scene, kind)
            annotation = json.loads((folder / ANNOTATION).read_text())
            masks = np.stack([cv2.imread(str(folder / "masks" / f"{i:06d}.png"), cv2.IMREAD_GRAYSCALE) > 127
                              for i in range(annotation["num_frames"])])

            def sink(index: int, heat: np.ndarray, masks: np.ndarray = masks, name: str = folder.name) -> None:
                frame = PixelFrame(heat_to_uint8(heat), masks[index], f"{name}/{index}")
                pooled.update(frame)
                tao.update(frame)

            analysis = analyze_source(profile, folder / "video.mp4", heat_sink=sink)
            seconds += footage_seconds(analysis.times)
            name = folder.name
            scores[name] = analysis.scores.tolist()
            labels[name] = [int(annotation["frame_labels"][f.index]) for f in analysis.frames]
            detections.append(([[(list(b.xyxy), b.score) for b in f.boxes if b.score > 0] for f in analysis.frames],
                               masks[[f.index for f in analysis.frames]]))
            regions = mask_regions(masks)
            for record in analysis.frames:
                above = np.array([b.xyxy for b in record.boxes if b.score > threshold], float).reshape(-1, 4)
                truth = np.array([box for _, box in regions[record.index]], float).reshape(-1, 4)
                if len(truth):
                    iou = pairwise_iou(above[:, None, :], truth[None, :, :], inclusive=True) if len(above) else \
                        np.zeros((0, len(truth)))
                    best = iou.max(axis=0) if len(above) else np.zeros(len(truth))
                    per[kind]["best"].extend(best.tolist())
                    false = (iou.max(axis=1) < HIT_IOU) if len(above) else np.zeros(0, bool)
                else:
                    false = np.ones(len(above), bool)
                per[kind]["false"].append(int(false.sum()))
            per[kind]["seconds"].append(footage_seconds(analysis.times))
    rows = {"all": _row(frame_auc(scores, labels), object_metrics(detections), pooled.compute(), tao.compute(),
                        [v for p in per.values() for v in p["best"]], sum(sum(p["false"]) for p in per.values()),
                        seconds)}
    for kind in types:
        rows[kind] = _row(None, None, None, None, per[kind]["best"], sum(per[kind]["false"]),
                          sum(per[kind]["seconds"]))
    return {"scene": scene, "threshold": threshold, "clips": len(types) * per_type, "rows": rows}


def _row(auc: dict | None, objects: dict | None, pixels: dict | None, tao: dict | None, best: list[float],
         false: int, seconds: float) -> dict:
    best_arr = np.asarray(best, float)
    hit = best_arr >= HIT_IOU
    row = {"regions": int(len(best_arr)), "hit": 100.0 * float(hit.mean()) if len(best_arr) else float("nan"),
           "iou.5": 100.0 * float((best_arr >= GOOD_IOU).mean()) if len(best_arr) else float("nan"),
           "miou": 100.0 * float(best_arr[hit].mean()) if hit.any() else float("nan"),
           "fp_per_min": false / max(seconds / 60.0, 1e-9)}
    if auc is not None:
        row.update({"auc": float(auc["micro_auc"])})
    if objects is not None:
        row.update({"rbdc": objects["rbdc"], "tbdc": objects["tbdc"]})
    if pixels is not None:
        row.update({"px_auroc": float(pixels["auroc"]), "px_f1": float(pixels["f1_max"])})
    if tao is not None:
        row.update({"tao_f1": float(tao["tao.f1"])})
    return row


def _synth_table(result: dict) -> str:
    cols = ("auc", "rbdc", "tbdc", "px_auroc", "px_f1", "tao_f1", "hit", "iou.5", "miou", "fp_per_min", "regions")
    names = ("AUC", "RBDC", "TBDC", "pxAUROC", "pxF1", "taoF1", "hit", "IoU.5", "mIoU", "FP/min", "regions")
    lines = [f"SynthCampus {result['scene']}: {result['clips']} clips, threshold {result['threshold']:.3f}",
             "| clips | " + " | ".join(names) + " |", "|---" * (len(cols) + 1) + "|"]
    for key, row in result["rows"].items():
        cells = [f"{row[c]:.0f}" if c == "regions" else (f"{row[c]:.1f}" if c in row else "") for c in cols]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- (b) real normal footage


def real_part(name: str, sources: list[Path], folder_fps: float | None, config: CalibrationConfig,
              plant: bool) -> dict:
    footage = measure_footage(sources, config, folder_fps=folder_fps)
    boxes = events = frames = 0
    seconds = analysed_s = 0.0
    planted: dict[str, list[dict]] = defaultdict(list)
    for k, source in enumerate(sources):
        profile = fit_profile(footage.subset([j for j in range(len(sources)) if j != k]), f"{name}_loo", config)
        threshold = profile.point().threshold
        start = time.perf_counter()
        analysis = analyze_source(profile, source, folder_fps=folder_fps)
        analysed_s += time.perf_counter() - start
        frames += len(analysis.frames)
        seconds += footage_seconds(analysis.times)
        boxes += sum(1 for f in analysis.frames for b in f.boxes if b.score > threshold)
        events += len(analysis.events())
        sprite = _sprite(source, folder_fps, analysis, config) if plant else None
        for kind in PLANTS if sprite is not None else ():
            planted[kind.name].append(_planted_clip(profile, source, folder_fps, sprite, kind))
    minutes = seconds / 60.0
    return {"camera": name, "clips": len(sources), "minutes": minutes, "box_per_min": boxes / minutes,
            "event_per_min": events / minutes, "fps": frames / analysed_s, "load": _load_average(),
            "planted": {kind: _planted_row(clips) for kind, clips in planted.items()}}


# --------------------------------------------------------------------------- (c) anomalies planted into held-out footage


@dataclass
class Plant:
    """A walker of the clip itself, cut out and slid across the frame along its own foot row."""

    name: str
    speed: float  # times the 99th percentile of the normal objects' speed (expected heights per second)
    widen: float  # its width is stretched by this (a cart, a vehicle)


PLANTS = (Plant("fast walker", 2.0, 1.0), Plant("wide, walking pace", 0.5, 2.5))


@dataclass
class Sprite:
    pixels: np.ndarray  # (h, w, 3) RGB, display pixels
    alpha: np.ndarray  # (h, w) float 0..1
    foot_row: int  # display row of its lower edge
    speed: float  # heights per second: the 99th percentile of the normal objects' speed


def _sprite(source: Path, folder_fps: float | None, analysis, config: CalibrationConfig) -> Sprite | None:
    """The clip's most typical lone walker (box about one expected height tall, a third to two thirds of
    that wide, away from the frame's edges), cut from the clip's background."""
    width, height = analysis.size
    best, best_cost = None, 0.5
    for record in analysis.frames:
        for b in record.boxes:
            x1, y1, x2, y2 = b.xyxy
            if x1 < 0.1 * width or x2 > 0.9 * width or y1 < 2 or y2 > height - 2:
                continue
            _, height_h, width_h = b.measures  # speed, height and width in expected heights
            cost = abs(height_h - 1.0) + abs(width_h - 0.5)
            if cost < best_cost:
                best, best_cost = (record.index, b.xyxy), cost
    if best is None:
        return None
    index, (x1, y1, x2, y2) = best
    frame = load_clip(source, num_frames=None, folder_fps=folder_fps, frame_indices=[index]).frames[0]
    background, _ = clip_background(source, width, config.background_samples, folder_fps)
    x1, y1, x2, y2 = int(x1), int(y1), int(np.ceil(x2)), int(np.ceil(y2))
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    changed = cv2.GaussianBlur(np.abs(grey - background), (5, 5), 0)[y1:y2, x1:x2] > config.objects.diff_threshold
    changed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
    if count < 2:
        return None
    mask = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0)
    speed = float(analysis.reference["speed"]["99.0"])
    return Sprite(frame[y1:y2, x1:x2].copy(), alpha, y2, speed)


def _planted_clip(profile, source: Path, folder_fps: float | None, sprite: Sprite, kind: Plant) -> dict:
    """The clip analysed with the sprite sliding left to right (from 5 % to 95 % of the width) from a third
    of the clip on: its smoothed frame scores, 0/1 labels (sprite in view), and per planted frame the best
    IoU of a box above the default threshold with the sprite's box."""
    h, w = sprite.alpha.shape
    w = max(2, int(round(w * kind.widen)))
    pixels = cv2.resize(sprite.pixels, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    alpha = cv2.resize(sprite.alpha, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    info = probe(source, folder_fps=folder_fps)
    start = info.num_frames // 3
    step_px = kind.speed * sprite.speed * h / (folder_fps or info.fps)  # display pixels per source frame
    y = sprite.foot_row - h
    truth: dict[int, tuple[int, int, int, int]] = {}

    def chunks() -> Iterator[Clip]:
        for chunk in stream_clip(source, folder_fps=folder_fps):
            frames = chunk.frames.copy()
            width = frames.shape[2]
            for j, index in enumerate(chunk.frame_indices):
                x = int(0.05 * width + (index - start) * step_px)
                if index >= start and x + w <= 0.95 * width:
                    region = frames[j, y:y + h, x:x + w].astype(np.float32)
                    frames[j, y:y + h, x:x + w] = (alpha * pixels + (1 - alpha) * region + 0.5).astype(np.uint8)
                    truth[int(index)] = (x, y, x + w, y + h)
            yield dataclasses.replace(chunk, frames=frames)

    analysis = clip_analyzer(profile, source, folder_fps).run(chunks())
    threshold = profile.point().threshold
    best = []
    for record in analysis.frames:
        if record.index in truth:
            above = np.array([b.xyxy for b in record.boxes if b.score > threshold], float).reshape(-1, 4)
            iou = pairwise_iou(above, np.array([truth[record.index]], float), inclusive=True)
            best.append(float(iou.max()) if len(above) else 0.0)
    return {"scores": analysis.scores.tolist(), "labels": [int(f.index in truth) for f in analysis.frames],
            "best": best}


def _planted_row(clips: list[dict]) -> dict:
    auc = frame_auc({str(k): c["scores"] for k, c in enumerate(clips)},
                    {str(k): c["labels"] for k, c in enumerate(clips)})
    best = np.array([v for c in clips for v in c["best"]], float)
    return {"clips": len(clips), "frames": int(len(best)), "auc": float(auc["micro_auc"]),
            "hit": 100.0 * float((best >= HIT_IOU).mean()) if len(best) else float("nan"),
            "iou.5": 100.0 * float((best >= GOOD_IOU).mean()) if len(best) else float("nan")}


def _real_table(rows: list[dict]) -> str:
    lines = ["Held-out normal footage (leave one clip out)",
             "| camera | clips | minutes | box/min | event/min | analysis frames/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['camera']} | {r['clips']} | {r['minutes']:.2f} | {r['box_per_min']:.2f} | "
                     f"{r['event_per_min']:.2f} | {r['fps']:.0f} ({r['load']}) |")
    if any(r["planted"] for r in rows):
        lines += ["Anomalies planted into the held-out clips (one per clip and kind)",
                  "| camera | planted | clips | frames | AUC | hit | IoU.5 |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            for kind, p in r["planted"].items():
                lines.append(f"| {r['camera']} | {kind} | {p['clips']} | {p['frames']} | {p['auc']:.1f} | "
                             f"{p['hit']:.1f} | {p['iou.5']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/eval_localisation"), help="SynthCampus clips (reused)")
    ap.add_argument("--scene", default="campus_walkway")
    ap.add_argument("--normal", type=int, default=10, help="normal clips the SynthCampus profile is fitted on")
    ap.add_argument("--per-type", type=int, default=3, help="anomalous clips per anomaly type")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder (training clips only)")
    ap.add_argument("--no-synth", action="store_true")
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--no-plant", action="store_true", help="no planted anomalies in the held-out footage")
    ap.add_argument("--json", type=Path, help="write every number here")
    args = ap.parse_args(argv)
    out: dict = {}
    if not args.no_synth:
        out["synth"] = synth_part(args.work, args.scene, args.normal, args.per_type)
        print(_synth_table(out["synth"]), flush=True)
    if not args.no_real:
        ped2 = sorted((args.data / "ucsd_ped2" / "training" / "frames").iterdir())
        avenue = sorted((args.data / "cuhk_avenue" / "training_videos").glob("*.avi"))
        plant = not args.no_plant
        out["real"] = [real_part("ucsd_ped2", ped2, 10.0, CalibrationConfig(), plant),
                       real_part("cuhk_avenue", avenue, None, dataclasses.replace(CalibrationConfig(), min_seconds=5.0),
                                 plant)]
        print(_real_table(out["real"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
