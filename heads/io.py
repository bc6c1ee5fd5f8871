"""Save and load heads like Hugging Face models: config.json + model.safetensors, nothing pickled."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from tvad_chat.errors import CheckpointError
from tvad_chat.files import atomic_output, atomic_write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_head(module: nn.Module, config: Any, directory: str | Path, head_type: str) -> Path:
    """Write config.json and model.safetensors into ``directory`` (each file replaced atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"head_type": head_type, **asdict(config)}
    atomic_write_text(directory / CONFIG_NAME, json.dumps(payload, indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_output(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"head_type": head_type})
    return directory


def load_head(cls: type, directory: str | Path, head_type: str) -> nn.Module:
    """Build ``cls`` from ``directory``'s config and load its safetensors weights strictly."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory: pass the folder written by save_pretrained()")
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(
                f"{directory} has no {path.name}: a {head_type} checkpoint needs config.json and model.safetensors"
            )
    try:
        raw = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{config_path} is not valid JSON ({err}); re-save the head") from err
    if raw.pop("head_type", head_type) != head_type:
        raise CheckpointError(f"{directory} holds a different head, not an {head_type}")
    known = {f.name for f in fields(cls.config_class)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CheckpointError(f"{config_path} has unknown keys {unknown}: it was written by another version")
    try:
        config = cls.config_class(**raw)
        module = cls(config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path} does not describe a valid {head_type}: {err}") from err
    try:
        state = load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{weights_path} is not a readable safetensors file ({err})") from err
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{weights_path} does not match its config.json: {err}") from err
    return module
