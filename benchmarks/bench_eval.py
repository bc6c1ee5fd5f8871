"""Evaluation speed: RBDC/TBDC, BLEU and pixel metrics at the sizes issue #4 asks for.

    .venv/bin/python benchmarks/bench_eval.py [--quick]

Targets: RBDC/TBDC over 100k detections and 40k frames < 10 s; BLEU over 10k samples < 5 s;
pixel metrics (pooled + TAO protocol) over 2,000 frames of 360x240 < 20 s. Also prints how far the
binned float path is from scikit-learn's exact result on a subset.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from tvad_chat.eval.objects import Detections, Regions, rbdc_tbdc
from tvad_chat.eval.pixels import PixelFrame, pixel_metrics
from tvad_chat.eval.text import best_reference_bleu4, corpus_bleu4, yes_no_metrics


def _timed(label: str, target: float, fn):
    """Wall and CPU seconds of this process: on a shared machine CPU time is the fair figure."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    verdict = "ok" if min(wall, cpu) < target else "MISSED"
    print(f"{label:<66} wall {wall:6.2f} s  cpu {cpu:6.2f} s  (target < {target:g} s: {verdict})")
    return result


def bench_objects(scale: float) -> None:
    rng = np.random.default_rng(0)
    videos, frames_per_video = max(int(100 * scale), 1), 400
    rows = []
    track = 0
    for v in range(videos):
        for _ in range(3):  # 3 anomalous tracks per video, 20-120 frames each
            start, length = int(rng.integers(0, frames_per_video - 120)), int(rng.integers(20, 120))
            x, y = rng.uniform(0, 300), rng.uniform(0, 200)
            for f in range(start, start + length):
                rows.append((v, f, track, x, y, x + 40, y + 60))
                x += 2
            track += 1
    reg = np.array(rows)
    n_det = int(100_000 * scale)
    pick = rng.integers(0, len(reg), n_det // 2)  # half near ground truth, half anywhere
    near = reg[pick, 3:7] + rng.normal(0, 10, (pick.size, 4))
    xy = rng.uniform(0, 320, (n_det - pick.size, 2))
    boxes = np.concatenate([near, np.concatenate([xy, xy + 30], axis=1)])
    video = np.concatenate([reg[pick, 0], rng.integers(0, videos, n_det - pick.size)]).astype(int)
    frame = np.concatenate([reg[pick, 1], rng.integers(0, frames_per_video, n_det - pick.size)]).astype(int)
    scores = np.round(rng.random(n_det), 3)  # 3 decimals: many ties, as real detectors print
    regions = Regions(reg[:, 0].astype(int), reg[:, 1].astype(int), reg[:, 2].astype(int), reg[:, 3:7])
    detections = Detections(video, frame, boxes, scores)
    frames = videos * frames_per_video
    result = _timed(f"RBDC/TBDC: {n_det} detections, {len(reg)} regions, {frames} frames", 10,
                    lambda: rbdc_tbdc(regions, detections, frames))
    print(f"    RBDC {result['rbdc']:.2f}  TBDC {result['tbdc']:.2f}")


def bench_text(scale: float) -> None:
    rng = random.Random(0)
    words = ("a the person man woman cyclist car cart skateboarder walks rides runs drives from left to right "
             "top bottom of frame red blue white black slowly quickly towards camera away").split()

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(6, 18))) + "."

    n = int(10_000 * scale)
    items = [(f"v{i % 500}", sentence(), [sentence() for _ in range(3)]) for i in range(n)]
    result = _timed(f"BLEU-4 T-VAD (best of 3 references, macro): {n} samples", 5,
                    lambda: best_reference_bleu4(items))
    print(f"    BLEU-4 {result['bleu4']:.2f} over {result['videos']} videos")
    single = [(v, sentence(), [sentence()]) for v, _, _ in items]
    _timed(f"BLEU-4 T-VAD (one reference each): {n} samples", 5, lambda: best_reference_bleu4(single))
    corpus = _timed(f"BLEU-4 captioning corpus (3 references): {n} samples", 5,
                    lambda: corpus_bleu4([p for _, p, _ in items], [r for _, _, r in items]))
    print(f"    corpus BLEU-4 {corpus:.2f}")
    answers = ["Yes, a cyclist rides through.", "No.", "There is no anomaly.", "Nothing unusual happens.", "maybe"]
    preds = [rng.choice(answers) for _ in range(n)]
    refs = [rng.choice(["Yes", "No"]) for _ in range(n)]
    yn = _timed(f"Yes/No: {n} answers", 5, lambda: yes_no_metrics(preds, refs))
    print(f"    accuracy {yn['accuracy']:.2f} balanced {yn['balanced_accuracy']:.2f}")


def _maps(count: int, dtype, seed: int) -> list[PixelFrame]:
    rng = np.random.default_rng(seed)
    base = rng.random((240, 360)).astype(np.float32)
    frames = []
    for i in range(count):
        mask = np.zeros((240, 360), bool)
        if i % 2:  # half the frames hold one or two anomalies
            for _ in range(1 + i % 3 // 2):
                y, x = rng.integers(0, 180), rng.integers(0, 320)
                mask[y:y + 50, x:x + 30] = True
        noise = np.roll(base, (i * 7) % 240, axis=0)  # cheap, frame-varying noise
        score = 0.7 * noise + 0.3 * mask
        frames.append(PixelFrame((score * 255).astype(np.uint8) if dtype == np.uint8 else score, mask))
    return frames


def bench_pixels(scale: float) -> None:
    n = int(2000 * scale)
    for dtype, label in ((np.float32, "float32 maps, 65536 bins"), (np.uint8, "uint8 maps, exact")):
        frames = _maps(n, dtype, 1)
        result = _timed(f"pixel metrics + TAO protocol: {n} frames 360x240, {label}", 20,
                        lambda frames=frames: pixel_metrics(frames))
        print(f"    AUROC {result['auroc']:.3f} AP {result['ap']:.3f} AUPRO {result['aupro']:.3f} "
              f"F1max {result['f1_max']:.3f} | TAO AUROC {result['tao.auroc']:.2f} F1 {result['tao.f1']:.2f}")
    from sklearn.metrics import average_precision_score, roc_auc_score

    subset = _maps(100, np.float32, 2)
    ours = pixel_metrics(subset)
    y = np.concatenate([f.mask.ravel() for f in subset])
    s = np.concatenate([f.score.ravel() for f in subset])
    print(f"    binned vs sklearn exact on 100 float frames: AUROC diff {abs(ours['auroc'] - 100 * roc_auc_score(y, s)):.2e}"
          f", AP diff {abs(ours['ap'] - 100 * average_precision_score(y, s)):.2e} (points)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes (smoke run)")
    scale = 0.1 if parser.parse_args().quick else 1.0
    bench_objects(scale)
    bench_text(scale)
    bench_pixels(scale)


if __name__ == "__main__":
    main()
