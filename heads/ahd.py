"""Anomaly Heatmap Decoder (AHD), T-VAD §3.

Per tapped vision layer i, an MLP maps patch features (D_v) into the text
space (D); cosine similarity with the normal and abnormal class vectors,
times a learnable scale, gives h_c^i (T' x 2 x H' x W'). Learnable weights
w_i (softmax-normalised, so they stay a convex mix) fuse the layers:
H_c = sum_i w_i h_c^i. A softmax over the class channel gives the class
probabilities; the abnormal channel is the heatmap H.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heads.io import load_head, save_head
from tvad_chat.errors import ConfigError

NORMAL, ABNORMAL = 0, 1


@dataclass
class AHDConfig:
    vision_dim: int  # D_v of the tapped vision blocks
    text_dim: int  # D: the language model's hidden size, where the class vectors live
    tap_layers: list[int] = field(default_factory=lambda: [1, 8, 16, 32])  # 1-based; 0 = patch embedding
    mlp_hidden: int | None = None  # hidden width of each projection MLP (default: text_dim)
    init_logit_scale: float = 10.0  # cosine similarities are in [-1, 1]; the scale sharpens the softmax

    def __post_init__(self) -> None:
        self.tap_layers = [int(t) for t in self.tap_layers]
        if not self.tap_layers or min(self.tap_layers) < 0:
            raise ConfigError(f"tap_layers must be a non-empty list of block indices >= 0, got {self.tap_layers}")
        if self.vision_dim <= 0 or self.text_dim <= 0 or (self.mlp_hidden is not None and self.mlp_hidden <= 0):
            raise ConfigError("vision_dim, text_dim and mlp_hidden must be positive")
        if not self.init_logit_scale > 0:
            raise ConfigError(f"init_logit_scale must be positive, got {self.init_logit_scale}")


@dataclass
class AHDOutput:
    class_logits: Tensor  # (..., T', 2, H', W') fused scaled similarities
    class_probs: Tensor  # softmax over the class channel
    heatmap: Tensor  # (..., T', H', W') abnormal probability
    layer_logits: list[Tensor]  # h_c^i per tap, before fusion (for inspection)


class AnomalyHeatmapDecoder(nn.Module):
    config_class = AHDConfig

    def __init__(self, config: AHDConfig):
        super().__init__()
        self.config = config
        hidden = config.mlp_hidden or config.text_dim
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Linear(config.vision_dim, hidden), nn.GELU(), nn.Linear(hidden, config.text_dim))
            for _ in config.tap_layers
        )
        self.layer_weight_logits = nn.Parameter(torch.zeros(len(config.tap_layers)))
        # Stored as a log (as CLIP does) so the learnt scale stays positive: a negative one would swap the classes.
        self.log_logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)).log())

    @property
    def logit_scale(self) -> Tensor:
        """Multiplier of the cosine similarities, capped at 100 to keep the softmax trainable."""
        return self.log_logit_scale.exp().clamp(max=100.0)

    @property
    def layer_weights(self) -> Tensor:
        """w_i, normalised to sum to one."""
        return self.layer_weight_logits.softmax(0)

    def forward(self, layer_grids: list[Tensor], class_vectors: Tensor) -> AHDOutput:
        """layer_grids: one (…, T', H', W', D_v) grid per tap; class_vectors: (2, D) = [normal, abnormal]."""
        if len(layer_grids) != len(self.projections):
            raise ConfigError(f"AHD expects {len(self.projections)} tapped grids, got {len(layer_grids)}")
        if class_vectors.shape != (2, self.config.text_dim):
            raise ConfigError(f"class_vectors must be (2, {self.config.text_dim}), got {tuple(class_vectors.shape)}")
        shape = layer_grids[0].shape
        for grid in layer_grids:
            if grid.ndim not in (4, 5) or grid.shape[-1] != self.config.vision_dim or grid.shape != shape:
                raise ConfigError(f"tapped grids must all be (…, T', H', W', {self.config.vision_dim}), got "
                                  f"{[tuple(g.shape) for g in layer_grids]}")
        param = self.log_logit_scale  # inputs follow the head's device and dtype
        classes = F.normalize(class_vectors.to(device=param.device, dtype=param.dtype), dim=-1)
        weights = self.layer_weights
        layer_logits = []
        fused = None
        for weight, projection, grid in zip(weights, self.projections, layer_grids):
            features = F.normalize(projection(grid.to(device=param.device, dtype=param.dtype)), dim=-1)
            # (..., T', H', W', 2) -> (..., T', 2, H', W')
            logits = self.logit_scale * torch.einsum("...hwd,cd->...chw", features, classes)
            layer_logits.append(logits)
            fused = weight * logits if fused is None else fused + weight * logits
        probs = fused.softmax(dim=-3)
        return AHDOutput(class_logits=fused, class_probs=probs, heatmap=probs[..., ABNORMAL, :, :],
                         layer_logits=layer_logits)

    def loss(self, output: AHDOutput, masks: Tensor, class_weights: Tensor | None = None) -> Tensor:
        """Pixel cross-entropy on the patch grid: masks (…, T', H', W') with 1 = anomalous patch."""
        logits = output.class_logits
        if masks.shape != logits.shape[:-3] + logits.shape[-2:]:
            raise ConfigError(f"mask grid {tuple(masks.shape)} does not match heatmap grid "
                              f"{tuple(logits.shape[:-3] + logits.shape[-2:])}")
        flat_logits = logits.movedim(-3, -1).reshape(-1, 2)
        targets = masks.reshape(-1).to(device=flat_logits.device, dtype=torch.long)
        if class_weights is not None:
            class_weights = class_weights.to(device=flat_logits.device, dtype=flat_logits.dtype)
        return F.cross_entropy(flat_logits, targets, weight=class_weights)

    def save_pretrained(self, directory: str | Path) -> Path:
        return save_head(self, self.config, directory, "ahd")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> AnomalyHeatmapDecoder:
        return load_head(cls, directory, "ahd")


def masks_to_patch_grid(masks: Tensor | np.ndarray, grid: tuple[int, int], temporal_patch: int = 2,
                        min_fraction: float = 0.1) -> Tensor:
    """Downsample pixel masks (T, H, W) to the heatmap grid (T', H', W'), T' = ceil(T / temporal_patch).

    The rule, in two steps:
    - spatially, each frame is cut into H' x W' cells (``adaptive_avg_pool2d`` bins, so H and W need not
      be multiples of the grid) and a cell is anomalous when at least ``min_fraction`` of its pixels are
      (area averaging: a small distant object still marks the cell it mostly occupies, while a few stray
      pixels of a neighbouring object do not); ``min_fraction=0`` means "any pixel";
    - temporally, the ``temporal_patch`` frames of one temporal patch are OR-merged. An odd last frame
      forms its own temporal patch, as the Qwen2.5-VL processor repeats the last frame to fill it.
    Returns int64 0/1 labels, the targets of :meth:`AnomalyHeatmapDecoder.loss`.
    """
    masks = torch.as_tensor(np.asarray(masks)) if isinstance(masks, np.ndarray) else masks
    if masks.ndim != 3 or masks.shape[0] == 0:
        raise ConfigError(f"masks must be a non-empty (T, H, W) stack, got {tuple(masks.shape)}")
    grid = (int(grid[0]), int(grid[1]))
    if min(grid) < 1 or temporal_patch < 1 or not 0.0 <= min_fraction <= 1.0:
        raise ConfigError(f"bad patch grid {grid}, temporal_patch {temporal_patch} or min_fraction {min_fraction}")
    area = F.adaptive_avg_pool2d((masks != 0).float()[:, None], grid)[:, 0]  # (T, H', W') anomalous fraction
    per_frame = area > 0 if min_fraction == 0 else area >= min_fraction
    pad = (-per_frame.shape[0]) % temporal_patch
    if pad:
        per_frame = torch.cat([per_frame, per_frame[-1:].expand(pad, -1, -1)])
    return per_frame.view(-1, temporal_patch, *grid).any(dim=1).long()
