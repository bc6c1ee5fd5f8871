"""Stage 2: RAE + LoRA + the anomaly-token rows, two SFT phases, LoRA merged after each.

Phase A trains on every sample (overall + appearance + motion dialogues) with LoRA on q_proj/v_proj of all
decoder layers; phase B on the anomaly-focused subset with LoRA on the last four layers only. The loss covers
assistant tokens only (tvad_chat.backbone labels). The backbone and the AHD stay frozen, so the vision pass and
the AHD class maps of each clip are computed once and cached. On a GPU the backbone runs in bf16 with gradient
checkpointing. Each phase keeps the weights with the lowest validation loss, merges LoRA into the backbone and
writes the full model (backbone + ahd/ + rae/ + tvad_config.json): ``out_dir/phase_a/model`` then
``out_dir/model``. A finished phase A is not rerun when the command is repeated.

    tvad train stage2 backbone=runs/stage0/model ahd=runs/stage1/ahd corpus=data/synth_corpus out_dir=runs/stage2

The defaults are the paper's recipe. With them the tiny SynthCampus model ignored P_An: its prompts changed by
about 1 % between real and blank heatmaps, and it answered "Yes" to every clip, even on the training types
(the yes/no log-odds were the same for every clip). Five options, each measured on that model
(mk/tiny.mk uses them all), made its answers depend on the heatmaps: ``rae_inputs=maps_and_difference``,
``rae_lr_scale`` (10), ``video_dropout`` (0.5), ``answer_loss=last`` and ``judgement_repeat`` (6). Phase B
never trains yes/no items (:func:`phase_b_samples`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from tvad_chat.errors import ConfigError, DataError
from tvad_chat.files import atomic_directory
from tvad_chat.train.common import (
    TrainConfig,
    Trainer,
    batch_indices,
    load_state,
    load_trainable_state,
    save_checkpoint,
    selection_metric,
    trainable_state,
)
from tvad_chat.train.data import ClipStore, PerClip, Sample, load_samples

logger = logging.getLogger(__name__)


@dataclass
class Stage2Config(TrainConfig):
    backbone: str = "runs/stage0/model"
    ahd: str = "runs/stage1/ahd"
    out_dir: str = "runs/stage2"
    max_steps: int = 200  # phase A steps
    phase_b_steps: int = 100  # 0 skips phase B
    lr: float = 2e-4
    phase_b_lr: float = 1e-4
    eval_every: int = 50
    val_samples: int = 48
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    phase_b_layers: int = 4
    rae_hidden: int = 32
    rae_base_prompts: int = 4
    rae_inputs: str = "difference"  # the paper's; "maps_and_difference" also feeds the maps (heads/rae.py)
    # share of training samples whose video tokens are zeroed, so that the language model has to read the
    # anomaly prompts P_An (0 = the paper's recipe); validation always sees the video
    video_dropout: float = 0.0
    # "all": every assistant answer of a sample is a target (the paper's SFT); "last": only its final answer,
    # so each dialogue turn is trained once (tvad_chat.pipeline.last_answer_labels)
    answer_loss: str = "all"
    # the RAE's learning rate is lr x rae_lr_scale (LoRA and the token rows get lr): the RAE starts from random
    # weights, and at the LoRA rate its prompts stayed almost input-independent (measured: 1 % variation)
    rae_lr_scale: float = 1.0
    # phase A sees each judgement question (yes/no) this many times per epoch: a yes/no is one decisive token
    # among a corpus of long descriptions, and at 1 the tiny model answered every clip with the prior ("Yes")
    judgement_repeat: int = 1
    # which weights each phase keeps: "val_loss" (lowest validation loss, the paper's) or "last". On an
    # open-set split the validation clips show anomaly types the model never learns to describe, so their loss
    # can stay flat while training works (measured on 1920 SynthCampus clips: 0.765 at step 250, 0.77-0.79
    # from there to 2500)
    select: str = "val_loss"
    gradient_checkpointing: str = "auto"  # auto (on with CUDA) | on | off


@dataclass
class ClipHeads:
    vision: object  # backbone.VisionOutput (no grad, on device)
    class_probs: torch.Tensor  # frozen AHD (T', 2, H', W')


class HeadCache(PerClip[ClipHeads]):
    """Per clip: the frozen vision pass and the frozen AHD class maps."""

    def __init__(self, tvad, store: ClipStore):
        super().__init__()
        self.tvad = tvad
        self.store = store

    def compute(self, sample: Sample) -> ClipHeads:
        clip = self.store.get(sample)
        taps = tuple(self.tvad.ahd.config.tap_layers)
        with torch.no_grad():
            vision = self.tvad.backbone.encode_video(clip.frames, clip.fps, taps)
            probs = self.tvad.heatmap_outputs(vision).class_probs.detach()
        vision.grids = []  # the grids are not needed any more: keep the cache small
        return ClipHeads(vision=vision, class_probs=probs)


def _gc_enabled(cfg: Stage2Config) -> bool:
    if cfg.gradient_checkpointing not in ("auto", "on", "off"):
        raise ConfigError("gradient_checkpointing must be auto, on or off")
    if cfg.gradient_checkpointing == "auto":
        return torch.cuda.is_available() and not cfg.cpu
    return cfg.gradient_checkpointing == "on"


def build_tvad(cfg: Stage2Config, backbone_dir: str, rae_dir: Path | None = None):
    """Backbone (frozen) + AHD (frozen) + RAE (new or from ``rae_dir``)."""
    from heads.ahd import AnomalyHeatmapDecoder
    from heads.rae import RAEConfig, RegionAwareAnomalyEncoder
    from tvad_chat.backbone import Backbone
    from tvad_chat.lora import freeze
    from tvad_chat.pipeline import TVAD, TVADConfig

    cuda = torch.cuda.is_available() and not cfg.cpu
    backbone = Backbone.load(backbone_dir, dtype="bfloat16" if cuda else "float32", device="cuda" if cuda else "cpu")
    freeze(backbone.model)
    ahd = AnomalyHeatmapDecoder.from_pretrained(cfg.ahd)
    if rae_dir is not None:
        rae = RegionAwareAnomalyEncoder.from_pretrained(rae_dir)
    else:
        torch.manual_seed(cfg.seed)
        rae = RegionAwareAnomalyEncoder(RAEConfig(text_dim=backbone.text_dim, hidden_channels=cfg.rae_hidden,
                                                  num_base_prompts=cfg.rae_base_prompts, inputs=cfg.rae_inputs))
    tvad = TVAD(backbone, ahd=ahd, rae=rae, config=TVADConfig(max_pixels=cfg.max_pixels, min_pixels=cfg.min_pixels))
    freeze(tvad.ahd)
    return tvad


def sample_loss(tvad, cache: HeadCache, sample: Sample, blank_video: bool = False, last_only: bool = False
                ) -> torch.Tensor:
    item = cache.get(sample)
    vision = item.vision
    if blank_video:
        vision = dataclasses.replace(vision, video_embeds=torch.zeros_like(vision.video_embeds))
    return tvad.lm_loss(vision, sample.conversation, class_probs=item.class_probs, last_answer_only=last_only)


def drops_video(seed: int, step: int, sample_id: str, rate: float) -> bool:
    """Whether this sample's video tokens are zeroed at this step: a pure function, so a resumed run agrees."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{step}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def run_phase(cfg: Stage2Config, tvad, phase: str, train: list[Sample], val: list[Sample], steps: int, lr: float,
              last_layers: int | None, store: ClipStore) -> None:
    """One SFT phase: LoRA on, train RAE + LoRA + token rows, keep the best by val loss, merge, save."""
    from tvad_chat.lora import LoraSettings, apply_lora, merge_lora

    out = Path(cfg.out_dir) / phase
    backbone = tvad.backbone
    apply_lora(backbone, LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                                      last_layers=last_layers))
    last_only = cfg.answer_loss == "last"
    if _gc_enabled(cfg):
        backbone.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        backbone.model.enable_input_require_grads()
    tvad.rae.train()
    for p in tvad.rae.parameters():
        p.requires_grad_(True)
    cache = HeadCache(tvad, store)
    modules = {"rae": tvad.rae, "lora": backbone.peft_model}
    phase_cfg = _phase_config(cfg, out, steps, lr)

    current_step = [0]  # loss_fn sees only the batch; batch_fn runs first for every micro-batch and records the step

    def batch_fn(step: int, micro: int, rank: int, world: int) -> list[Sample]:
        current_step[0] = step
        return [train[i] for i in batch_indices(len(train), step, micro, rank, world, phase_cfg.batch_size,
                                                phase_cfg.grad_accum, phase_cfg.seed)]

    def loss_fn(batch: list[Sample]) -> torch.Tensor:
        return sum(sample_loss(tvad, cache, s, drops_video(cfg.seed, current_step[0], s.id, cfg.video_dropout),
                               last_only) for s in batch) / len(batch)

    def evaluate(step: int) -> dict[str, float]:
        backbone.model.eval()
        with torch.no_grad():
            losses = [float(sample_loss(tvad, cache, s, last_only=last_only)) for s in val]
        backbone.model.train()
        return {"val_loss": sum(losses) / len(losses)}

    def on_best(step: int, metrics: dict[str, float]) -> None:
        save_checkpoint(out / "best", step, {"modules": trainable_state(modules), "metrics": metrics}, keep=1)

    backbone.model.train()
    metric = selection_metric(cfg.select, bool(val))
    by_val_loss = metric is not None
    trainer = Trainer(phase_cfg, modules, loss_fn, batch_fn, evaluate=evaluate if val else None,
                      select_metric=metric, select_mode="min", on_best=on_best,
                      desc=f"stage2/{phase}", lr_scales={"rae": cfg.rae_lr_scale})
    tvad.rae.to(trainer.accelerator.device)
    trainer.fit()
    if not trainer.finished:
        raise _Interrupted(phase, trainer.step, steps)
    best = out / "best" / "latest"
    if by_val_loss and best.is_file():
        from tvad_chat.train.common import latest_checkpoint

        load_trainable_state(modules, load_state(latest_checkpoint(out / "best"))["modules"])
        logger.info("stage2/%s: kept the step-%s weights (val_loss %.4f)", phase, trainer.best_step, trainer.best)
    else:
        logger.info("stage2/%s: kept the last (step-%d) weights", phase, trainer.step)
    if _gc_enabled(cfg):
        backbone.model.gradient_checkpointing_disable()
    merge_lora(backbone)
    tvad.rae.eval()
    acc = trainer.accelerator
    if acc.is_main_process:  # one writer under `accelerate launch`; the others wait for the files
        _save_tvad(tvad, out / "model")
    acc.wait_for_everyone()


