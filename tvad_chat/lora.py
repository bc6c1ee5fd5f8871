"""Stage-2 LoRA through peft: q_proj/v_proj of the language model, the anomaly-token rows, merging.

No module of the Qwen2.5-VL vision tower is called q_proj/v_proj (it uses a fused ``qkv``), so these target
names touch only the language model; ``layers_pattern="layers"`` restricts phase B to the last decoder layers
(the vision tower's blocks live under ``blocks``). The new token rows train through peft's
``trainable_token_indices`` (a delta on just those rows), which ``merge_and_unload`` folds into the table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from tvad_chat.backbone import Backbone
from tvad_chat.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class LoraSettings:
    """The paper's stage-2 LoRA: r 16, alpha 32, dropout 0.05 on q_proj/v_proj."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    last_layers: int | None = None  # phase B: 4 (only the last four decoder layers)
    train_new_tokens: bool = True  # the <|anomaly_start|>/<|anomaly_pad|>/<|anomaly_end|> rows

    def validate(self, num_layers: int) -> None:
        if self.r <= 0 or self.alpha <= 0:
            raise ConfigError(f"LoRA r and alpha must be positive (got r={self.r}, alpha={self.alpha})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if self.last_layers is not None and not 1 <= self.last_layers <= num_layers:
            raise ConfigError(f"last_layers must be in 1..{num_layers}, got {self.last_layers}")


def freeze(module: torch.nn.Module) -> None:
    """Stop gradients to every parameter of ``module`` (the frozen backbone of stages 1 and 2)."""
    for p in module.parameters():
        p.requires_grad_(False)


def apply_lora(backbone: Backbone, settings: LoraSettings | None = None):
    """Freeze the backbone and add LoRA adapters (and trainable new-token rows) in place; returns the PeftModel.

    ``backbone.model`` keeps pointing at the same transformers model, whose modules now carry the adapters,
    so every Backbone method trains through them; ``backbone.peft_model`` holds the wrapper for merging.
    """
    from peft import LoraConfig, get_peft_model

    settings = settings or LoraSettings()
    if backbone.peft_model is not None:
        raise ConfigError("LoRA is already applied to this backbone: merge it (merge_lora) before adding another")
    num_layers = int(backbone.model.config.text_config.num_hidden_layers)
    settings.validate(num_layers)
    freeze(backbone.model)
    layers = list(range(num_layers - settings.last_layers, num_layers)) if settings.last_layers else None
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        layers_to_transform=layers,
        layers_pattern="layers" if layers else None,
        trainable_token_indices={"embed_tokens": list(backbone.anomaly_token_ids)} if settings.train_new_tokens else None,
        bias="none",
    )
    training = backbone.model.training
    peft_model = get_peft_model(backbone.model, config)
    # peft builds its adapter modules (with their dropout) in training mode whatever the model's mode; keep them
    # in the model's mode, or an answer right after apply_lora on an eval-mode model would drop adapter inputs
    peft_model.train(training)
    stray = [n for n, p in peft_model.named_parameters() if p.requires_grad and ".visual." in n]
    if stray:
        raise ConfigError(f"LoRA reached the vision tower ({stray[:3]}): use language-model module names only")
    backbone.peft_model = peft_model
    logger.info("LoRA on %s of %s decoder layers: %d trainable parameters",
                "/".join(settings.target_modules), f"the last {settings.last_layers}" if layers else "all",
                sum(p.numel() for p in lora_parameters(backbone)))
    return peft_model


def lora_parameters(backbone: Backbone) -> list[torch.nn.Parameter]:
    """The trainable parameters peft added (LoRA A/B matrices and the new-token delta)."""
    if backbone.peft_model is None:
        return []
    return [p for p in backbone.peft_model.parameters() if p.requires_grad]


def merge_lora(backbone: Backbone) -> None:
    """Fold the adapters and the token delta into the base weights; the backbone is plain transformers again."""
    if backbone.peft_model is None:
        raise ConfigError("no LoRA adapters to merge on this backbone")
    backbone.model = backbone.peft_model.merge_and_unload()
    backbone.peft_model = None
    backbone.model.eval()

