"""Region-aware Anomaly Encoder (RAE), T-VAD §3.

X = the temporal difference of the class maps H_c (T'-1 maps of 2 channels),
a small conv+GELU backbone gives F (T'-1 x C_h x H' x W'); adaptive average
pooling to a region grid (3x3) and a two-layer MLP give one prompt per
region and step; mean pooling of F and another MLP give one global prompt;
N_base learnable base prompts are prepended. P_An: (T'-1) x (N_base + 10) x D.

``inputs="maps_and_difference"`` also feeds the later map of each step beside the difference (4 input
channels). The paper's difference alone is zero wherever the heatmap is stable over time, so a stationary
anomaly (an abandoned bag) or a steady heat blob leaves no trace in P_An; measured on the tiny model, the
difference-only prompts changed by 0.5-1 % between real and blank heatmaps and the language model ignored them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from heads.io import load_head, save_head
from tvad_chat.errors import ConfigError

INPUT_MODES = ("difference", "maps_and_difference")


@dataclass
class RAEConfig:
    text_dim: int  # D: width of the language model's embeddings
    hidden_channels: int = 32  # C_h
    num_base_prompts: int = 4  # N_base
    region_grid: tuple[int, int] = (3, 3)
    num_conv_layers: int = 2
    inputs: str = "difference"  # the paper's; or "maps_and_difference"

    def __post_init__(self) -> None:
        self.region_grid = tuple(int(v) for v in self.region_grid)
        if len(self.region_grid) != 2 or min(self.region_grid) < 1:
            raise ConfigError(f"region_grid must be two positive ints, got {self.region_grid}")
        if min(self.text_dim, self.hidden_channels, self.num_conv_layers) < 1 or self.num_base_prompts < 0:
            raise ConfigError("RAE sizes must be positive (num_base_prompts may be 0)")
        if self.inputs not in INPUT_MODES:
            raise ConfigError(f"RAE inputs must be one of {INPUT_MODES}, got {self.inputs!r}")

    @property
    def prompts_per_step(self) -> int:
        return self.num_base_prompts + self.region_grid[0] * self.region_grid[1] + 1


def _mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class RegionAwareAnomalyEncoder(nn.Module):
    config_class = RAEConfig

    def __init__(self, config: RAEConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_channels = 2 if config.inputs == "difference" else 4
        for _ in range(config.num_conv_layers):
            layers += [nn.Conv2d(in_channels, config.hidden_channels, 3, padding=1), nn.GELU()]
            in_channels = config.hidden_channels
        self.backbone = nn.Sequential(*layers)
        self.region_pool = nn.AdaptiveAvgPool2d(config.region_grid)
        self.region_mlp = _mlp(config.hidden_channels, config.text_dim)
        self.global_mlp = _mlp(config.hidden_channels, config.text_dim)
        self.base_prompts = nn.Parameter(torch.randn(config.num_base_prompts, config.text_dim) * 0.02)

    def num_steps(self, num_temporal_patches: int) -> int:
        """Difference steps for T' temporal patches (a single patch gives one zero-difference step)."""
        return max(num_temporal_patches - 1, 1)

    def num_prompt_tokens(self, num_temporal_patches: int) -> int:
        """How many placeholder pad tokens P_An fills for a clip with T' temporal patches."""
        return self.num_steps(num_temporal_patches) * self.config.prompts_per_step

    def forward(self, class_probs: Tensor) -> Tensor:
        """class_probs (T', 2, H', W') or (B, T', 2, H', W') -> P_An (…, max(T'-1, 1), N_base + R + 1, D)."""
        if class_probs.ndim not in (4, 5) or class_probs.shape[-3] != 2:
            raise ConfigError(f"RAE expects (T', 2, H', W') class maps, got {tuple(class_probs.shape)}")
        batched = class_probs.ndim == 5
        maps = class_probs if batched else class_probs[None]
        maps = maps.to(device=self.base_prompts.device, dtype=self.base_prompts.dtype)
        if maps.shape[1] > 1:
            diffs = maps[:, 1:] - maps[:, :-1]
        else:  # one temporal patch: no motion to see, one zero step keeps the prompt layout fixed
            diffs = torch.zeros_like(maps)
        x = diffs
        if self.config.inputs == "maps_and_difference":
            x = torch.cat([maps[:, -diffs.shape[1]:], diffs], dim=2)  # each step's later map beside its change
        batch, steps = x.shape[:2]
        features = self.backbone(x.flatten(0, 1))  # (B*S, C_h, H', W')
        regions = self.region_pool(features).flatten(2).transpose(1, 2)  # (B*S, R, C_h)
        region_prompts = self.region_mlp(regions)
        global_prompt = self.global_mlp(features.mean(dim=(2, 3)))[:, None]
        base = self.base_prompts.expand(features.shape[0], -1, -1)
        prompts = torch.cat([base, region_prompts, global_prompt], dim=1)
        prompts = prompts.view(batch, steps, self.config.prompts_per_step, self.config.text_dim)
        return prompts if batched else prompts[0]

    def save_pretrained(self, directory: str | Path) -> Path:
        return save_head(self, self.config, directory, "rae")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> RegionAwareAnomalyEncoder:
        return load_head(cls, directory, "rae")
