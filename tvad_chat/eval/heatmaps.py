"""Object-level scores of AHD heatmaps against pixel masks: the glue between heatmaps and eval.objects.

Detections are the evidence module's boxes (8-connected regions where the abnormal channel wins, scored by
their peak), one set per temporal patch repeated on its frames; regions are the masks' connected components,
one track per component index in a video. Used by `tvad eval run` and by stage 1's checkpoint selection, so
both score a heatmap the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from tvad_chat.errors import DataError
from tvad_chat.eval.objects import Detections, Regions, rbdc_tbdc


def mask_regions(masks: np.ndarray) -> list[list[tuple[int, list[float]]]]:
    """Per frame, (component index, [x1, y1, x2, y2]) of every connected region of a (T, H, W) mask stack."""
    out = []
    for mask in np.asarray(masks, dtype=bool):
        labels, _ = ndimage.label(mask)
        frame = []
        for k, region in enumerate(ndimage.find_objects(labels)):
            if region is not None:
                ys, xs = region
                frame.append((k, [xs.start, ys.start, xs.stop - 1, ys.stop - 1]))
        out.append(frame)
    return out


def heatmap_boxes(heatmaps: np.ndarray, num_frames: int, size: tuple[int, int]) -> list[list[tuple[list[float], float]]]:
    """Per sampled frame, ([x1, y1, x2, y2], score) of the heatmap's detections at display size (width, height)."""
    from tvad_chat.evidence import detect_boxes, patch_of_frame

    maps = np.asarray(heatmaps, dtype=np.float32)
    per_patch = [detect_boxes(m, p, size) for p, m in enumerate(maps)]
    patch = patch_of_frame(num_frames, maps.shape[0])
    return [[(list(b.xyxy), float(b.score)) for b in per_patch[patch[f]]] for f in range(num_frames)]


def object_metrics(videos: Sequence[tuple[list[list[tuple[list[float], float]]], np.ndarray]]) -> dict[str, float]:
    """RBDC/TBDC (percent) of per-frame detections [(box, score), ...] against (T, H, W) masks, video by video."""
    reg: dict[str, list] = {"video": [], "frame": [], "track": [], "boxes": []}
    det: dict[str, list] = {"video": [], "frame": [], "boxes": [], "scores": []}
    total_frames = 0
    for v, (boxes, masks) in enumerate(videos):
        if len(boxes) != len(masks):
            raise DataError(f"video {v}: detections for {len(boxes)} frames but {len(masks)} masks")
        for f, regions in enumerate(mask_regions(masks)):
            for k, box in regions:
                reg["video"].append(v)
                reg["frame"].append(f)
                reg["track"].append(v * 100_000 + k)
                reg["boxes"].append(box)
            for box, score in boxes[f]:
                det["video"].append(v)
                det["frame"].append(f)
                det["boxes"].append(box)
                det["scores"].append(score)
        total_frames += len(masks)
    if not reg["frame"]:
        return {}
    regions = Regions(video=np.array(reg["video"]), frame=np.array(reg["frame"]), track=np.array(reg["track"]),
                      boxes=np.array(reg["boxes"], dtype=np.float64))
    detections = Detections(video=np.array(det["video"], dtype=np.int64), frame=np.array(det["frame"], dtype=np.int64),
                            boxes=np.array(det["boxes"], dtype=np.float64).reshape(-1, 4),
                            scores=np.array(det["scores"], dtype=np.float64))
    result = rbdc_tbdc(regions, detections, total_frames)
    return {"rbdc": float(result["rbdc"]), "tbdc": float(result["tbdc"])}


def rbdc_from_heatmaps(heatmaps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> dict[str, float]:
    """RBDC/TBDC (percent) of (T', H', W') heatmaps against (T, H, W) masks at the masks' size."""
    if len(heatmaps) != len(masks):
        raise DataError(f"{len(heatmaps)} heatmaps but {len(masks)} mask stacks")
    videos = []
    for maps, m in zip(heatmaps, masks):
        m = np.asarray(m, dtype=bool)
        videos.append((heatmap_boxes(maps, len(m), (m.shape[2], m.shape[1])), m))
    return object_metrics(videos)
