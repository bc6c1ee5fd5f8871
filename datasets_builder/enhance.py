"""The anomaly-focused pass: look again at the anomaly alone.

For every frame with an anomaly mask, everything outside the (slightly
dilated) mask is Gaussian-blurred, the frame is extracted again, and only the
instances the mask covers are kept. They are associated along time and the
timelines that are long, confident and cover the masked frames well become
the high-confidence anomaly timelines the anomaly-focused QA is built from.

Whether an instance is the masked target is judged by the mask's extent,
not its pixel count: a silhouette fills only part of its box (a walking
person about half, a falling one less), so "share of the box's pixels under
the mask" drops true targets. The mask's regions' bounding boxes are what a
box-only backend can be compared with: a true target's box lies inside them
whatever its shape, a hallucination on the blurred background or a passer-by
brushing the mask's edge does not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from scipy import ndimage

from datasets_builder.extract import ExtractionBackend, FrameRecord, FrameTask
from datasets_builder.timeline import AssociationConfig, Timeline, associate

log = logging.getLogger(__name__)


@dataclass
class EnhanceConfig:
    sigma: float = 9.0  # Gaussian blur sigma, in pixels of the source frame
    dilate_px: int = 5  # grow the mask so the target's outline stays sharp
    min_mask_overlap: float = 0.5  # share of an instance's box inside the mask regions' boxes
    min_observations: int = 2
    min_confidence: float = 0.5  # mean confidence of a kept timeline
    min_coverage: float = 0.5  # share of the masked frames in its span a kept timeline is seen in
    min_mean_overlap: float = 0.7  # the same share, mean over a kept timeline's boxes (drops passers-by)
    # Ground truth says which instance is anomalous: then a normal target crossing the mask is not kept.
    trust_backend_flags: bool = False


def mask_and_blur(image: np.ndarray, mask: np.ndarray, sigma: float = 9.0, dilate_px: int = 5) -> np.ndarray:
    """Keep pixels under the (dilated) mask, Gaussian-blur the rest. Returns a new uint8 image."""
    if image.shape[:2] != mask.shape[:2]:
        mask = cv2.resize(mask.astype(np.uint8), (image.shape[1], image.shape[0]),
                          interpolation=cv2.INTER_NEAREST)
    keep = mask.astype(bool)
    if dilate_px > 0:
        k = 2 * dilate_px + 1
        keep = cv2.dilate(keep.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    out = blurred.copy()
    out[keep] = image[keep]
    return out


def mask_region_boxes(mask: np.ndarray, join: float = 0.02) -> np.ndarray:
    """The mask with each of its regions replaced by the region's filled bounding box.

    A target's silhouette and its box then cover the same pixels, whatever the share of the box the
    silhouette fills. Parts closer than ``join`` of the frame's shorter side are one region: a small
    person's silhouette breaks into head, limbs and bits around an occluder.
    """
    m = mask.astype(bool)
    px = max(1, round(join * min(m.shape[:2])))
    joined = cv2.dilate(m.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8))
    _, labels = cv2.connectedComponents(joined, connectivity=8)
    out = np.zeros(m.shape, bool)
    for sl in ndimage.find_objects(np.where(m, labels, 0)):  # each region's extent on its own pixels
        if sl is not None:
            out[sl] = True
    return out


def mask_box_overlap(mask: np.ndarray, box: Sequence[float]) -> float:
    """Share of the box's pixels that the mask covers (pass mask_region_boxes(mask) to judge by extent)."""
    h, w = mask.shape[:2]
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if x2 <= x1 or y2 <= y1:
        return 0.0
    return float(mask[y1:y2, x1:x2].astype(bool).mean())


@dataclass
class EnhanceResult:
    records: list[FrameRecord]  # re-extracted masked frames, instances restricted to the mask
    timelines: list[Timeline]  # high-confidence anomaly timelines
    rejected: list[tuple[Timeline, str]] = field(default_factory=list)  # and why each other one was dropped
    masked_frames: int = 0


def anomaly_focused_pass(
    tasks: Sequence[FrameTask],
    masks: Mapping[int, np.ndarray],
    backend: ExtractionBackend,
    config: EnhanceConfig | None = None,
    association: AssociationConfig | None = None,
) -> EnhanceResult:
    """Extract masked-and-blurred frames again and aggregate high-confidence anomaly timelines.

    ``masks`` maps frame index -> boolean mask (H, W) in source-frame pixels;
    frames without a mask or with an empty one are skipped.
    """
    cfg = config or EnhanceConfig()
    focus_tasks: list[FrameTask] = []
    for t in tasks:
        m = masks.get(t.frame_index)
        if m is None or not np.any(m):
            continue
        img = mask_and_blur(t.image, m, cfg.sigma, cfg.dilate_px) if t.image is not None else None
        focus_tasks.append(replace(t, image=img))
    if not focus_tasks:
        return EnhanceResult(records=[], timelines=[], masked_frames=0)
    records = backend.extract_many(focus_tasks)
    extents = {rec.frame_index: mask_region_boxes(masks[rec.frame_index]) for rec in records}
    for rec in records:
        m = extents[rec.frame_index]
        kept = []
        for inst in rec.instances:
            if mask_box_overlap(m, inst.box) < cfg.min_mask_overlap:
                continue
            if cfg.trust_backend_flags and inst.anomalous is False:
                continue
            inst.anomalous = True  # the mask is the evidence here
            kept.append(inst)
        rec.instances = kept
    timelines = associate(records, association, prefix="a")
    masked = sorted(rec.frame_index for rec in records)
    good: list[Timeline] = []
    rejected: list[tuple[Timeline, str]] = []
    for tl in timelines:
        span = [f for f in masked if tl.start_frame <= f <= tl.end_frame]
        coverage = len(tl.observations) / max(1, len(span))
        need = min(cfg.min_observations, len(masked))
        overlap = float(np.mean([mask_box_overlap(extents[o.frame_index], o.box) for o in tl.observations]))
        if len(tl.observations) < need:
            rejected.append((tl, f"seen in {len(tl.observations)} frame(s) < {need}"))
        elif tl.confidence < cfg.min_confidence:
            rejected.append((tl, f"mean confidence {tl.confidence:.2f} < {cfg.min_confidence}"))
        elif coverage < cfg.min_coverage:
            rejected.append((tl, f"seen in {coverage:.0%} of its masked frames < {cfg.min_coverage:.0%}"))
        elif overlap < cfg.min_mean_overlap:
            rejected.append((tl, f"{overlap:.0%} of its boxes inside the mask regions on average "
                                 f"< {cfg.min_mean_overlap:.0%}"))
        else:
            good.append(tl)
    # most salient first: longest, then most confident
    good.sort(key=lambda t: (-len(t.observations), -t.confidence, t.start_frame))
    log.debug("anomaly-focused pass: %d masked frames, %d timelines kept, %d rejected",
              len(masked), len(good), len(rejected))
    return EnhanceResult(records=records, timelines=good, rejected=rejected, masked_frames=len(masked))
