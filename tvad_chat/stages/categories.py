"""Open-vocabulary categories of the anomalous tracks, behind one interface: none (weight-free) or CLIP.

``ClipCategoriser`` (as LAVIDA names anomalies zero-shot): an open_clip model embeds each anomalous track's crops
(its ``MAX_CROPS`` highest-scoring anomalous boxes, padded by ``CROP_PAD``) and the category texts (every category
in each template of prompts/categories.yaml, the templates' embeddings averaged); the mean crop embedding against
the category embeddings, scaled by the model's logit scale, softmaxed over the categories, gives scores that sum
to 1, ranked from the most likely.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import yaml

from prompts.loader import clean_events, read_prompt_file
from tvad_chat.errors import CheckpointError, ConfigError
from tvad_chat.stages.loading import inference, resolve_weights, stage_device
from tvad_chat.stages.masks import FrameReader, StepProgress, box_region
from tvad_chat.stages.tao import TrackBox

log = logging.getLogger(__name__)

CATEGORIES_FILE = "categories.yaml"
MAX_CROPS = 8  # per track: its highest-scoring anomalous boxes
CROP_PAD = 0.15  # of the box's width and height, on each side
CLIP_CONFIG = "open_clip_config.json"
CLIP_HUB_FILES = (CLIP_CONFIG, "open_clip_model.safetensors", "open_clip_pytorch_model.bin", "tokenizer*",
                  "vocab*", "merges.txt", "special_tokens_map.json", "*.model")


@dataclass(frozen=True)
class CategorySet:
    names: tuple[str, ...]
    templates: tuple[str, ...]  # each holds {category}


@dataclass(frozen=True)
class Ranked:
    name: str
    score: float  # softmax probability over the category set


Ranking = list[Ranked]  # the most likely first; the scores sum to 1


def load_categories(extra: Sequence[str] | str | None = None) -> CategorySet:
    """prompts/categories.yaml's categories and templates, the user's categories (--events, Settings) added."""
    try:
        data = yaml.safe_load(read_prompt_file(CATEGORIES_FILE))
        templates = tuple(str(t) for t in data["templates"])
        names = clean_events([str(c) for c in data["categories"]])
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise ConfigError(f"prompts/{CATEGORIES_FILE} is malformed ({err}): restore it from the repository") from err
    if not templates or any("{category}" not in t for t in templates):
        raise ConfigError(f"prompts/{CATEGORIES_FILE}: every template must contain {{category}}")
    for name in clean_events(extra):
        if name.lower() not in {n.lower() for n in names}:
            names.append(name)
    if len(names) < 2:
        raise ConfigError(f"prompts/{CATEGORIES_FILE}: at least two categories are needed to rank them")
    return CategorySet(tuple(names), templates)


@dataclass
class CategoryRequest:
    """What a categoriser may read: the anomalous tracks, the frames and the categories."""

    tracks: dict[int, list[TrackBox]]
    threshold: float  # boxes above it are anomalous
    read_frames: FrameReader
    categories: CategorySet
    progress: StepProgress | None = None


class Categoriser(Protocol):
    """Anything that ranks categories for the anomalous tracks."""

    name: str

    def rank(self, request: CategoryRequest) -> dict[int, Ranking]:
        """Per anomalous track, the categories ranked (tracks it cannot rank are left out)."""
        ...


class NoCategories:
    """The weight-free default: no categories."""

    name = "none"

    def rank(self, request: CategoryRequest) -> dict[int, Ranking]:
        return {}


def crop_boxes(boxes: list[TrackBox], threshold: float) -> list[TrackBox]:
    """The boxes a track is categorised by: its MAX_CROPS highest-scoring anomalous boxes, in time order."""
    chosen = sorted((b for b in boxes if b.score > threshold), key=lambda b: -b.score)[:MAX_CROPS]
    return sorted(chosen, key=lambda b: b.position)


def padded_crop(frame: np.ndarray, xyxy: tuple[float, float, float, float]) -> np.ndarray:
    """The box and CROP_PAD of its size around it, inside the frame."""
    x1, y1, x2, y2 = xyxy
    pad = int(round(CROP_PAD * max(x2 - x1, y2 - y1)))
    rows, cols = box_region(xyxy, (frame.shape[1], frame.shape[0]), margin=pad)
    return frame[rows, cols]


def track_crops(boxes: list[TrackBox], threshold: float, read_frames: FrameReader) -> list[np.ndarray]:
    """The padded crops of a track's chosen boxes (crop_boxes), empty ones left out."""
    chosen = crop_boxes(boxes, threshold)
    if not chosen:
        return []
    indices = sorted({b.index for b in chosen})
    frames = dict(zip(indices, read_frames(indices), strict=True))
    return [c for c in (padded_crop(frames[b.index], b.xyxy) for b in chosen) if c.size]


