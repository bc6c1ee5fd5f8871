"""A small procedural corpus in the SFT format (frame folders, masks, dialogues) for tests and smoke runs.

Not SynthCampus: a grey textured ground, slow walkers (a box with a head), and in anomalous clips one fast
object (a runner or a car) whose pixels are written as masks. The dialogue follows the evaluation order
(judgement -> appearance -> trajectory), and eval_refs.jsonl carries the references.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 180, 60), "yellow": (230, 210, 40)}
DIRECTIONS = {"left to right": (1, 0), "right to left": (-1, 0), "top to bottom": (0, 1), "bottom to top": (0, -1)}
# the corpus builder's wording of each direction (datasets_builder.timeline), so evaluators read it back
DIRECTION_PHRASES = {"left to right": "from left to right", "right to left": "from right to left",
                     "top to bottom": "downwards in the frame", "bottom to top": "upwards in the frame"}


def _draw(img: np.ndarray, mask: np.ndarray | None, x: float, y: float, w: int, h: int, colour) -> None:
    H, W = img.shape[:2]
    x0, y0 = int(round(x)), int(round(y))
    x1, y1 = max(0, x0), max(0, y0)
    x2, y2 = min(W, x0 + w), min(H, y0 + h)
    if x2 <= x1 or y2 <= y1:
        return
    img[y1:y2, x1:x2] = colour
    if mask is not None:
        mask[y1:y2, x1:x2] = True


def make_toy_corpus(out_dir: str | Path, videos: int = 12, frames: int = 8, size: tuple[int, int] = (112, 168),
                    seed: int = 0, splits: tuple[float, float] = (0.6, 0.2)) -> Path:
    """Write frame folders, mask folders, sft.jsonl and eval_refs.jsonl under ``out_dir``; returns it."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    sft, refs = [], []
    n_train = int(round(videos * splits[0]))
    n_val = int(round(videos * splits[1]))
    for v in range(videos):
        split = "train" if v < n_train else "val" if v < n_train + n_val else "test"
        vid = f"{split}/toy{v:03d}"
        anomalous = v % 2 == 0
        base = (rng.normal(120, 12, (h, w, 1)).clip(0, 255) * np.ones((1, 1, 3))).astype(np.uint8)
        walkers = [(rng.uniform(10, w - 20), rng.uniform(10, h - 30), rng.uniform(-1, 1), rng.uniform(-1, 1))
                   for _ in range(int(rng.integers(1, 3)))]
        kind = "car" if rng.random() < 0.5 else "person"
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
        dx, dy = DIRECTIONS[direction]
        speed = 12.0
        ow, oh = (28, 16) if kind == "car" else (10, 20)
        sx = {1: 0.0, -1: w - ow, 0: rng.uniform(20, w - 40)}[dx]
        sy = {1: 0.0, -1: h - oh, 0: rng.uniform(20, h - 40)}[dy]
        fdir = out / "videos" / f"toy{v:03d}"
        mdir = out / "masks" / f"toy{v:03d}"
        fdir.mkdir(parents=True, exist_ok=True)
        if anomalous:
            mdir.mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            img = base.copy()
            for (x, y, vx, vy) in walkers:
                _draw(img, None, x + vx * t, y + vy * t, 8, 18, (90, 90, 90))
                _draw(img, None, x + vx * t + 2, y + vy * t - 4, 4, 4, (200, 170, 140))
            mask = np.zeros((h, w), dtype=bool)
            if anomalous:
                _draw(img, mask, sx + dx * speed * t, sy + dy * speed * t, ow, oh, COLOURS[colour])
                Image.fromarray(mask.astype(np.uint8) * 255).save(mdir / f"{t:03d}.png")
            Image.fromarray(img).save(fdir / f"{t:03d}.jpg", quality=95)
        q_j = "Is there an anomaly in this video?"
        if anomalous:
            noun = f"a {colour} {kind}"
            a_j = f"Yes, there is an anomaly: {noun} moving fast."
            a_t = f"The anomalous target is {noun}."
            a_r = f"It moves {DIRECTION_PHRASES[direction]} quickly."
        else:
            a_j = "No, there is no anomaly in this video."
        conv = [{"role": "user", "content": q_j}, {"role": "assistant", "content": a_j}]
        common = {"video_id": vid, "video": str(fdir), "frame_indices": list(range(frames)), "fps": 10.0,
                  "mask_dir": str(mdir) if anomalous else None}

        def meta(kind_: str, split=split, vid=vid, anomalous=anomalous) -> dict:
            return {"kind": kind_, "split": split, "anomaly_focused": anomalous, "video_id": vid,
                    "anomalous_video": anomalous}

        sft.append({"id": f"{vid}/judgement", **common, "conversation": list(conv), "meta": meta("judgement")})
        refs.append({"id": f"{vid}/judgement", "video_id": vid, "kind": "yesno",
                     "references": ["Yes." if anomalous else "No."]})
        if anomalous:
            conv = conv + [{"role": "user", "content": "What does the anomalous target look like?"},
                           {"role": "assistant", "content": a_t}]
            sft.append({"id": f"{vid}/target", **common, "conversation": list(conv), "meta": meta("target")})
            refs.append({"id": f"{vid}/target", "video_id": vid, "kind": "target", "references": [a_t]})
            conv = conv + [{"role": "user", "content": "How does it move?"},
                           {"role": "assistant", "content": a_r}]
            sft.append({"id": f"{vid}/trajectory", **common, "conversation": list(conv),
                        "meta": meta("trajectory")})
            refs.append({"id": f"{vid}/trajectory", "video_id": vid, "kind": "trajectory", "references": [a_r]})
    (out / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft))
    (out / "eval_refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    return out
