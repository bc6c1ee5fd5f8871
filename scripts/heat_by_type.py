"""AHD heat per split and video type over many clips: does the heat tell anomalous clips from normal ones?

    python scripts/heat_by_type.py --model checkpoints/tvad-tiny --corpus data/synth_corpus \
        --splits train val test --clips 120

Per split and type (anomaly behaviour, or "normal"): clips, mean heat inside and outside the anomaly mask
(patch grid), and the median of each clip's peak heat. Per split: the clip-level AUC of the peak heat
(anomalous vs normal clips) and the best accuracy any single threshold on it reaches, beside the share of
anomalous clips (what answering "yes" to every clip scores). A model that memorised its training clips shows
quiet normal clips in train and loud ones in val/test.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heads.ahd import masks_to_patch_grid  # noqa: E402
from tvad_chat.eval.runner import video_type  # noqa: E402
from tvad_chat.pipeline import TVAD  # noqa: E402
from tvad_chat.train.data import ClipStore, load_samples, unique_clips  # noqa: E402


def clip_heat(tvad: TVAD, store: ClipStore, sample) -> tuple[float, float, float]:
    """(mean heat inside the mask or nan, mean heat outside it, peak heat) of one clip."""
    clip = store.get(sample)
    with torch.no_grad():
        vision = tvad.backbone.encode_video(clip.frames, clip.fps, tuple(tvad.ahd.config.tap_layers))
        heat = tvad.heatmap_outputs(vision).heatmap.float()
    heat = heat.reshape(-1, *heat.shape[-2:])  # (T', H', W')
    mask = masks_to_patch_grid(torch.from_numpy(clip.masks), tuple(heat.shape[-2:]))[: len(heat)].bool()
    inside = float(heat[mask].mean()) if mask.any() else float("nan")
    return inside, float(heat[~mask].mean()), float(heat.max())


def best_threshold_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """The highest accuracy of "anomalous when score >= t" over every t (an in-sample upper bound)."""
    thresholds = np.concatenate([scores, [np.inf]])
    return max(float(((scores >= t) == labels).mean()) for t in thresholds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="checkpoints/tvad-tiny")
    ap.add_argument("--corpus", default="data/synth_corpus")
    ap.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    ap.add_argument("--clips", type=int, default=120, help="at most this many clips per split (first ones)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tvad = TVAD.from_pretrained(args.model, dtype="float32", device="cpu")
    if tvad.ahd is None:
        raise SystemExit(f"{args.model} has no AHD")
    store = ClipStore(tvad.config.max_pixels, tvad.config.min_pixels)
    print("split type         clips  in-mask  outside  median peak")
    for split in args.splits:
        rows = defaultdict(list)
        peaks, labels = [], []
        for sample in unique_clips(load_samples(args.corpus, split=split))[: args.clips]:
            kind = video_type(sample, bool(sample.anomalous_video))
            inside, outside, peak = clip_heat(tvad, store, sample)
            rows[kind].append((inside, outside, peak))
            peaks.append(peak)
            labels.append(kind != "normal")
        for kind, values in sorted(rows.items(), key=lambda kv: (kv[0] == "normal", kv[0])):
            v = np.array(values)
            inside = "    -  " if np.isnan(v[:, 0]).all() else f"{np.nanmean(v[:, 0]):7.3f}"
            print(f"{split:5s} {kind:12s} {len(v):5d}  {inside}  {v[:, 1].mean():7.3f}  {np.median(v[:, 2]):11.3f}")
        scores, truth = np.array(peaks), np.array(labels)
        if truth.all() or not truth.any():
            continue
        print(f"{split:5s} clip-level AUC of the peak heat {100 * roc_auc_score(truth, scores):.1f}; best single "
              f"threshold {100 * best_threshold_accuracy(scores, truth):.1f} % accuracy vs {100 * truth.mean():.1f} % "
              f"anomalous clips")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
