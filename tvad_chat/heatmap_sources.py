"""Heatmap sources: where a clip's anomaly maps come from, behind one interface.

A source turns a sampled clip into class probabilities on the model's patch grid, (T', 2, H', W') with
channel 1 the abnormal probability and channel 0 = 1 - channel 1, the maps the evidence and the RAE read:

- ``AHDSource``: the Anomaly Heatmap Decoder on the tapped grids of the pipeline's one vision pass;
- ``ProfileSource``: a scene profile's per-frame heat (tvad_chat.scene), pooled onto the patch grid;
- ``FusedSource``: a weighted mean of other sources' abnormal channels.

Time follows tvad_chat.evidence: temporal patch ``p`` holds the sampled frames ``2p`` and ``2p + 1`` (an odd
last frame forms its own patch), so every source's map ``p`` describes the same frames the vision tower saw.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from heads.ahd import ABNORMAL, AHDOutput, AnomalyHeatmapDecoder
from prompts.loader import PromptSet
from tvad_chat.backbone import Backbone, VisionOutput
from tvad_chat.errors import ConfigError
from tvad_chat.evidence import TEMPORAL_PATCH
from tvad_chat.scene.profile import SceneProfile
from tvad_chat.scene.run import clip_analyzer
from tvad_chat.video import Clip, stream_clip

log = logging.getLogger(__name__)


@dataclass
class HeatmapRequest:
    """What a heatmap source may read about one clip."""

    clip: Clip  # the sampled clip (frames, frame_indices, timestamps, source)
    grid: tuple[int, int, int]  # (T', H', W'): the model's patch grid, the shape of the maps to return
    vision: VisionOutput | None = None  # the pipeline's vision pass (the AHD reads its tapped grids)
    prompts: PromptSet | None = None  # the class prompts of this analysis (None: the source's own)


class HeatmapSource(Protocol):
    """Anything that gives a clip's class probabilities on the patch grid."""

    name: str  # says which source decided, in outputs and logs

    def class_probs(self, request: HeatmapRequest) -> Tensor:
        """(T', 2, H', W') float32: channel 1 the abnormal probability, channel 0 = 1 - channel 1."""
        ...


def checked_class_probs(source: HeatmapSource, request: HeatmapRequest) -> Tensor:
    """``source``'s class probabilities for ``request``, refused unless they are (T', 2, H', W') of its grid."""
    probs = source.class_probs(request)
    expected = (request.grid[0], 2, request.grid[1], request.grid[2])
    if tuple(probs.shape) != expected:
        raise ConfigError(f"heatmap source {source.name} gave maps {tuple(probs.shape)}; the patch grid "
                          f"{request.grid} needs {expected}")
    return probs


def from_abnormal(abnormal: Tensor) -> Tensor:
    """Class probabilities (T', 2, H', W') from abnormal probabilities (T', H', W')."""
    abnormal = abnormal.to(torch.float32).clamp(0.0, 1.0)
    return torch.stack([1.0 - abnormal, abnormal], dim=1)


def ahd_outputs(ahd: AnomalyHeatmapDecoder, backbone: Backbone, vision: VisionOutput, prompts: PromptSet,
                grad: bool = False) -> AHDOutput:
    """The AHD on the tapped grids of a vision pass, against the class vectors of ``prompts``."""
    if len(vision.grids) != len(ahd.config.tap_layers):
        raise ConfigError(f"the AHD reads {len(ahd.config.tap_layers)} tapped grids but this vision pass kept "
                          f"{len(vision.grids)}: encode the clip with the AHD's tap layers")
    grids = [g.to(dtype=torch.float32) for g in vision.grids]
    class_vectors = backbone.class_vectors(prompts).to(grids[0].device)
    with torch.set_grad_enabled(grad):
        return ahd(grids, class_vectors)


class AHDSource:
    """The model's own maps: the AHD on the tapped grids of the vision pass the pipeline already ran."""

    name = "ahd"

    def __init__(self, ahd: AnomalyHeatmapDecoder, backbone: Backbone, prompts: PromptSet) -> None:
        self.ahd = ahd
        self.backbone = backbone
        self.prompts = prompts

    def class_probs(self, request: HeatmapRequest) -> Tensor:
        if request.vision is None:
            raise ConfigError("the AHD reads the clip's vision pass: give the request its VisionOutput")
        out = ahd_outputs(self.ahd, self.backbone, request.vision, request.prompts or self.prompts)
        return out.class_probs.detach()


