"""Loading a T-VAD model for the page and the CLI: a checkpoint through ``TVAD.from_pretrained``, or, when the
shipped default checkpoint is missing, the same architecture with random weights (labelled untrained).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from heads.ahd import AHDConfig, AnomalyHeatmapDecoder
from heads.rae import RAEConfig, RegionAwareAnomalyEncoder
from tvad_chat.backbone import Backbone
from tvad_chat.errors import CheckpointError, ConfigError, TVADError
from tvad_chat.pipeline import TVAD, TVADConfig

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "checkpoints/tvad-tiny"
REPO_ROOT = Path(__file__).resolve().parents[1]
LIMITATIONS_FILE = "LIMITATIONS.txt"  # optional plain-text caveat shipped inside a checkpoint folder


@dataclass
class ModelInfo:
    """Where the loaded model came from and whether it was trained (the page says so plainly)."""

    source: str
    trained: bool
    variant: str
    note: str = ""


MODELS_DIR_ENV = "TVAD_MODELS_DIR"  # a folder of model folders the page may offer
ALLOW_HUB_ENV = "TVAD_ALLOW_HUB"  # "1": the page accepts hub ids (owner/name) too
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def allowed_models(default: str = DEFAULT_MODEL) -> list[str]:
    """Models a page user may choose: ``default``, the repository's checkpoints (checkpoints/NAME) and the model
    folders in TVAD_MODELS_DIR (by folder name). Listed by the server; nothing a user types is looked up."""
    names = [default]
    folders = [(REPO_ROOT / "checkpoints", "checkpoints/")]
    if os.environ.get(MODELS_DIR_ENV):
        folders.append((Path(os.environ[MODELS_DIR_ENV]).expanduser(), ""))
    for folder, prefix in folders:
        if folder.is_dir():
            names += [prefix + d.name for d in sorted(folder.iterdir()) if (d / "config.json").is_file()]
    return list(dict.fromkeys(names))


def allowed_model_source(value: str, default: str = DEFAULT_MODEL) -> str:
    """The model source to load for a page user's choice, if the allow-list has it; else a ConfigError that names
    the choices and says nothing about the server's files."""
    value = (value or "").strip()
    if value in allowed_models(default):
        if value.startswith("checkpoints/") or value == default:
            return value
        return str(Path(os.environ[MODELS_DIR_ENV]).expanduser() / value)
    if os.environ.get(ALLOW_HUB_ENV) == "1" and _HUB_ID.fullmatch(value) and not value.startswith((".", "/")):
        return value
    hub = " or a hub id (owner/name)" if os.environ.get(ALLOW_HUB_ENV) == "1" else ""
    raise ConfigError(f"model {value!r} is not offered here: choose one of {', '.join(allowed_models(default))}"
                      f"{hub}")


def build_untrained_model(seed: int = 0, max_new_tokens: int = 32) -> TVAD:
    """The real T-VAD pipeline (tiny Qwen2.5-VL + AHD + RAE) with random weights, built offline.

    Used when no trained checkpoint exists, so the app and CLI still run end to end; its answers are noise
    and every caller must say so (ModelInfo.trained is False).
    """
    backbone = Backbone.from_tiny(seed=seed)
    depth = backbone.vision_depth
    taps = sorted({max(1, round(depth * k / 4)) for k in (0.25, 1, 2, 4)})
    torch.manual_seed(seed)
    ahd = AnomalyHeatmapDecoder(AHDConfig(vision_dim=backbone.vision_dim, text_dim=backbone.text_dim,
                                          tap_layers=taps))
    rae = RegionAwareAnomalyEncoder(RAEConfig(text_dim=backbone.text_dim))
    return TVAD(backbone, ahd=ahd, rae=rae, config=TVADConfig(max_pixels=224 * 336, max_new_tokens=max_new_tokens))


def _is_default(source: str) -> bool:
    path = Path(source).expanduser()
    return path == Path(DEFAULT_MODEL) or path.resolve() == (REPO_ROOT / DEFAULT_MODEL).resolve()


def load_model(source: str = DEFAULT_MODEL, device: str | None = None, dtype: str | None = None,
               load_in_4bit: bool = False) -> tuple[TVAD, ModelInfo]:
    """Load T-VAD from a directory or hub id; the missing default checkpoint falls back to an untrained tiny model.

    The default is looked up in the working directory, then in the repository the package sits in.
    """
    source = (source or DEFAULT_MODEL).strip()
    named = source  # as the user named it: reports and messages say this, never the resolved server path
    if _is_default(source) and not (Path(source).expanduser() / "config.json").is_file():
        if (REPO_ROOT / DEFAULT_MODEL / "config.json").is_file():
            source = str(REPO_ROOT / DEFAULT_MODEL)
        else:
            logger.warning("no trained checkpoint at %s: building an untrained tiny model", DEFAULT_MODEL)
            model = build_untrained_model()
            return model, ModelInfo(
                source="tiny (built offline)", trained=False, variant=model.variant,
                note=(f"No trained checkpoint at {DEFAULT_MODEL}: this is the tiny model with RANDOM weights. "
                      "Its answers, heatmaps and scores are noise; train one (`tvad train`) or set a model "
                      "directory in Settings."),
            )
    try:
        model = TVAD.from_pretrained(source, dtype=dtype, device=device, load_in_4bit=load_in_4bit)
    except TVADError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the model {named!r}: {exc}") from exc
    # A checkpoint may carry a short statement of what it cannot do; the page and CLI show it.
    limits_file = Path(source) / LIMITATIONS_FILE
    note = " ".join(limits_file.read_text(encoding="utf-8").split()) if limits_file.is_file() else ""
    return model, ModelInfo(source=named, trained=True, variant=model.variant, note=note)
