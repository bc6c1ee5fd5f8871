"""The training loop every stage shares: AdamW, accumulation, warmup + cosine schedule, atomic checkpoints, resume.

A stage hands :class:`Trainer` three things: the trainable module(s), a ``loss_fn(batch) -> Tensor`` and a
``batch_fn(step, micro, rank, world) -> batch`` that returns the same micro-batch for the same arguments.
Because batches are a pure function of the step (a seeded permutation per epoch), resuming needs only the step
counter, the weights, the optimizer/scheduler state and the RNG states; a resumed run ends bit-identical to an
uninterrupted one.

Devices come from ``accelerate.Accelerator``: the same code runs on one CPU, one GPU, or under
``accelerate launch`` on several GPUs. The trainable modules are not wrapped in DDP (stages call them through
the backbone, not through ``forward``); instead gradients are averaged across processes before every
optimizer step, which is what DDP would do.

Checkpoints are directories ``ckpt-0000123`` holding ``state.pt`` (tensors, state dicts and plain numbers only,
so ``torch.load(weights_only=True)`` reads them). A checkpoint is written to a ``.tmp`` directory, renamed into
place with ``os.replace``, and only then does the ``latest`` pointer file move to it (again via ``os.replace``):
a crash at any moment leaves the previous checkpoint intact and pointed to.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvad_chat.errors import CheckpointError, ConfigError
from tvad_chat.files import atomic_directory, atomic_write_text

logger = logging.getLogger(__name__)

LATEST = "latest"
STATE_FILE = "state.pt"
LOG_FILE = "log.jsonl"
CONFIG_FILE = "train_config.json"


@dataclass
class TrainConfig:
    """Settings every stage shares (each stage's config dataclass extends this)."""

    corpus: str = "data/synth_corpus"  # corpus folder (sft.jsonl) the stage reads
    train_split: str = "train"
    val_split: str = "val"
    max_pixels: int = 112 * 168  # model-frame pixel budget (tvad_chat.video.resize_for_model)
    min_pixels: int = 56 * 56
    out_dir: str = "runs/stage"
    max_steps: int = 100  # optimizer steps
    batch_size: int = 1  # samples per micro-batch (per process)
    grad_accum: int = 8  # micro-batches per optimizer step
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-8  # floor of the cosine decay
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # 0 disables clipping
    seed: int = 0
    save_every: int = 50  # steps between checkpoints (the last step is always saved)
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps between validations (0: only at the end)
    log_every: int = 1
    mixed_precision: str = "auto"  # auto (bf16 on CUDA, no on CPU) | no | bf16
    cpu: bool = False  # force the CPU even when a GPU is present
    resume: bool = True  # continue from out_dir/latest when it exists
    progress: bool = True  # tqdm bar (main process only)
    max_minutes: float = 0.0  # stop early (after a checkpoint) once this much wall time has passed; 0 = off
    stop_at_step: int = 0  # stop (after a checkpoint) at this step, as an interruption would; 0 = off

    def validate(self) -> None:
        if self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("batch_size and grad_accum must be >= 1")
        if not self.lr > 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(f"need 0 <= min_lr <= lr and lr > 0 (lr={self.lr}, min_lr={self.min_lr})")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.save_every < 1:
            raise ConfigError("save_every must be >= 1")
        # fp16 would need a loss scaler wired into the optimizer step; bf16 does not.
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise ConfigError(f"mixed_precision must be auto, no or bf16, got {self.mixed_precision!r}")


# --------------------------------------------------------------------------- config overrides


def _convert(value: str, annotation: Any, name: str) -> Any:
    """Parse a CLI string into the type a dataclass field declares (int, float, bool, str, lists, tuples, None)."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | {"tuple": tuple, "list": list})  # noqa: S307 - our own annotations
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], name)
    if origin in (list, tuple) or annotation in (list, tuple):
        parts = [p for p in value.replace(" ", "").strip("[]()").split(",") if p]
        item_type = args[0] if args else str
        items = [_convert(p, item_type, name) for p in parts]
        return tuple(items) if origin is tuple or annotation is tuple else items
    if annotation is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if annotation in (int, float, str):
        try:
            return annotation(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: expected {annotation.__name__}, got {value!r}") from exc
    return value


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """Set ``key=value`` pairs on a config dataclass (nanoGPT style); unknown keys raise ConfigError."""
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value (e.g. max_steps=200)")
        if key not in names:
            raise ConfigError(f"unknown setting {key!r}; known: {', '.join(sorted(names))}")
        setattr(cfg, key, _convert(value, hints[key], key))
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


# --------------------------------------------------------------------------- schedule


def lr_factor(step: int, total_steps: int, warmup_ratio: float, peak: float, floor: float) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based): linear warmup, then cosine to ``floor``."""
    warmup = int(math.ceil(warmup_ratio * total_steps))
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    lr = floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
    return lr / peak


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.max_steps, cfg.warmup_ratio, cfg.lr, cfg.min_lr)
    )