class ProfileSource:
    """A scene profile's heat, pooled onto the patch grid.

    The clip's source is streamed from ``warmup`` frames before its first sampled frame (the profile's
    robust filter counts a box once its track has ``min_hits`` of the last ``hit_window`` frames, and the
    first frame of a stream has no optical flow) to its last sampled frame; every frame goes through a
    SceneAnalyzer that starts from the clip's own background, as ``tvad analyze --profile`` does
    (tvad_chat.scene.run.analyze_source), so a clip that starts at frame 0 gets exactly its heat. The heat
    maps of each temporal patch's sampled frames are pooled by their maximum (an object seen in either
    frame counts, as the AHD targets OR-merge the two frames), then each H' x W' cell takes the highest heat
    inside it (``adaptive_max_pool2d`` bins): a cell holding a flagged object is abnormal, as a cell partly
    covered by an anomaly mask is an abnormal AHD target; an area average would dilute a small object's heat
    below 0.5 in cells much larger than it.
    """

    def __init__(self, profile: SceneProfile) -> None:
        self.profile = profile
        self.name = f"profile:{profile.name}"
        self.warmup = max(profile.scoring.hit_window, profile.scoring.track_window)

    def class_probs(self, request: HeatmapRequest) -> Tensor:
        clip = request.clip
        num_patches, grid_h, grid_w = (int(v) for v in request.grid)
        if len(clip.frame_indices) == 0:
            raise ConfigError("the clip has no frames")
        patches = np.minimum(np.arange(len(clip.frame_indices)) // TEMPORAL_PATCH, num_patches - 1)
        patch_of_index: dict[int, list[int]] = {}
        for index, patch in zip(clip.frame_indices.tolist(), patches.tolist(), strict=True):
            patch_of_index.setdefault(int(index), []).append(int(patch))
        first, last = min(patch_of_index), max(patch_of_index)
        start = max(first - self.warmup, 0)
        width, height = self.profile.size
        pooled = np.zeros((num_patches, height, width), np.float32)
        seen: set[int] = set()

        def keep(index: int, heat: np.ndarray) -> None:
            for patch in patch_of_index.get(index, ()):
                np.maximum(pooled[patch], heat, out=pooled[patch])
            seen.add(index)

        folder_fps = clip.source_fps if clip.source.is_dir() else None
        analyzer = clip_analyzer(self.profile, clip.source, folder_fps)
        with closing(stream_clip(clip.source, folder_fps=folder_fps)) as chunks:
            for chunk in chunks:
                for frame, index, time in zip(chunk.frames, chunk.frame_indices.tolist(), chunk.timestamps.tolist(),
                                              strict=True):
                    if index < start:
                        continue
                    analyzer.push(frame, index, time, keep if index in patch_of_index else None)
                if int(chunk.frame_indices[-1]) >= last:
                    break
        missing = sorted(set(patch_of_index) - seen)
        if missing:
            raise ConfigError(f"{clip.source.name} has no frames {missing[:5]}: the clip's source changed "
                              "since it was sampled; load the clip again")
        cells = F.adaptive_max_pool2d(torch.from_numpy(pooled)[:, None], (grid_h, grid_w))[:, 0]
        log.debug("%s: %d source frames from %d, peak heat %.3f on the patch grid", self.name,
                  last - start + 1, start, float(cells.max()))
        return from_abnormal(cells)


class FusedSource:
    """Several sources fused into one map by a weighted mean of their abnormal channels.

    Rule: abnormal = sum_i w_i * abnormal_i / sum_i w_i per patch cell, normal = 1 - abnormal. The
    weights say how far each source is trusted; every source answers the same request.
    """

    def __init__(self, sources: Sequence[HeatmapSource], weights: Sequence[float] | None = None) -> None:
        if not sources:
            raise ConfigError("fusing heatmaps needs at least one source")
        weights = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
        if len(weights) != len(sources):
            raise ConfigError(f"give one weight per heatmap source: {len(sources)} sources, {len(weights)} weights")
        if not all(np.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"heatmap source weights must be finite, >= 0 and not all 0, got {weights}")
        self.sources = list(sources)
        self.weights = weights
        self.name = "fused(" + ", ".join(f"{s.name} {w:g}" for s, w in zip(self.sources, weights, strict=True)) + ")"

    def class_probs(self, request: HeatmapRequest) -> Tensor:
        # A mean, not a max: with a max, every false alarm of any one source (an untrained or off-domain AHD at
        # chance, a profile of a similar but different camera) would pass at full strength, and adding a source
        # could only ever add alarms. The weighted mean keeps a probability in which sources that agree
        # reinforce each other and one source's stray heat is diluted by the others' calm.
        total = sum(self.weights)
        fused: Tensor | None = None
        for source, weight in zip(self.sources, self.weights, strict=True):
            probs = checked_class_probs(source, request)
            part = probs[:, ABNORMAL].to(torch.float32) * (weight / total)
            fused = part if fused is None else fused + part.to(fused.device)
        return from_abnormal(fused)
