"""Heatmap overlays per behaviour: what the AHD of a model sees on SynthCampus clips, to look at and to quote.

    python scripts/heatmap_overlays.py --model checkpoints/tvad-tiny --data data/synthcampus \
        --splits test val train --out runs/overlays.png

One row per anomaly behaviour (the first clip of that behaviour in each split) plus two normal clips: the
sampled frames with the heatmap blended in (JET, weight = heat) and the ground-truth anomaly mask outlined
in white. Printed per row: the model's threshold-free judgement, the clip's frame AUC (when it has both
normal and anomalous frames) and the mean heat inside vs outside the mask.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets_builder.sources import read_synthcampus  # noqa: E402
from tvad_chat.evidence import render_overlay, upsample_heatmaps  # noqa: E402
from tvad_chat.train.data import read_masks  # noqa: E402
from tvad_chat.video import load_clip  # noqa: E402


def pick_records(data: Path, splits: list[str], normals: int) -> list[tuple[str, object]]:
    """(label, record): the first clip of every anomaly behaviour per split, then a few normal clips."""
    rows, seen, normal = [], set(), []
    for split in splits:
        for rec in read_synthcampus(data, split):
            if rec.event and (split, rec.event) not in seen:
                seen.add((split, rec.event))
                rows.append((f"{split}/{rec.event}", rec))
            elif not rec.event and len(normal) < normals:
                normal.append((f"{split}/normal", rec))
    return rows + normal


def row_image(frames: np.ndarray, heat: np.ndarray, masks: np.ndarray, label: str, width: int) -> np.ndarray:
    overlay = render_overlay(frames, heat)
    tiles = []
    for f in range(len(frames)):
        img = np.ascontiguousarray(overlay[f][..., ::-1])
        if masks[f].any():
            cnts, _ = cv2.findContours(masks[f].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, cnts, -1, (255, 255, 255), 2)
        tiles.append(img)
    row = np.concatenate(tiles, axis=1)
    scale = width / row.shape[1]
    row = cv2.resize(row, (width, int(row.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    bar = np.full((18, width, 3), 30, np.uint8)
    cv2.putText(bar, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, row], axis=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="checkpoints/tvad-tiny")
    ap.add_argument("--data", type=Path, default=Path("data/synthcampus"))
    ap.add_argument("--splits", nargs="+", default=["test", "val", "train"])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--normals", type=int, default=2)
    ap.add_argument("--width", type=int, default=2560)
    ap.add_argument("--out", type=Path, default=Path("runs/overlays.png"))
    args = ap.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from tvad_chat.pipeline import TVAD

    tvad = TVAD.from_pretrained(args.model)
    rows = []
    print(f"{'clip':28s} {'judgement':>9s} {'frame AUC':>9s} {'heat in mask':>12s} {'heat outside':>12s}")
    for label, rec in pick_records(args.data, args.splits, args.normals):
        clip = load_clip(rec.source, num_frames=args.frames, fps=None)
        analysis = tvad.analyze(clip)
        h, w = clip.frames.shape[1:3]
        masks = read_masks(rec.mask_dir, clip.frame_indices.tolist(), (h, w)) if rec.mask_dir else \
            np.zeros((len(clip.frames), h, w), bool)
        heat = upsample_heatmaps(analysis.heatmaps, len(clip.frames), (w, h))
        labels = masks.reshape(len(masks), -1).any(1)
        auc = roc_auc_score(labels, analysis.frame_scores) if 0 < labels.sum() < len(labels) else float("nan")
        inside = float(heat[masks].mean()) if masks.any() else float("nan")
        outside = float(heat[~masks].mean())
        print(f"{label:28s} {str(analysis.judgement):>9s} {auc:9.2f} {inside:12.3f} {outside:12.3f}")
        rows.append(row_image(clip.frames, analysis.heatmaps, masks,
                              f"{label}  judgement={analysis.judgement}  in-mask heat {inside:.2f} / outside "
                              f"{outside:.2f}", args.width))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.concatenate(rows, axis=0))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
