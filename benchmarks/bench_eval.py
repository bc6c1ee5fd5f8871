"""Evaluation speed on synthetic data of realistic size.

Targets (issue 4): RBDC/TBDC over 100k detections and 40k frames < 10 s; BLEU over 10k samples < 5 s;
pixel metrics over 2,000 frames of 360x240 < 20 s.
Run: .venv/bin/python benchmarks/bench_eval.py
"""

from __future__ import annotations

import os
import random
import time

import numpy as np

from tvad_chat.eval.objects import Detections, Regions, rbdc_tbdc
from tvad_chat.eval.pixels import PixelFrame, pooled_pixel_metrics, tao_protocol
from tvad_chat.eval.text import best_reference_bleu4, corpus_bleu4


def bench_objects() -> float:
    rng = np.random.default_rng(0)
    frames, videos = 40_000, 40
    n_regions = 20_000
    reg_video = rng.integers(0, videos, n_regions)
    reg_frame = rng.integers(0, frames // videos, n_regions)
    xy = rng.uniform(0, 300, (n_regions, 2))
    regions = Regions(reg_video, reg_frame, rng.integers(0, 400, n_regions),
                      np.hstack([xy, xy + rng.uniform(10, 60, (n_regions, 2))]))
    n_det = 100_000
    det_video = rng.integers(0, videos, n_det)
    det_frame = rng.integers(0, frames // videos, n_det)
    det_xy = rng.uniform(0, 300, (n_det, 2))
    # half the detections sit on regions
    on = rng.random(n_det) < 0.5
    pick = rng.integers(0, n_regions, n_det)
    det_video[on], det_frame[on] = reg_video[pick[on]], reg_frame[pick[on]]
    det_xy[on] = regions.boxes[pick[on], :2] + rng.normal(0, 5, (on.sum(), 2))
    dets = Detections(det_video, det_frame, np.hstack([det_xy, det_xy + 40]), rng.random(n_det).round(3))
    start = time.perf_counter()
    result = rbdc_tbdc(regions, dets, frames)
    elapsed = time.perf_counter() - start
    print(f"RBDC/TBDC: {n_det} detections, {n_regions} regions, {frames} frames: {elapsed:.2f} s "
          f"(rbdc {result['rbdc']:.2f}, tbdc {result['tbdc']:.2f})")
    return elapsed


def bench_bleu() -> float:
    rng = random.Random(0)
    words = "a the person cyclist car walks rides runs from left to right top bottom red blue slowly fast".split()
    samples = [(f"v{i // 5}", " ".join(rng.choice(words) for _ in range(12)),
                [" ".join(rng.choice(words) for _ in range(12)) for _ in range(3)]) for i in range(10_000)]
    start, cpu = time.perf_counter(), time.process_time()
    best_reference_bleu4(samples)
    corpus_bleu4([s[1] for s in samples], [s[2] for s in samples])
    elapsed = time.perf_counter() - start
    print(f"BLEU-4 (T-VAD best-reference + corpus) over 10k samples x 3 references: {elapsed:.2f} s "
          f"(CPU {time.process_time() - cpu:.2f} s)")
    return elapsed


def bench_pixels() -> float:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(2000):
        mask = np.zeros((240, 360), bool)
        if i % 2:
            y, x = rng.integers(0, 180), rng.integers(0, 300)
            mask[y : y + 50, x : x + 40] = True
        score = (rng.random((240, 360)) * 160 + mask * 90).astype(np.uint8)
        frames.append(PixelFrame(score, mask))
    start = time.perf_counter()
    pooled = pooled_pixel_metrics(frames)
    tao_protocol(frames)
    elapsed = time.perf_counter() - start
    print(f"pixel metrics (pooled AUROC/AP/AUPRO/F1 + TAO protocol), 2000 frames 360x240: {elapsed:.2f} s "
          f"(auroc {pooled['auroc']:.2f}, aupro {pooled['aupro']:.2f})")
    return elapsed


if __name__ == "__main__":
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    bench_objects()
    bench_bleu()
    bench_pixels()
