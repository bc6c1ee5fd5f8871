"""Torch dtype names as options take them (ground floor: torch is imported only when a name is parsed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tvad_chat.errors import ConfigError

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


def parse_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """A torch dtype from a name (float32/fp32, bfloat16/bf16, float16/fp16) or a dtype;
    None: bfloat16 on CUDA, float32 elsewhere."""
    import torch

    if dtype is None:
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    by_name = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
               "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in by_name:
        raise ConfigError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPE_NAMES)}")
    return by_name[dtype]
