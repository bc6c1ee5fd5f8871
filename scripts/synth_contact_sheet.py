"""Save a SynthCampus contact sheet: every scene (normal clips) and every behaviour (anomalous clips).

    python scripts/synth_contact_sheet.py --out runs/synth_contact_sheet.png [--seed 0] [--size 320x192]

Each anomaly tile shows the event frame where the anomaly is most visible, with the anomaly mask
outlined in red and the anomalous boxes in yellow; scene tiles show the normal boxes in green. A second sheet (suffix _seq) shows
four frames of each anomaly so the motion can be checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets_builder.synth.behaviours import ANOMALY_TYPES  # noqa: E402
from datasets_builder.synth.generate import ClipConfig, generate_clip  # noqa: E402
from datasets_builder.synth.scenes import SCENES  # noqa: E402
from datasets_builder.synth.splits import SPLITS  # noqa: E402


def _split_of(event: str) -> str:
    return next(s for s, types in SPLITS.items() if event in types)


def _tile(clip, t: int, caption: str, boxes: bool = True) -> np.ndarray:
    img = np.ascontiguousarray(clip.frames[t][..., ::-1])
    m = clip.masks[t]
    if m.any():
        cnts, _ = cv2.findContours((m > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, cnts, -1, (0, 0, 255), 1)
    if boxes:
        for o in clip.annotation["frames"][t]["objects"]:
            x1, y1, x2, y2 = o["box"]
            cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), (0, 230, 255) if o["anomalous"] else (0, 200, 0), 1)
    cv2.rectangle(img, (0, 0), (img.shape[1], 14), (0, 0, 0), -1)
    cv2.putText(img, caption, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def _grid(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.full((rows * (h + 4), cols * (w + 4), 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * (h + 4) : r * (h + 4) + h, c * (w + 4) : c * (w + 4) + w] = t
    return sheet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/synth_contact_sheet.png")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="320x192")
    ap.add_argument("--frames", type=int, default=32)
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    cfg = ClipConfig(frames=args.frames, width=w, height=h)
    tiles, seq = [], []
    for k, name in enumerate(SCENES):
        clip = generate_clip(args.seed, "normal_train", 1000 + k, cfg, scene_name=name)
        tiles.append(_tile(clip, args.frames // 2, f"{name} (normal)"))
    for k, event in enumerate(ANOMALY_TYPES):
        split = _split_of(event)
        clip = generate_clip(args.seed, split, 2000 + k, cfg, event=event)
        ann = clip.annotation
        ef = ann["event_frames"] or [0, args.frames - 1]
        # the event frame where most of the anomaly is visible: a passing car may hide it mid-event
        area = [int((clip.masks[t] > 0).sum()) for t in range(ef[0], ef[1] + 1)]
        mid = ef[0] + int(np.argmax(area))
        tiles.append(_tile(clip, mid, f"{event} [{split}] {ann['scene']} f{mid}"))
        picks = np.linspace(max(0, ef[0] - 2), min(args.frames - 1, ef[1]), 4).round().astype(int)
        seq.append(np.concatenate([_tile(clip, int(t), f"{event} f{t}") for t in picks], axis=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), _grid(tiles, 4))
    seq_path = out.with_name(out.stem + "_seq" + out.suffix)
    cv2.imwrite(str(seq_path), _grid(seq, 2))
    print(f"contact sheet: {out} ({len(tiles)} tiles); sequences: {seq_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