# --------------------------------------------------------------------------- data order


def epoch_order(num_items: int, epoch: int, seed: int) -> list[int]:
    """A seeded permutation of ``range(num_items)`` per epoch (same arguments, same order)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=g).tolist()


def batch_indices(num_items: int, step: int, micro: int, rank: int, world: int, batch_size: int, grad_accum: int,
                  seed: int) -> list[int]:
    """Which items form micro-batch ``micro`` of step ``step`` on process ``rank``: a pure function of its args."""
    if num_items < 1:
        raise ConfigError("the training set is empty")
    per_step = batch_size * grad_accum * world
    start = (step * grad_accum + micro) * batch_size * world + rank * batch_size
    out = []
    for k in range(start, start + batch_size):
        epoch, pos = divmod(k, num_items)
        out.append(epoch_order(num_items, epoch, seed)[pos])
    del per_step
    return out


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain values (readable with weights_only=True)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(out_dir: str | Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write ``payload`` as ckpt-<step>/state.pt atomically, point ``latest`` at it, prune old checkpoints."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"ckpt-{step:07d}"
    with atomic_directory(final) as tmp:  # a re-save of the same step (after a resume) replaces the old one
        torch.save(payload, tmp / STATE_FILE)
        with open(tmp / STATE_FILE, "rb") as fh:
            os.fsync(fh.fileno())
    atomic_write_text(out / LATEST, final.name + "\n")
    ckpts = sorted(p for p in out.glob("ckpt-*") if p.is_dir())
    for old in ckpts[:-keep] if keep > 0 else []:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint ``latest`` points to, or None when there is none (a fresh run)."""
    out = Path(out_dir)
    pointer = out / LATEST
    if not pointer.is_file():
        return None
    path = out / pointer.read_text().strip()
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{pointer} points to {path}, which holds no {STATE_FILE}: delete {pointer} to restart")
    return path


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state.pt written by us; refuses anything that needs unpickling of arbitrary objects."""
    path = Path(path)
    file = path / STATE_FILE if path.is_dir() else path
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a checkpoint we can trust"
        raise CheckpointError(f"cannot read checkpoint {file}: {exc}. Delete it (and the latest pointer) to restart") from exc


# --------------------------------------------------------------------------- trainer


@dataclass
class StepRecord:
    step: int
    loss: float
    lr: float
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)


class StopTraining(Exception):
    """Raised by a callback to stop after the current step (used by tests to simulate a crash)."""


def trainable_state(modules: dict[str, torch.nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """Trainable parameters only (the frozen backbone is not copied into every checkpoint)."""
    out = {}
    for name, mod in modules.items():
        out[name] = {k: p.detach().cpu().clone() for k, p in mod.named_parameters() if p.requires_grad}
    return out


def load_trainable_state(modules: dict[str, torch.nn.Module], state: dict[str, dict[str, torch.Tensor]]) -> None:
    for name, mod in modules.items():
        saved = state.get(name)
        if saved is None:
            raise CheckpointError(f"the checkpoint holds no weights for {name!r}: it was written by another stage")
        params = dict(mod.named_parameters())
        missing = [k for k, p in params.items() if p.requires_grad and k not in saved]
        if missing:
            raise CheckpointError(f"the checkpoint lacks {missing[:3]} of {name!r}: settings differ from that run")
        with torch.no_grad():
            for k, v in saved.items():
                if k not in params:
                    raise CheckpointError(f"the checkpoint has {k!r} which {name!r} does not: settings differ")
                params[k].copy_(v.to(params[k].device, params[k].dtype))


def resolve_mixed_precision(cfg: TrainConfig) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    return "bf16" if torch.cuda.is_available() and not cfg.cpu else "no"


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    return Accelerator(cpu=cfg.cpu, mixed_precision=resolve_mixed_precision(cfg))


SELECT_CHOICES = ("val_loss", "last")


def selection_metric(select: str, has_val: bool) -> str | None:
    """The metric a stage keeps its weights by: "val_loss" when chosen and there is validation data, else None
    (the last weights are kept). ``select`` is a stage config's ``select`` field."""
    if select not in SELECT_CHOICES:
        raise ConfigError(f"select must be one of {SELECT_CHOICES}, got {select!r}")
    return "val_loss" if has_val and select == "val_loss" else None