class ClipCategoriser:
    """An open_clip model ranking the category texts for each anomalous track's crops."""

    name = "CLIP"

    def __init__(self, model, preprocess, tokenizer, source: str, device: str | None = None) -> None:
        self.device = stage_device(device)
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.source = source  # the weights, for outputs
        self._texts: dict[CategorySet, object] = {}

    @classmethod
    def create(cls, model_name: str, device: str | None = None, source: str | None = None) -> ClipCategoriser:
        """From an open_clip model name: a built-in architecture (random weights, as open_clip builds it without
        ``pretrained``), ``local-dir:FOLDER`` or ``hf-hub:ORG/NAME``."""
        import open_clip

        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None, device="cpu")
        return cls(model, preprocess, open_clip.get_tokenizer(model_name), source or model_name, device)

    @classmethod
    def load(cls, spec: str, device: str | None = None) -> ClipCategoriser:
        """From a local open_clip folder (open_clip_config.json and the weights) or a hub id holding one
        (CheckpointError when missing, with how to provide it)."""
        weights = resolve_weights(spec, "CLIP categories", "--clip", CLIP_HUB_FILES,
                                  fetch=f"{CLIP_CONFIG} open_clip_model.safetensors")
        folder = weights.path
        if not (folder.is_dir() and (folder / CLIP_CONFIG).is_file()):
            raise CheckpointError(f"CLIP categories: {folder} is not an open_clip model folder ({CLIP_CONFIG} and "
                                  "open_clip_model.safetensors); give --clip such a folder or its hub id")
        if not any((folder / name).is_file() for name in CLIP_HUB_FILES[1:3]):
            raise CheckpointError(f"CLIP categories: {folder} has {CLIP_CONFIG} but no weights "
                                  f"({' or '.join(CLIP_HUB_FILES[1:3])})")
        try:
            return cls.create(f"local-dir:{Path(folder).resolve()}", device, spec)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"CLIP categories: {spec} did not load as an open_clip model ({exc})") from None

    def rank(self, request: CategoryRequest) -> dict[int, Ranking]:
        import torch

        texts = self.text_features(request.categories)
        scale = float(self.model.logit_scale.detach().exp())
        out: dict[int, Ranking] = {}
        for done, (track_id, boxes) in enumerate(request.tracks.items(), start=1):
            crops = track_crops(boxes, request.threshold, request.read_frames)
            if crops:
                probs = torch.softmax(scale * self._image_feature(crops) @ texts.T, dim=-1).tolist()
                out[track_id] = sorted((Ranked(n, float(p)) for n, p in zip(request.categories.names, probs,
                                                                             strict=True)), key=lambda r: -r.score)
            if request.progress is not None:
                request.progress(done, len(request.tracks))
        return out

    def text_features(self, categories: CategorySet):
        """(categories, D) unit vectors: each category's templates embedded, averaged, normalised."""
        import torch

        if categories not in self._texts:
            prompts = [t.format(category=name) for name in categories.names for t in categories.templates]
            with inference(self.device):
                emb = self.model.encode_text(self.tokenizer(prompts).to(self.device), normalize=True).float()
            emb = emb.reshape(len(categories.names), len(categories.templates), -1).mean(dim=1)
            self._texts[categories] = torch.nn.functional.normalize(emb, dim=-1)
        return self._texts[categories]

    def _image_feature(self, crops: list[np.ndarray]):
        """(D,) unit vector: the crops embedded, averaged, normalised."""
        import torch
        from PIL import Image

        batch = torch.stack([self.preprocess(Image.fromarray(np.ascontiguousarray(c))) for c in crops])
        with inference(self.device):
            emb = self.model.encode_image(batch.to(self.device), normalize=True).float()
        return torch.nn.functional.normalize(emb.mean(dim=0), dim=-1)