class _Interrupted(Exception):
    def __init__(self, phase: str, step: int, total: int):
        super().__init__(f"stage2/{phase} stopped at step {step} of {total}; run again to resume")


def _phase_config(cfg: Stage2Config, out: Path, steps: int, lr: float) -> TrainConfig:
    base = {f: getattr(cfg, f) for f in TrainConfig.__dataclass_fields__}
    base.update(out_dir=str(out), max_steps=steps, lr=lr, min_lr=min(cfg.min_lr, lr))
    return TrainConfig(**base)


def _save_tvad(tvad, directory: Path) -> None:
    with atomic_directory(directory) as tmp:
        tvad.save_pretrained(tmp)


def is_judgement_question(sample: Sample) -> bool:
    """The dialogue's own yes/no item ("Is there an anomaly?"), not the inverted variety ("Is all normal?")."""
    return sample.kind == "judgement" and sample.meta.get("question_type", "dialogue") == "dialogue"


def with_repeats(samples: list[Sample], judgement_repeat: int) -> list[Sample]:
    """The training list with every judgement question ``judgement_repeat`` times (in place, order kept).

    Only the dialogue's polarity is repeated: with the inverted items repeated as well, the yes/no word depends
    on the question and the evidence together, and the tiny model learnt neither in the same steps (measured).
    """
    out: list[Sample] = []
    for s in samples:
        out += [s] * (judgement_repeat if is_judgement_question(s) else 1)
    return out


