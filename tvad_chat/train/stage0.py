"""Stage 0 (tiny models only): a small Qwen2.5-VL trained from scratch on a corpus, so stages 1 and 2 have a backbone.

The tokenizer is a byte-level BPE trained on the corpus texts (every conversation, plus the anomaly text prompts
and a few generic sentences). Every parameter trains: vision tower, merger, language model; the loss is the
language-model loss on assistant answers only (each sample's whole conversation, as the corpus writes it).

A dense auxiliary loss (``dense_weight``) grounds the vision tower: a linear probe on its last block predicts
each patch's anomaly mask (the same patch-grid targets as stage 1). A pretrained Qwen2.5-VL arrives with
spatially meaningful features; a tower trained only through caption loss does not (the first shipped model's
AHD stayed at chance on it), so stage 0 buys that grounding here. The probe is dropped after training.

    tvad train stage0 corpus=data/synth_corpus out_dir=runs/stage0 max_steps=600
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from tvad_chat.errors import DataError
from tvad_chat.files import atomic_directory
from tvad_chat.tiny import TinyModelConfig
from tvad_chat.train.common import TrainConfig, Trainer, batch_indices, config_to_dict, selection_metric
from tvad_chat.train.data import ClipStore, Sample, load_samples

logger = logging.getLogger(__name__)


@dataclass
class Stage0Config(TrainConfig, TinyModelConfig):
    """The training settings, and the tiny Qwen2.5-VL's architecture (every TinyModelConfig field; the pixel
    budget is the training one, shared with the processor)."""

    out_dir: str = "runs/stage0"
    max_steps: int = 600
    weight_decay: float = 0.01
    eval_every: int = 100
    val_samples: int = 48
    vision_depth: int = 8
    tokenizer_vocab_size: int = 1024
    dense_weight: float = 1.0  # weight of the per-patch anomaly-mask loss on the last vision block (0 = off)
    dense_abnormal_weight: float = 4.0  # cross-entropy weight of anomalous patches (they are rare)
    mask_fraction: float = 0.1  # share of a patch's pixels that makes it anomalous (as in stage 1)
    system_prompt: str = ""  # empty: the prompt set's system prompt
    # Which weights become the model: "val_loss" (the step with the lowest validation answer loss) or "last".
    # The answer loss is not the whole story: on 1920 SynthCampus training clips it bottomed out at step 1600
    # (0.899) and rose 2 % by step 3600, while the dense probe's frame AUC on the unseen validation types rose
    # from 0.29 to 0.80 over the same steps (on 480 clips it fell instead, 0.79 -> 0.32: the tower memorised).
    select: str = "val_loss"

    def validate(self) -> None:
        TrainConfig.validate(self)
        TinyModelConfig.validate(self)

    def tiny_config(self) -> TinyModelConfig:
        return TinyModelConfig(**{f.name: getattr(self, f.name) for f in fields(TinyModelConfig)})


def corpus_texts(samples: list[Sample]) -> list[str]:
    """Every text the model will read or write: conversations, the anomaly prompts, the system prompt."""
    from prompts.loader import load_prompts
    from tvad_chat.tiny import DEFAULT_CORPUS

    p = load_prompts()
    texts = [m["content"] for s in samples for m in s.conversation]
    return texts + list(p.normal_texts) + list(p.abnormal_texts) + [p.system_prompt] + list(DEFAULT_CORPUS)


def system_prompt(cfg_prompt: str) -> str | None:
    if cfg_prompt:
        return cfg_prompt
    from prompts.loader import load_prompts

    return load_prompts().system_prompt or None


def build_initial_backbone(cfg: Stage0Config, samples: list[Sample]):
    """A fresh tiny model whose tokenizer is trained on the corpus (deterministic for a given corpus and seed)."""
    from tvad_chat.backbone import Backbone
    from tvad_chat.tiny import build_tiny

    model, processor = build_tiny(cfg.tiny_config(), corpus=corpus_texts(samples), seed=cfg.seed)
    return Backbone(model, processor)


class DenseProbe(torch.nn.Module):
    """Per-patch normal/anomalous logits from the last vision block's grid (training aid, not saved)."""

    def __init__(self, vision_dim: int):
        super().__init__()
        self.linear = torch.nn.Linear(vision_dim, 2)

    def loss(self, grid: torch.Tensor, masks: torch.Tensor, abnormal_weight: float) -> torch.Tensor:
        logits = self.linear(grid).reshape(-1, 2)  # grid (T', H', W', D_v)
        weight = torch.tensor([1.0, abnormal_weight], dtype=logits.dtype, device=logits.device)
        return torch.nn.functional.cross_entropy(logits, masks.reshape(-1).to(logits.device), weight=weight)


