"""The bring-your-own-weights stages: time per frame of each (tvad_chat.stages) at the default sizes.

Run:  .venv/bin/python benchmarks/bench_stages.py [--threads 2] [--frames 8] [--device cpu|cuda]
      [--width 360 --height 240] [--sam2-config configs/sam2.1/sam2.1_hiera_t.yaml] [--clip-arch ViT-B-32]

Random weights (none can be downloaded here): the time of a forward pass does not depend on the weights' values,
so these are the times of the published checkpoints of the same architecture, except that random SAM2 masks
cover other pixels (the mask-to-crop bookkeeping differs a little). Measured on a synthetic clip (a coloured
block crossing a grey frame, Ped2's 360x240 by default) with one anomalous track in every frame:
  * SAM2 masks: the video predictor at its config's input size (1024 for every SAM2.1 model), TAO's prompts
    (robust filter, merge, a prompt every 10 frames), forward and backward propagation; seconds per frame, the
    frames' JPEG round trip and the predictor's setup included;
  * heat outline masks (the weight-free default): per frame;
  * CLIP categories: the category texts (prompts/categories.yaml, every template) encoded once per category set,
    then per track its crops (up to 8); seconds once and per crop.
The thread count (torch and OpenCV) and the load average are printed: the machine may be shared.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from footage import load_average  # noqa: E402


def synthetic_clip(folder: Path, frames: int, width: int, height: int) -> list[tuple[float, float, float, float]]:
    """A frame folder (0.png ...) with a red block moving right, a sixteenth of its height per frame; its boxes."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    boxes = []
    side = height // 4
    for i in range(frames):
        image = np.full((height, width, 3), 110, np.uint8)
        x = min(width - side, 10 + i * side // 8)  # slow enough for TAO's robust filter (IoU > 0.2 frame to frame)
        y = height // 2 - side // 2
        image[y:y + side, x:x + side // 2] = (40, 40, 220)  # BGR: red
        cv2.imwrite(str(folder / f"{i}.png"), image)
        boxes.append((float(x), float(y), float(x + side // 2), float(y + side)))
    return boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--width", type=int, default=360)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sam2-config", default="configs/sam2.1/sam2.1_hiera_t.yaml")
    parser.add_argument("--clip-arch", default="ViT-B-32")
    args = parser.parse_args()

    import cv2
    import numpy as np
    import torch

    from tvad_chat.scene.analyze import FrameBox, FrameRecord, SceneAnalysis
    from tvad_chat.stages.categories import ClipCategoriser, load_categories
    from tvad_chat.stages.masks import HeatOutline, SAM2Masks, build_sam2_predictor
    from tvad_chat.stages.run import Stages, run_stages

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    torch.manual_seed(0)
    print(f"threads {args.threads} (torch and OpenCV); device {args.device}; load average {load_average()}")
    print(f"clip: {args.frames} frames of {args.width}x{args.height}, one anomalous track in every frame")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clip"
        boxes = synthetic_clip(folder, args.frames, args.width, args.height)
        records = [FrameRecord(i, i / 10.0, 0.9, [FrameBox(b, 0.9, 1, (1.0, 1.0, 1.0), (220, 40, 40))])
                   for i, b in enumerate(boxes)]
        analysis = SceneAnalysis("bench", (args.width, args.height), 10.0, records,
                                 np.full(args.frames, 0.9, np.float32), {"1/min": 0.5}, "1/min")

        outline = HeatOutline()
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            heat = np.zeros((args.height, args.width), np.float32)
            heat[int(y1):int(y2), int(x1):int(x2)] = 0.8
            outline.sink(i, heat)
        done = run_stages(analysis, folder, Stages(enabled=True), outline, folder_fps=10.0)
        print(f"heat outline masks: {1000 * done.seconds['masks'] / args.frames:.2f} ms per frame")

        start = time.perf_counter()
        sam2 = SAM2Masks(build_sam2_predictor(args.sam2_config, None, args.device))
        print(f"SAM2 {Path(args.sam2_config).stem} built in {time.perf_counter() - start:.1f} s "
              f"(input {sam2.predictor.image_size}x{sam2.predictor.image_size})")
        done = run_stages(analysis, folder, Stages(sam2, enabled=True), folder_fps=10.0)
        print(f"SAM2 masks: {done.seconds['masks']:.1f} s for {done.frames['masks']} frames = "
              f"{done.seconds['masks'] / done.frames['masks']:.2f} s per frame")

        start = time.perf_counter()
        clip = ClipCategoriser.create(args.clip_arch, device=args.device)
        print(f"CLIP {args.clip_arch} built in {time.perf_counter() - start:.1f} s")
        categories = load_categories()
        start = time.perf_counter()
        clip.text_features(categories)  # once per category set; the stage caches it
        texts = time.perf_counter() - start
        print(f"CLIP category texts: {len(categories.names)} categories x {len(categories.templates)} templates "
              f"in {texts:.1f} s (once per category set)")
        done = run_stages(analysis, folder, Stages(categoriser=clip, enabled=True), categories=categories,
                          folder_fps=10.0)
        crops = done.frames["categories"]
        print(f"CLIP categories: {done.seconds['categories']:.2f} s for one track of {crops} crops = "
              f"{done.seconds['categories'] / crops:.3f} s per crop (texts cached)")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
