"""Where a stage's weights come from: a local file or folder, or a hub id found in the local hub cache.

Nothing is downloaded where the hub is unreachable or HF_HUB_OFFLINE is set: a hub id that is not cached is a
CheckpointError that says which files are missing and how to fetch them on a machine with internet. The device
is CUDA when present (bf16 autocast), the CPU otherwise (float32; SAM2 with bf16 autocast, see :func:`inference`).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tvad_chat.errors import CheckpointError

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Weights:
    """A resolved weights location: a local path (file or folder), and the hub id it came from (if any)."""

    path: Path
    hub_id: str | None = None


def resolve_weights(spec: str, stage: str, option: str, hub_files: tuple[str, ...], fetch: str = "") -> Weights:
    """``spec`` as a local file or folder, else as a hub id: the folder of its files matching ``hub_files`` (glob
    patterns) from the local hub cache, or downloaded when online.

    ``stage`` names the stage in messages ("SAM2 masks"), ``option`` the option that takes the weights ("--sam2"),
    ``fetch`` the files to name in the download command the message gives (default: the whole repository).
    """
    spec = str(spec).strip()
    if not spec:
        raise CheckpointError(f"{option} is empty: give a local checkpoint file or folder, or a hub id")
    path = Path(spec).expanduser()
    if path.exists():
        return Weights(path)
    if not HUB_ID.match(spec):
        raise CheckpointError(f"{stage}: {spec} does not exist; give {option} an existing checkpoint file or folder, "
                              "or a hub id such as org/name")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id=spec, allow_patterns=list(hub_files)))
    except LocalEntryNotFoundError:
        command = " ".join(part for part in ("hf download", spec, fetch, "--local-dir", spec.split("/")[-1]) if part)
        raise CheckpointError(
            f"{stage}: the weights {spec!r} are not on this machine (not in the hub cache) and cannot be downloaded "
            f"here (offline). On a machine with internet run `{command}`, copy that folder here and give {option} "
            f"its path (or copy the hub cache, HF_HOME, and keep {option} {spec}).") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointError(f"{stage}: could not fetch {spec!r} ({exc}); give {option} a local checkpoint "
                              "instead") from None
    return Weights(folder, spec)


def stage_device(device: str | None = None) -> torch.device:
    """The device a stage runs on: the one asked for, else CUDA when present, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def inference(device: torch.device, bf16_on_cpu: bool = False) -> Iterator[None]:
    """No gradients; bf16 autocast on CUDA, and on the CPU with ``bf16_on_cpu`` (float32 otherwise).

    SAM2's video predictor stores each frame's memory in bf16 whatever the device, so past the first frames its
    memory attention meets float32 weights on the CPU unless autocast is on there too."""
    with torch.inference_mode():
        if device.type == "cuda" or bf16_on_cpu:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
