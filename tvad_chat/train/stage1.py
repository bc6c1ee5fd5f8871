"""Stage 1: the Anomaly Heatmap Decoder on the frozen backbone (pixel cross-entropy on patch-grid masks).

Paper schedule: AdamW, accumulation 8, warmup ratio 0.1, peak LR 1e-3, cosine to 1e-8. The backbone never
changes, so each clip's vision pass (tapped grids) is computed once and cached; a step then costs only the AHD.
Clips of anomalous videos without masks are skipped (no pixel supervision); normal clips train with all-zero
masks. The checkpoint is selected by validation frame-level micro-AUC plus RBDC (tvad_chat.eval.heatmaps),
and written to ``out_dir/ahd`` (config.json + model.safetensors).

    tvad train stage1 backbone=runs/stage0/model corpus=data/synth_corpus out_dir=runs/stage1
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tvad_chat.errors import DataError
from tvad_chat.files import atomic_directory
from tvad_chat.train.common import TrainConfig, Trainer, batch_indices
from tvad_chat.train.data import ClipStore, PerClip, Sample, load_samples, unique_clips

logger = logging.getLogger(__name__)


@dataclass
class Stage1Config(TrainConfig):
    backbone: str = "runs/stage0/model"
    out_dir: str = "runs/stage1"
    max_steps: int = 200
    eval_every: int = 50
    tap_layers: list[int] = field(default_factory=list)  # empty: paper taps (1, 8, 16, 32) when deep enough
    mask_fraction: float = 0.1  # share of a patch's pixels that makes it abnormal
    abnormal_weight: float = 4.0  # CE weight of abnormal patches (they are rare)
    val_clips: int = 64


def default_taps(depth: int) -> list[int]:
    """The paper's taps (1, 8, 16, 32) scaled to the tower's depth: first, quarter, half, last block."""
    if depth >= 32:
        return [1, 8, 16, 32]
    return sorted({max(1, depth // 4), max(1, depth // 2), depth, 1})


@dataclass
class ClipItem:
    sample: Sample
    grids: list[torch.Tensor]  # per tap (T', H', W', D_v), CPU float32
    masks: torch.Tensor  # (T', H', W') long
    frame_labels: np.ndarray  # (T,) 0/1 per model frame
    pixel_masks: np.ndarray  # bool (T, H, W) at model size


class VisionCache(PerClip[ClipItem]):
    """Frozen-backbone vision passes, computed once per clip."""

    def __init__(self, backbone, store: ClipStore, taps: list[int], mask_fraction: float):
        super().__init__()
        self.backbone = backbone
        self.store = store
        self.taps = taps
        self.mask_fraction = mask_fraction

    def compute(self, sample: Sample) -> ClipItem:
        from heads.ahd import masks_to_patch_grid

        clip = self.store.get(sample)
        with torch.no_grad():
            vision = self.backbone.encode_video(clip.frames, clip.fps, tuple(self.taps))
        grids = [g.detach().float().cpu() for g in vision.grids]
        t2, gh, gw = grids[0].shape[:3]
        masks = masks_to_patch_grid(torch.from_numpy(clip.masks), (gh, gw), min_fraction=self.mask_fraction)[:t2]
        return ClipItem(sample=sample, grids=grids, masks=masks,
                        frame_labels=clip.masks.reshape(len(clip.masks), -1).any(1).astype(np.int64),
                        pixel_masks=clip.masks)


def supervised_clips(samples: list[Sample]) -> list[Sample]:
    """Clips with pixel supervision: masked ones, and normal ones (all-zero masks)."""
    clips = unique_clips(samples)
    keep = [s for s in clips if s.mask_dir is not None or s.anomalous_video is False]
    dropped = len(clips) - len(keep)
    if dropped:
        logger.warning("stage1: %d anomalous clips have no masks and are skipped", dropped)
    return keep


def validation_metrics(ahd, items: list[ClipItem], class_vectors: torch.Tensor) -> dict[str, float]:
    """Frame micro-AUC (pooled frames), macro-AUC (mean over clips with both labels), RBDC when available; 0..1."""
    from tvad_chat.eval.frames import frame_auc
    from tvad_chat.evidence import frame_scores

    scores, labels, maps = {}, {}, []
    with torch.no_grad():
        for n, it in enumerate(items):
            out = ahd([g.to(class_vectors.device) for g in it.grids], class_vectors)
            heat = out.heatmap.float().cpu().numpy()
            maps.append(heat)
            scores[str(n)] = frame_scores(heat, len(it.frame_labels))
            labels[str(n)] = it.frame_labels
    aucs = frame_auc(scores, labels)
    metrics: dict[str, float] = {"micro_auc": aucs["micro_auc"] / 100.0, "macro_auc": aucs["macro_auc"] / 100.0}
    rbdc = _rbdc(items, maps)
    if rbdc is not None:
        metrics["rbdc"] = rbdc
    auc = metrics["micro_auc"] if not np.isnan(metrics["micro_auc"]) else 0.0
    metrics["select"] = auc + (rbdc or 0.0) / 100.0  # both in 0..1: a sharper map wins a tie in AUC
    return metrics


def _rbdc(items: list[ClipItem], maps: list[np.ndarray]) -> float | None:
    """RBDC (percent) of the heatmaps against the masks; None when it cannot be computed."""
    from tvad_chat.eval.heatmaps import rbdc_from_heatmaps

    try:
        return rbdc_from_heatmaps(maps, [it.pixel_masks for it in items]).get("rbdc")
    except Exception as exc:  # noqa: BLE001 - selection falls back to the AUC alone
        logger.warning("stage1: RBDC failed (%s); selecting by micro-AUC only", exc)
        return None


def run(cfg: Stage1Config) -> Path:
    """Train the AHD; returns ``out_dir/ahd`` (the selected checkpoint)."""
    from heads.ahd import AHDConfig, AnomalyHeatmapDecoder
    from prompts.loader import load_prompts
    from tvad_chat.backbone import Backbone
    from tvad_chat.lora import freeze

    out = Path(cfg.out_dir)
    backbone = Backbone.load(cfg.backbone, dtype="float32" if cfg.cpu or not torch.cuda.is_available() else None,
                             device="cpu" if cfg.cpu else None)
    freeze(backbone.model)
    taps = list(cfg.tap_layers) or default_taps(backbone.vision_depth)
    train = supervised_clips(load_samples(cfg.corpus, split=cfg.train_split))
    if not train:
        raise DataError(f"{cfg.corpus}: no clips with masks (or normal clips) in split {cfg.train_split!r}")
    val = supervised_clips(load_samples(cfg.corpus, split=cfg.val_split))[: cfg.val_clips] if cfg.val_split else []
    torch.manual_seed(cfg.seed)
    ahd = AnomalyHeatmapDecoder(AHDConfig(vision_dim=backbone.vision_dim, text_dim=backbone.text_dim,
                                          tap_layers=taps))
    cache = VisionCache(backbone, ClipStore(cfg.max_pixels, cfg.min_pixels), taps, cfg.mask_fraction)
    class_vectors = backbone.class_vectors(load_prompts()).float()
    weights = torch.tensor([1.0, cfg.abnormal_weight])

    def batch_fn(step: int, micro: int, rank: int, world: int) -> list[Sample]:
        return [train[i] for i in batch_indices(len(train), step, micro, rank, world, cfg.batch_size,
                                                cfg.grad_accum, cfg.seed)]

    def loss_fn(batch: list[Sample]) -> torch.Tensor:
        dev = next(ahd.parameters()).device
        total = 0.0
        for s in batch:
            it = cache.get(s)
            output = ahd([g.to(dev) for g in it.grids], class_vectors.to(dev))
            total = total + ahd.loss(output, it.masks.to(dev), class_weights=weights.to(dev))
        return total / len(batch)

    def evaluate(step: int) -> dict[str, float]:
        if not val:
            return {}
        dev = next(ahd.parameters()).device
        return validation_metrics(ahd, [cache.get(s) for s in val], class_vectors.to(dev))

    def on_best(step: int, metrics: dict[str, float]) -> None:
        _save_head(ahd, out / "ahd")

    trainer = Trainer(cfg, {"ahd": ahd}, loss_fn, batch_fn, evaluate=evaluate if val else None,
                      select_metric="select" if val else None, select_mode="max", on_best=on_best, desc="stage1")
    ahd.to(trainer.accelerator.device)
    trainer.fit()
    if not trainer.finished:
        logger.warning("stage1 stopped at step %d of %d; run again to resume", trainer.step, cfg.max_steps)
        return out
    if not val or not (out / "ahd" / "config.json").is_file():
        if trainer.accelerator.is_main_process:
            _save_head(ahd, out / "ahd")
        trainer.accelerator.wait_for_everyone()
    else:
        logger.info("stage1: kept the step-%s head (selection score %.4f)", trainer.best_step, trainer.best)
    return out / "ahd"


def _save_head(head, directory: Path) -> None:
    with atomic_directory(directory) as tmp:
        head.save_pretrained(tmp)