def sample_loss(backbone, store: ClipStore, sample: Sample, system: str | None, grad: bool = True,
                probe: DenseProbe | None = None, cfg: Stage0Config | None = None) -> torch.Tensor:
    """Answer loss of one sample (plus the dense probe's loss), with the vision tower in the graph."""
    clip = store.get(sample)
    dense = probe is not None and cfg is not None and cfg.dense_weight > 0
    taps = (backbone.vision_depth,) if dense else ()
    vision = backbone.encode_video(clip.frames, clip.fps, taps, grad=grad)
    inputs = backbone.build_inputs(vision, sample.conversation, 0, system_prompt=system,
                                   add_generation_prompt=False, with_labels=True)
    loss = backbone.forward(inputs, vision, None, labels=inputs.labels).loss
    if dense:
        grid = vision.grids[0]
        loss = loss + cfg.dense_weight * probe.loss(grid, patch_masks(clip, grid, cfg), cfg.dense_abnormal_weight)
    return loss


def patch_masks(clip, grid: torch.Tensor, cfg: Stage0Config) -> torch.Tensor:
    """The clip's anomaly masks on the (T', H', W') patch grid of ``grid``: the probe's targets."""
    from heads.ahd import masks_to_patch_grid

    return masks_to_patch_grid(torch.from_numpy(clip.masks), tuple(grid.shape[1:3]),
                               min_fraction=cfg.mask_fraction)[: grid.shape[0]]


def probe_metrics(backbone, store: ClipStore, probe: DenseProbe, samples: list[Sample], cfg: Stage0Config
                  ) -> dict[str, float]:
    """Patch-level and frame-level (max over the frame's patches) AUC of the dense probe, for the log only."""
    from sklearn.metrics import roc_auc_score

    from tvad_chat.eval.frames import frame_auc
    from tvad_chat.train.data import unique_clips

    patch_s, patch_y, frame_s, frame_y = [], [], [], []
    with torch.no_grad():
        for s in unique_clips(samples):
            clip = store.get(s)
            grid = backbone.encode_video(clip.frames, clip.fps, (backbone.vision_depth,)).grids[0]
            prob = probe.linear(grid).softmax(-1)[..., 1].cpu()
            masks = patch_masks(clip, grid, cfg)
            patch_s.append(prob.reshape(-1))
            patch_y.append(masks.reshape(-1))
            frame_s.append(prob.reshape(prob.shape[0], -1).max(1).values)
            frame_y.append(masks.reshape(masks.shape[0], -1).amax(1))
    out = {}
    y_all = torch.cat(patch_y).numpy()
    if 0 < y_all.sum() < len(y_all):
        out["val_patch_auc"] = float(roc_auc_score(y_all, torch.cat(patch_s).numpy()))
    frames = frame_auc({str(n): s.numpy() for n, s in enumerate(frame_s)},
                       {str(n): y.numpy() for n, y in enumerate(frame_y)})
    if not math.isnan(frames["micro_auc"]):
        out["val_frame_auc"] = frames["micro_auc"] / 100.0
    return out


