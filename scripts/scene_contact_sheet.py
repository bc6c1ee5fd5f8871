"""Contact sheet of a scene analysis: frames with the heat overlay, boxes (score, track) and, when given,
the ground-truth mask outline (green). For looking at what a profile finds, not for measuring it.

    python scripts/scene_contact_sheet.py CLIP --profile DIR --out sheet.png [--masks DIR] [--folder-fps F]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from tvad_chat.evidence import render_overlay
from tvad_chat.scene.run import analyze_clip
from tvad_chat.video import load_clip, probe, read_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip")
    parser.add_argument("--profile", default="auto")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--masks", type=Path, default=None, help="folder of per-frame mask PNGs (same order)")
    parser.add_argument("--folder-fps", type=float, default=None)
    parser.add_argument("--count", type=int, default=12, help="frames on the sheet")
    parser.add_argument("--columns", type=int, default=4)
    args = parser.parse_args()

    heats: dict[int, np.ndarray] = {}
    total = probe(args.clip, folder_fps=args.folder_fps).num_frames
    wanted = set(np.linspace(0, total - 1, args.count).astype(int).tolist())

    def keep(index: int, heat: np.ndarray) -> None:
        if index in wanted:
            heats[index] = heat

    analysis, choice = analyze_clip(args.clip, args.profile, folder_fps=args.folder_fps, heat_sink=keep)
    mask_files = sorted(args.masks.iterdir()) if args.masks else []
    clip = load_clip(args.clip, num_frames=None, folder_fps=args.folder_fps, frame_indices=sorted(wanted))
    tiles = []
    for frame, index in zip(clip.frames, clip.frame_indices, strict=True):
        record = next(f for f in analysis.frames if f.index == index)
        tile = render_overlay(frame[None], heats[int(index)][None])[0]
        if mask_files:
            mask = read_mask(mask_files[int(index)]).astype(np.uint8)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(tile, contours, -1, (0, 255, 0), 1)
        for box in record.boxes:
            if box.score <= 0:
                continue
            x1, y1, x2, y2 = (int(round(v)) for v in box.xyxy)
            cv2.rectangle(tile, (x1, y1), (x2, y2), (255, 0, 0), 1)
            cv2.putText(tile, f"{box.score:.1f}#{box.track_id}", (x1, max(10, y1 - 2)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.35, (255, 255, 0), 1)
        score = analysis.scores[analysis.frames.index(record)]
        cv2.putText(tile, f"frame {index}  {record.time:.1f}s  score {score:.2f}", (4, 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        tiles.append(tile)
    while len(tiles) % args.columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[r:r + args.columns], axis=1) for r in range(0, len(tiles), args.columns)]
    sheet = np.concatenate(rows, axis=0)
    cv2.putText(sheet, choice.note[:120], (4, sheet.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"{args.out}: {len(tiles)} frames; events: " + "; ".join(
        f"{e.start_s:.1f}-{e.end_s:.1f} s ({e.why})" for e in analysis.events()))


if __name__ == "__main__":
    main()