class Trainer:
    """The loop: micro-batches -> loss / accum -> backward; average grads; clip; AdamW; schedule; log; save.

    ``modules`` maps names to the modules whose ``requires_grad`` parameters train (their names key the
    checkpoint). ``evaluate(step) -> dict`` runs at ``eval_every`` and at the end; with ``select_metric`` the
    best-scoring weights are kept (``select_mode`` "max" or "min") and written by ``on_best(step, metrics)``.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        modules: dict[str, torch.nn.Module],
        loss_fn: Callable[[Any], torch.Tensor | tuple[torch.Tensor, dict[str, float]]],
        batch_fn: Callable[[int, int, int, int], Any],
        accelerator=None,
        evaluate: Callable[[int], dict[str, float]] | None = None,
        select_metric: str | None = None,
        select_mode: str = "max",
        on_best: Callable[[int, dict[str, float]], None] | None = None,
        callbacks: Sequence[Callable[[StepRecord], None]] = (),
        extra_state: Callable[[], dict[str, Any]] | None = None,
        desc: str = "train",
        lr_scales: dict[str, float] | None = None,
    ):
        cfg.validate()
        self.cfg = cfg
        self.modules = modules
        self.loss_fn = loss_fn
        self.batch_fn = batch_fn
        self.accelerator = accelerator or make_accelerator(cfg)
        self.evaluate = evaluate
        self.select_metric = select_metric
        if select_mode not in ("max", "min"):
            raise ConfigError("select_mode must be max or min")
        self.select_mode = select_mode
        self.on_best = on_best
        self.callbacks = list(callbacks)
        self.extra_state = extra_state
        self.desc = desc
        # one parameter group per module: ``lr_scales`` multiplies a module's learning rate (a new, randomly
        # initialised head next to LoRA adapters needs a larger one); the schedule scales every group alike
        lr_scales = dict(lr_scales or {})
        unknown = sorted(set(lr_scales) - set(modules))
        if unknown:
            raise ConfigError(f"lr_scales names modules that are not trained: {unknown}")
        groups = []
        for name, module in modules.items():
            params = [p for p in module.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": cfg.lr * float(lr_scales.get(name, 1.0))})
        self.params = [p for g in groups for p in g["params"]]
        if not self.params:
            raise ConfigError("nothing to train: every parameter is frozen")
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas),
                                           weight_decay=cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.step = 0
        self.best: float | None = None
        self.best_step: int | None = None
        self.history: list[StepRecord] = []
        self.out_dir = Path(cfg.out_dir)
        self.stop_reason: str | None = None  # "time", "stop_at_step" or "callback" when fit ended early

    @property
    def finished(self) -> bool:
        """Reached max_steps, or ran out of its time budget (max_minutes): the stage should write its result."""
        return self.step >= self.cfg.max_steps or self.stop_reason == "time"

    # ----------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "modules": trainable_state(self.modules),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "best": self.best,
            "best_step": self.best_step,
            "config": config_to_dict(self.cfg),
        }
        if self.extra_state is not None:
            state["extra"] = self.extra_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_trainable_state(self.modules, state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best = state.get("best")
        self.best_step = state.get("best_step")

    def save(self) -> Path | None:
        acc = self.accelerator
        acc.wait_for_everyone()
        path = None
        if acc.is_main_process:
            path = save_checkpoint(self.out_dir, self.step, self.state_dict(), keep=self.cfg.keep_checkpoints)
            logger.info("%s: checkpoint %s", self.desc, path)
        acc.wait_for_everyone()
        return path

    def maybe_resume(self) -> bool:
        if not self.cfg.resume:
            return False
        path = latest_checkpoint(self.out_dir)
        if path is None:
            return False
        state = load_state(path)
        saved = state.get("config", {})
        for key in ("max_steps", "batch_size", "grad_accum", "lr", "seed", "warmup_ratio", "min_lr"):
            if key in saved and saved[key] != getattr(self.cfg, key):
                raise CheckpointError(
                    f"{path} was written with {key}={saved[key]} but this run has {key}={getattr(self.cfg, key)}: "
                    f"use the same settings, or a new out_dir, or resume=false to start over"
                )
        self.load_state_dict(state)
        logger.info("%s: resumed from %s at step %d", self.desc, path, self.step)
        return True

    # ----------------------------------------------------------- loop
    def _log(self, record: StepRecord) -> None:
        if not self.accelerator.is_main_process:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        line = {"step": record.step, "loss": record.loss, "lr": record.lr, "seconds": round(record.seconds, 4)}
        line.update(record.extra)
        with open(self.out_dir / LOG_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    def _run_eval(self) -> dict[str, float]:
        if self.evaluate is None:
            return {}
        for m in self.modules.values():
            m.eval()
        metrics = self.evaluate(self.step)
        for m in self.modules.values():
            m.train()
        if self.accelerator.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / LOG_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": self.step, "eval": metrics}) + "\n")
        if self.select_metric is not None:
            value = metrics.get(self.select_metric)
            if value is not None and not math.isnan(value):
                better = (self.best is None or (value > self.best if self.select_mode == "max" else value < self.best))
                if better:
                    self.best, self.best_step = float(value), self.step
                    if self.on_best is not None and self.accelerator.is_main_process:
                        self.on_best(self.step, metrics)
        logger.info("%s: step %d eval %s", self.desc, self.step, {k: round(v, 4) for k, v in metrics.items()})
        return metrics

    def _reduce_grads(self) -> None:
        acc = self.accelerator
        if acc.num_processes <= 1:
            return
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad = acc.reduce(p.grad, reduction="mean")

    def fit(self) -> list[StepRecord]:
        """Train to ``max_steps`` (resuming when a checkpoint exists); returns this run's step records."""
        cfg = self.cfg
        acc = self.accelerator
        if not self.maybe_resume():
            seed_everything(cfg.seed)
        logger.info("%s: %d process(es), device %s, mixed precision %s", self.desc, acc.num_processes, acc.device,
                    acc.mixed_precision)
        if acc.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / CONFIG_FILE, json.dumps(config_to_dict(cfg), indent=2))
        for m in self.modules.values():
            m.train()
        bar = None
        if cfg.progress and acc.is_main_process and self.step < cfg.max_steps:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_steps, initial=self.step, desc=self.desc, unit="step", dynamic_ncols=True)
        t_start = time.monotonic()
        stopped = False
        try:
            while self.step < cfg.max_steps:
                t0 = time.monotonic()
                self.optimizer.zero_grad(set_to_none=True)
                total = 0.0
                extras: dict[str, float] = {}
                for micro in range(cfg.grad_accum):
                    batch = self.batch_fn(self.step, micro, acc.process_index, acc.num_processes)
                    with acc.autocast():
                        out = self.loss_fn(batch)
                    loss, extra = (out if isinstance(out, tuple) else (out, {}))
                    acc.backward(loss / cfg.grad_accum)
                    total += float(loss.detach()) / cfg.grad_accum
                    for k, v in extra.items():
                        extras[k] = extras.get(k, 0.0) + float(v) / cfg.grad_accum
                self._reduce_grads()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                lr = cfg.lr * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)  # the base rate, unscaled
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                if not math.isfinite(total):
                    raise ConfigError(f"{self.desc}: the loss became {total} at step {self.step}; lower lr")
                record = StepRecord(self.step, total, lr, time.monotonic() - t0, extras)
                self.history.append(record)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    self._log(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total:.4f}", lr=f"{lr:.2e}")
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps:
                    self._run_eval()
                if cfg.max_minutes > 0 and (time.monotonic() - t_start) / 60 >= cfg.max_minutes:
                    self.stop_reason = "time"
                elif cfg.stop_at_step > 0 and self.step >= cfg.stop_at_step:
                    self.stop_reason = "stop_at_step"
                out_of_time = self.stop_reason is not None and self.step < cfg.max_steps
                if self.step % cfg.save_every == 0 or self.step == cfg.max_steps or out_of_time:
                    self.save()
                for cb in self.callbacks:
                    cb(record)
                if out_of_time:
                    logger.warning("%s: stopping at step %d (max_minutes/stop_at_step); run again to resume",
                                   self.desc, self.step)
                    stopped = True
                    break
        except StopTraining:
            stopped = True
            self.stop_reason = "callback"
        finally:
            if bar is not None:
                bar.close()
        if not stopped or self.stop_reason == "time":
            self._run_eval()
        return self.history