def phase_b_samples(train: list[Sample]) -> list[Sample]:
    """The anomaly-focused subset without its yes/no items.

    Phase B describes the anomalous target; its videos are all anomalous, so their yes/no answers are constant
    ("Yes" to "Is there an anomaly?") and would only teach the prior back after phase A taught the evidence.
    """
    focused = [s for s in train if s.meta.get("anomaly_focused") and s.kind != "judgement"]
    if not focused:
        logger.warning("stage2: the corpus marks no anomaly-focused samples; phase B uses anomalous videos")
        focused = [s for s in train if s.anomalous_video and s.kind != "judgement"]
    return focused


def check_config(cfg: Stage2Config) -> None:
    if not 0.0 <= cfg.video_dropout < 1.0:
        raise ConfigError("video_dropout must be in [0, 1)")
    if cfg.judgement_repeat < 1:
        raise ConfigError("judgement_repeat must be at least 1")
    if cfg.rae_lr_scale <= 0:
        raise ConfigError("rae_lr_scale must be positive")
    if cfg.answer_loss not in ("all", "last"):
        raise ConfigError("answer_loss must be all or last")
    selection_metric(cfg.select, True)
    _gc_enabled(cfg)


def run(cfg: Stage2Config) -> Path:
    """Both phases; returns ``out_dir/model`` (the full T-VAD model)."""
    check_config(cfg)
    out = Path(cfg.out_dir)
    train = load_samples(cfg.corpus, split=cfg.train_split)
    if not train:
        raise DataError(f"{cfg.corpus}: no samples in split {cfg.train_split!r}")
    val = load_samples(cfg.corpus, split=cfg.val_split, limit=cfg.val_samples) if cfg.val_split else []
    store = ClipStore(cfg.max_pixels, cfg.min_pixels)
    phase_a_model = out / "phase_a" / "model"
    try:
        if (phase_a_model / "config.json").is_file():
            logger.info("stage2: phase A already finished (%s)", phase_a_model)
        else:
            tvad = build_tvad(cfg, cfg.backbone)
            run_phase(cfg, tvad, "phase_a", with_repeats(train, cfg.judgement_repeat), val, cfg.max_steps, cfg.lr,
                      None, store)
        if cfg.phase_b_steps <= 0:
            final_src = phase_a_model
        else:
            focused = phase_b_samples(train)
            if not focused:
                raise DataError(f"{cfg.corpus}: no anomaly-focused or anomalous samples for phase B")
            val_b = [s for s in val if (s.meta.get("anomaly_focused") or s.anomalous_video)
                     and s.kind != "judgement"] or val
            tvad = build_tvad(cfg, str(phase_a_model), rae_dir=phase_a_model / "rae")
            layers = min(cfg.phase_b_layers, int(tvad.backbone.model.config.text_config.num_hidden_layers))
            run_phase(cfg, tvad, "phase_b", focused, val_b, cfg.phase_b_steps, cfg.phase_b_lr, layers, store)
            final_src = out / "phase_b" / "model"
    except _Interrupted as stop:
        logger.warning("%s", stop)
        return out
    final = out / "model"
    from accelerate import PartialState

    if PartialState().is_main_process:
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(final_src, final)
    PartialState().wait_for_everyone()
    return final