def run(cfg: Stage0Config) -> Path:
    """Train stage 0; returns the directory of the trained backbone (``out_dir/model``)."""
    from tvad_chat.backbone import Backbone

    selection_metric(cfg.select, True)  # a bad value fails before anything loads
    out = Path(cfg.out_dir)
    train = load_samples(cfg.corpus, split=cfg.train_split)
    if not train:
        raise DataError(f"{cfg.corpus}: no samples in split {cfg.train_split!r}")
    val = load_samples(cfg.corpus, split=cfg.val_split, limit=cfg.val_samples) if cfg.val_split else []
    init_dir = out / "init"
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process and not (init_dir / "config.json").is_file():
        build_initial_backbone(cfg, load_samples(cfg.corpus)).save_pretrained(init_dir)
    state.wait_for_everyone()
    # Every run (and every process) starts from the saved init: same tokenizer and start weights on a resume.
    backbone = Backbone.load(init_dir, dtype="float32", device="cpu")
    system = system_prompt(cfg.system_prompt)
    store = ClipStore(cfg.max_pixels, cfg.min_pixels)

    model = backbone.model
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)

    def batch_fn(step: int, micro: int, rank: int, world: int) -> list[Sample]:
        idx = batch_indices(len(train), step, micro, rank, world, cfg.batch_size, cfg.grad_accum, cfg.seed)
        return [train[i] for i in idx]

    torch.manual_seed(cfg.seed)
    probe = DenseProbe(backbone.vision_dim)
    modules = {"model": model, "dense_probe": probe} if cfg.dense_weight > 0 else {"model": model}

    def loss_fn(batch: list[Sample]) -> torch.Tensor:
        return sum(sample_loss(backbone, store, s, system, probe=probe, cfg=cfg) for s in batch) / len(batch)

    def evaluate(step: int) -> dict[str, float]:
        if not val:
            return {}
        with torch.no_grad():
            losses = [float(sample_loss(backbone, store, s, system, grad=False)) for s in val]
        metrics = {"val_loss": sum(losses) / len(losses)}
        if cfg.dense_weight > 0:
            metrics.update(probe_metrics(backbone, store, probe, val, cfg))
        return metrics

    def on_best(step: int, metrics: dict[str, float]) -> None:
        _save_model(backbone, out / "best", cfg)

    metric = selection_metric(cfg.select, bool(val))
    by_val_loss = metric is not None
    trainer = Trainer(cfg, modules, loss_fn, batch_fn, evaluate=evaluate if val else None,
                      select_metric=metric, select_mode="min", on_best=on_best,
                      desc="stage0")
    backbone.model = backbone.model.to(trainer.accelerator.device)
    probe.to(trainer.accelerator.device)
    trainer.fit()
    if not trainer.finished:
        logger.warning("stage0 stopped at step %d of %d; run again to resume", trainer.step, cfg.max_steps)
        return out
    final = out / "model"
    acc = trainer.accelerator
    if acc.is_main_process:  # one writer under `accelerate launch`
        if by_val_loss and (out / "best" / "config.json").is_file():
            best = Backbone.load(out / "best", dtype="float32", device="cpu")
            _save_model(best, final, cfg)
            logger.info("stage0: kept the step-%s weights (best val_loss %.4f)", trainer.best_step, trainer.best)
        else:
            _save_model(backbone, final, cfg)
            logger.info("stage0: kept the last (step-%d) weights", trainer.step)
    acc.wait_for_everyone()
    return final


def _save_model(backbone, directory: Path, cfg: Stage0Config) -> None:
    backbone.model.eval()
    # The pixel budget the model was trained at travels with it: TVAD.from_pretrained reads tvad_config.json,
    # and a tiny model shown larger frames than it learnt on answers garbage.
    from dataclasses import asdict

    from tvad_chat.pipeline import CONFIG_NAME, TVADConfig

    settings = TVADConfig(max_pixels=cfg.max_pixels, min_pixels=cfg.min_pixels)
    with atomic_directory(directory) as tmp:
        backbone.save_pretrained(tmp)
        (tmp / "stage0_config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
        (tmp / CONFIG_NAME).write_text(json.dumps(asdict(settings), indent=2))
    backbone.model.train()

