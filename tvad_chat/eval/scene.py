"""Evaluate a scene profile on labelled clips: frame AUC, RBDC/TBDC, pixel metrics, TAO protocol, temporal IoU.

Every analysed frame of every clip is scored with the profile exactly as `tvad analyze` does; the metrics
are the project's own evaluators (tvad_chat.eval.frames / heatmaps / pixels). Pixel metrics need the heat
of every frame at mask size, which is accumulated frame by frame (PooledAccumulator, TaoAccumulator) and
never held for a whole clip; heat is evaluated as the 8-bit levels the PNG export holds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tvad_chat.errors import DataError
from tvad_chat.eval.frames import frame_auc
from tvad_chat.eval.heatmaps import object_metrics
from tvad_chat.eval.pixels import PixelFrame, PooledAccumulator, TaoAccumulator, choose_binning
from tvad_chat.scene.analyze import SceneAnalysis, heat_to_uint8
from tvad_chat.scene.profile import SceneProfile
from tvad_chat.scene.run import analyze_source
from tvad_chat.stages.masks import MaskSource
from tvad_chat.stages.run import Stages, run_stages

log = logging.getLogger(__name__)



@dataclass
class LabelledClip:
    """A test clip with per-frame labels and (optionally) a mask reader; what any dataset reader gives."""

    name: str
    source: str
    fps: float | None  # frame folders' rate
    labels: np.ndarray  # (N,) 0/1 per source frame
    mask: Callable[[int], np.ndarray | None] | None = None  # source index -> bool (H, W)


def evaluate_profile(profile: SceneProfile, clips: Sequence[LabelledClip], pixels: bool = True,
                     point: str | None = None, progress: Callable[[int], None] | None = None,
                     mask_source: MaskSource | None = None) -> dict[str, float | int | str]:
    """All metrics of one profile over labelled clips (percent). With ``mask_source`` (tvad_chat.stages: SAM2),
    the pixel metrics are reported again, prefixed "masks.", with the masks as the heat's outline
    (StageResults.heat); the heat of the labelled frames is kept per clip (8-bit) until its masks are made."""
    if not clips:
        raise DataError("no labelled clips to evaluate")
    scores, labels, detections, mask_stacks = {}, {}, [], []
    binning = choose_binning([PixelFrame(np.zeros((1, 1), np.uint8), np.zeros((1, 1), bool))])  # 256 exact levels
    pooled, tao = PooledAccumulator(binning), TaoAccumulator()
    masked_pooled, masked_tao = PooledAccumulator(binning), TaoAccumulator()
    with_masks = pixels and mask_source is not None
    for clip in clips:
        masks: list[np.ndarray] = []
        kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # source index -> (8-bit heat, true mask)

        def sink(index: int, heat: np.ndarray, clip: LabelledClip = clip, masks: list = masks,
                 kept: dict = kept) -> None:
            mask = clip.mask(index) if clip.mask is not None else None
            if mask is None:
                return
            masks.append(mask)
            if pixels:
                frame = PixelFrame(heat_to_uint8(heat), mask, f"{clip.name}/{index}")
                pooled.update(frame)
                tao.update(frame)
                if with_masks:
                    kept[index] = (frame.score, mask)

        analysis = analyze_source(profile, clip.source, folder_fps=clip.fps,
                                  heat_sink=sink if clip.mask is not None else None, progress=progress)
        indices = np.array([f.index for f in analysis.frames])
        if len(clip.labels) < indices.max() + 1:
            raise DataError(f"{clip.name}: {len(clip.labels)} frame labels for {indices.max() + 1} frames")
        scores[clip.name] = analysis.scores.tolist()
        labels[clip.name] = np.asarray(clip.labels)[indices].tolist()
        if clip.mask is not None:
            detections.append(([[(list(b.xyxy), b.score) for b in f.boxes if b.score > 0] for f in analysis.frames],
                               np.stack(masks)))
        mask_stacks.append(analysis)
        if with_masks and kept:
            stages = run_stages(analysis, clip.source, Stages(sam2=mask_source, enabled=True), folder_fps=clip.fps)
            for index, (heat, mask) in kept.items():
                refined = heat_to_uint8(stages.heat(index, heat.astype(np.float32) / 255.0))
                frame = PixelFrame(refined, mask, f"{clip.name}/{index}")
                masked_pooled.update(frame)
                masked_tao.update(frame)
    result: dict[str, float | int | str] = dict(frame_auc(scores, labels))
    if detections:
        result.update(object_metrics(detections))
    if pixels and detections:
        result.update({f"pixel.{k}": v for k, v in pooled.compute().items() if k != "thresholds"})
        result.update(tao.compute())
    if with_masks and detections:
        result.update({f"masks.pixel.{k}": v for k, v in masked_pooled.compute().items() if k != "thresholds"})
        result.update({f"masks.{k}": v for k, v in masked_tao.compute().items() if k != "tao.note"})
    result.update(temporal_grounding(mask_stacks, labels, point))
    return result


def temporal_grounding(analyses: Sequence[SceneAnalysis], labels: dict[str, list[int]],
                       point: str | None = None) -> dict[str, float]:
    """Temporal IoU of predicted event intervals with the labelled anomalous intervals, per clip.

    Convention (as VAU-Bench / VAGU score "when"): per clip with an anomaly, the union of predicted events
    at the operating point against the union of labelled frames, IoU over time; mean tIoU and the share of
    clips with tIoU >= 0.3 / 0.5 / 0.7 (R@0.3/0.5/0.7), in percent.
    """
    ious = []
    for analysis, frame_labels in zip(analyses, labels.values(), strict=True):
        truth = np.asarray(frame_labels, bool)
        if not truth.any():
            continue
        predicted = np.zeros(len(truth), bool)
        positions = {f.index: i for i, f in enumerate(analysis.frames)}
        for event in analysis.events(point):
            predicted[positions[event.first_index]:positions[event.last_index] + 1] = True
        union = np.count_nonzero(truth | predicted)
        ious.append(np.count_nonzero(truth & predicted) / union if union else 0.0)
    if not ious:
        return {}
    arr = np.array(ious)
    return {"tiou.mean": 100.0 * float(arr.mean()), "tiou.r@0.3": 100.0 * float((arr >= 0.3).mean()),
            "tiou.r@0.5": 100.0 * float((arr >= 0.5).mean()), "tiou.r@0.7": 100.0 * float((arr >= 0.7).mean()),
            "tiou.clips": len(ious)}
