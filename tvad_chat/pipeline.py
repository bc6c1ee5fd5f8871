"""TVAD = backbone + optional AHD + optional RAE: analyze a clip once, answer questions about it.

Variants (the paper's ablations): no heads = "w/o AHD & RAE" (the plain Qwen2.5-VL answers); AHD only =
heatmaps and evidence, plain answers; AHD + RAE = the full method (P_An injected after the video block).

Per clip, ``analyze`` does all the expensive work once: model-size frames, ONE vision pass (video tokens and
tapped grids), heatmaps from the heatmap source, evidence (frame scores, judgement, tracks, timeline), RAE
prompts and the language model's prefix KV cache. ``answer`` then costs only the new turn's tokens.

Heatmap source (tvad_chat.heatmap_sources): by default the AHD on the vision pass (``AHDSource``); a scene
profile (``ProfileSource``) or a fusion of both (``FusedSource``) can stand in for it, and the evidence and the
RAE then read that source's maps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from prompts.loader import PromptSet, load_prompts
from tvad_chat.backbone import Backbone, ClipCache, VisionOutput
from tvad_chat.errors import CheckpointError, ConfigError
from tvad_chat.heatmap_sources import (
    AHDSource,
    HeatmapRequest,
    HeatmapSource,
    ahd_outputs,
    checked_class_probs,
)
from tvad_chat.video import sampled_fps

logger = logging.getLogger(__name__)

CONFIG_NAME = "tvad_config.json"


@dataclass
class TVADConfig:
    """Pipeline settings saved next to the weights (tvad_config.json)."""

    max_pixels: int = 448 * 448  # model-frame pixel budget (sides multiples of 28)
    min_pixels: int = 56 * 56
    max_new_tokens: int = 128
    extra_events: list[str] = field(default_factory=list)  # user anomaly categories added to the templates
    keep_grids: bool = False  # keep the tapped grids in Analysis.state (7B: ~80 MB per clip; answers need none)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TVADConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class ModelState:
    """What ``answer`` needs about a clip, computed once by ``analyze``."""

    vision: VisionOutput
    prompt_embeds: Tensor | None  # P_An flattened (num_prompt_tokens, D), None without RAE
    num_prompt_tokens: int
    clip_cache: ClipCache
    class_probs: Tensor | None = None  # the heatmap source's (T', 2, H', W')
    system_prompt: str | None = None  # as the prefix was built (with the clip's context): answers reuse it


@dataclass
class Analysis:
    """Everything known about one clip after ``analyze`` (DESIGN.md section 4)."""

    clip: Any  # tvad_chat.video.Clip
    model_frames_shape: tuple[int, int, int]  # (T, H, W) the vision tower saw
    heatmaps: np.ndarray | None  # (T', H', W') abnormal probability, None without a heatmap source
    frame_scores: np.ndarray | None  # (T,) one score per sampled frame
    judgement: bool | None  # threshold-free yes/no: the abnormal channel beats the normal one
    score: float | None
    tracks: list[Any] = field(default_factory=list)
    timeline: list[Any] = field(default_factory=list)
    evidence: Any = None  # the full tvad_chat.evidence result
    state: ModelState | None = None
    timings: dict[str, float] = field(default_factory=dict)
    last_generation: Any = None  # backbone.GenerationResult of the latest answer (token ids, tokens run)
    heatmap_source: str | None = None  # name of the source the heatmaps came from ("ahd", "profile:NAME", ...)


class TVAD:
    """The T-VAD model: a Qwen2.5-VL backbone with optional AHD and RAE heads."""

    def __init__(self, backbone: Backbone, ahd=None, rae=None, prompts=None, config: TVADConfig | None = None,
                 heatmap_source: HeatmapSource | None = None):
        if rae is not None and ahd is None and heatmap_source is None:
            raise ConfigError("RAE reads the AHD heatmaps: load an AHD head too, give a heatmap source, or drop RAE")
        self.backbone = backbone
        self.ahd = ahd
        self.rae = rae
        self.config = config or TVADConfig()
        if prompts is None:
            prompts = load_prompts(extra_events=self.config.extra_events or None)
        self.prompts = prompts
        if tuple(getattr(prompts, "anomaly_tokens", backbone.anomaly_tokens)) != backbone.anomaly_tokens:
            raise ConfigError("the prompt set's anomaly tokens differ from the backbone's")
        if ahd is not None:
            self._check_head_dims()
        self._place_heads()
        # The maps analyze() reads: the AHD's unless another source is given (None: no heatmaps).
        if heatmap_source is None and ahd is not None:
            heatmap_source = AHDSource(ahd, backbone, self.prompts)
        self.heatmap_source = heatmap_source

    # ------------------------------------------------------------------ construction
    def _check_head_dims(self) -> None:
        cfg = self.ahd.config
        if cfg.vision_dim != self.backbone.vision_dim or cfg.text_dim != self.backbone.text_dim:
            raise CheckpointError(
                f"AHD expects vision/text widths {cfg.vision_dim}/{cfg.text_dim} but the backbone has "
                f"{self.backbone.vision_dim}/{self.backbone.text_dim}: heads and backbone come from different models"
            )
        bad = [t for t in cfg.tap_layers if not 0 <= int(t) <= self.backbone.vision_depth]
        if bad:
            raise CheckpointError(f"AHD taps {bad} do not exist in a {self.backbone.vision_depth}-block vision tower")
        if self.rae is not None and self.rae.config.text_dim != self.backbone.text_dim:
            raise CheckpointError("the RAE prompt width differs from the language model's hidden size")

    def _place_heads(self) -> None:
        device = self.backbone.device
        for head in (self.ahd, self.rae):
            if head is not None:
                head.to(device=device, dtype=torch.float32)
                head.eval()

    @property
    def variant(self) -> str:
        return "ahd+rae" if self.rae is not None else "ahd" if self.ahd is not None else "backbone"

    @property
    def vision_passes(self) -> int:
        return self.backbone.vision_passes

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        dtype: str | torch.dtype | None = None,
        device: str | None = None,
        device_map: str | dict | None = None,
        load_in_4bit: bool = False,
        use_heads: Sequence[str] = ("ahd", "rae"),
        prompts=None,
    ) -> TVAD:
        """Backbone from ``directory`` (or a hub id) plus the heads in ``ahd/`` and ``rae/`` when present."""
        backbone = Backbone.load(directory, dtype=dtype, device=device, device_map=device_map,
                                 load_in_4bit=load_in_4bit)
        root = Path(directory)
        config = TVADConfig()
        if (root / CONFIG_NAME).is_file():
            try:
                config = TVADConfig.from_dict(json.loads((root / CONFIG_NAME).read_text()))
            except (json.JSONDecodeError, TypeError) as exc:
                raise CheckpointError(f"{root / CONFIG_NAME} is not a valid T-VAD config: {exc}") from exc
        ahd = rae = None
        if "ahd" in use_heads and (root / "ahd").is_dir():
            from heads.ahd import AnomalyHeatmapDecoder

            ahd = AnomalyHeatmapDecoder.from_pretrained(root / "ahd")
        if "rae" in use_heads and (root / "rae").is_dir():
            if ahd is None:
                raise CheckpointError(f"{root} has an rae/ head but no ahd/ head: RAE needs the AHD heatmaps")
            from heads.rae import RegionAwareAnomalyEncoder

            rae = RegionAwareAnomalyEncoder.from_pretrained(root / "rae")
        logger.info("T-VAD from %s: %s", directory, "+".join(h for h, m in (("ahd", ahd), ("rae", rae)) if m)
                    or "backbone only")
        return cls(backbone, ahd=ahd, rae=rae, prompts=prompts, config=config)

    def save_pretrained(self, directory: str | Path) -> None:
        """Backbone (model + processor) at the root, heads in ``ahd/`` and ``rae/``, settings in tvad_config.json."""
        root = Path(directory)
        self.backbone.save_pretrained(root)
        for name, head in (("ahd", self.ahd), ("rae", self.rae)):
            if head is not None:
                head.save_pretrained(root / name)
        (root / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))

    # ------------------------------------------------------------------ per clip
    def model_frames(self, clip) -> np.ndarray:
        from tvad_chat.video import resize_for_model

        return resize_for_model(clip.frames, max_pixels=self.config.max_pixels, min_pixels=self.config.min_pixels)

    def heatmap_outputs(self, vision: VisionOutput, grad: bool = False, prompts: PromptSet | None = None):
        """AHD on the tapped grids of a vision pass (None without AHD); ``prompts`` default to the model's own."""
        if self.ahd is None:
            return None
        return ahd_outputs(self.ahd, self.backbone, vision, prompts or self.prompts, grad=grad)

    def anomaly_prompts(self, class_probs: Tensor | None, grad: bool = False) -> Tensor | None:
        """RAE prompts P_An flattened to (num_prompt_tokens, D) (None without RAE)."""
        if self.rae is None or class_probs is None:
            return None
        with torch.set_grad_enabled(grad):
            p_an = self.rae(class_probs)
        return p_an.reshape(-1, p_an.shape[-1])

    def prompts_with(self, extra_events: Sequence[str]) -> PromptSet:
        """The model's prompt set with ``extra_events`` added (the model's own set is left as it is)."""
        if not extra_events:
            return self.prompts
        return load_prompts(extra_events=[*self.prompts.events, *extra_events])

    def analyze(self, clip, extra_events: Sequence[str] = (), heatmap_source: HeatmapSource | None = None,
                context: str | None = None) -> Analysis:
        """All per-clip work, once: vision pass, heatmaps, evidence, anomaly prompts, prefix cache.

        ``extra_events``: anomaly categories looked for in this clip besides the model's own.
        ``context``: text about this clip the model reads with its system prompt (the scene analysis's
        evidence); it is part of the cached prefix, so follow-ups do not pay for it again.
        ``heatmap_source``: where this clip's maps come from (default: the model's, ``self.heatmap_source``);
        the evidence and the RAE read its class probabilities.
        """
        import time

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        frames = self.model_frames(clip)
        if len(frames) == 0:
            raise ConfigError("the clip has no frames")
        vision = self.backbone.encode_video(frames, sampled_fps(clip.timestamps, clip.source_fps or 1.0),
                                            tuple(self.ahd.config.tap_layers) if self.ahd is not None else ())
        timings["vision_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        source = heatmap_source if heatmap_source is not None else self.heatmap_source
        class_probs = heatmaps = None
        if source is not None:
            request = HeatmapRequest(clip, vision.grid_shape, vision, self.prompts_with(extra_events))
            class_probs = checked_class_probs(source, request).detach()
            heatmaps = class_probs[:, 1].float().cpu().numpy()
        prompt_embeds = self.anomaly_prompts(class_probs)
        prompt_embeds = prompt_embeds.detach() if prompt_embeds is not None else None
        timings["heads_s"] = time.perf_counter() - t1
        if not self.config.keep_grids:
            vision.grids = []
        t2 = time.perf_counter()
        evidence = self._evidence(clip, heatmaps, class_probs)
        timings["evidence_s"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        n_prompt = 0 if prompt_embeds is None else int(prompt_embeds.shape[0])
        # Any user turn works here: only the per-clip prefix (system, video, anomaly block) is run.
        system_prompt = self._system_prompt(context)
        inputs = self.backbone.build_inputs(vision, [{"role": "user", "content": "?"}], n_prompt,
                                            system_prompt=system_prompt)
        clip_cache = self.backbone.prefill(inputs, vision, prompt_embeds)
        timings["prefix_s"] = time.perf_counter() - t3
        timings["total_s"] = time.perf_counter() - t0
        return Analysis(
            clip=clip,
            model_frames_shape=tuple(int(x) for x in frames.shape[:3]),
            heatmaps=heatmaps,
            frame_scores=evidence.get("frame_scores"),
            judgement=evidence.get("judgement"),
            score=evidence.get("score"),
            tracks=evidence.get("tracks", []),
            timeline=evidence.get("timeline", []),
            evidence=evidence.get("raw"),
            state=ModelState(vision=vision, prompt_embeds=prompt_embeds, num_prompt_tokens=n_prompt,
                             clip_cache=clip_cache, class_probs=class_probs, system_prompt=system_prompt),
            timings=timings,
            heatmap_source=source.name if source is not None else None,
        )

    def _system_prompt(self, context: str | None = None) -> str | None:
        base = getattr(self.prompts, "system_prompt", None) or None
        if not context:
            return base
        return f"{base}\n\n{context}" if base else context

    def _evidence(self, clip, heatmaps: np.ndarray | None, class_probs: Tensor | None) -> dict[str, Any]:
        if heatmaps is None:
            return {}
        from tvad_chat import evidence as ev

        probs = class_probs.float().cpu().numpy()
        result = ev.analyze_heatmaps(heatmaps, probs, clip)
        return {
            "frame_scores": result.frame_scores,
            "judgement": result.judgement,
            "score": result.score,
            "tracks": result.tracks,
            "timeline": result.timeline,
            "raw": result,
        }

    # ------------------------------------------------------------------ dialogue
    @staticmethod
    def dialogue(history: Sequence[Any], question: str) -> list[dict[str, str]]:
        """History as [{"role", "content"}...] or [(question, answer)...], then the new question."""
        turns: list[dict[str, str]] = []
        for item in history:
            if isinstance(item, dict):
                turns.append({"role": str(item["role"]), "content": str(item["content"])})
            else:
                q, a = item
                turns += [{"role": "user", "content": str(q)}, {"role": "assistant", "content": str(a)}]
        turns = [t for t in turns if t["role"] != "system"]
        turns.append({"role": "user", "content": question})
        for i, t in enumerate(turns):
            if t["role"] != ("user" if i % 2 == 0 else "assistant"):
                raise ConfigError("the history must alternate user and assistant turns, starting with the user")
        return turns

    def answer(
        self,
        analysis: Analysis,
        history: Sequence[Any],
        question: str,
        stream: Callable[[str], Any] | None = None,
        max_new_tokens: int | None = None,
        **generate_kwargs: Any,
    ) -> str:
        """Answer ``question`` about the analysed clip; ``stream`` gets text chunks as they are decoded.

        Reuses the clip's cached prefix (and the previous turn's cache), so no vision pass runs here.
        """
        if analysis.state is None:
            raise ConfigError("this analysis holds no model state: run TVAD.analyze on the clip first")
        if not question or not question.strip():
            raise ConfigError("the question is empty")
        state = analysis.state
        inputs = self.backbone.build_inputs(state.vision, self.dialogue(history, question), state.num_prompt_tokens,
                                            system_prompt=state.system_prompt)
        result = self.backbone.generate(inputs, clip_cache=state.clip_cache,
                                        max_new_tokens=max_new_tokens or self.config.max_new_tokens, stream=stream,
                                        **generate_kwargs)
        analysis.last_generation = result
        # Unstripped on purpose: passed back as history it re-tokenises to the cached ids, so the next
        # follow-up reuses this turn's cache too.
        return result.text

    # ------------------------------------------------------------------ training
    def lm_loss(self, vision: VisionOutput, dialogue: Sequence[dict[str, str]], class_probs: Tensor | None = None,
                prompt_embeds: Tensor | None = None, last_answer_only: bool = False) -> Tensor:
        """Teacher-forced answer loss (labels on assistant turns only); gradients reach RAE and LoRA.

        Pass ``class_probs`` (with their graph) to run RAE here, or ready ``prompt_embeds``. With
        ``last_answer_only`` the earlier answers are context, not targets (see :func:`last_answer_labels`).
        """
        if prompt_embeds is None and self.rae is not None:
            if class_probs is None:
                raise ConfigError("RAE needs the AHD class probabilities of the clip")
            prompt_embeds = self.anomaly_prompts(class_probs, grad=True)
        n_prompt = 0 if prompt_embeds is None else int(prompt_embeds.shape[0])
        inputs = self.backbone.build_inputs(vision, dialogue, n_prompt, system_prompt=self._system_prompt(),
                                            add_generation_prompt=False, with_labels=True)
        labels = last_answer_labels(inputs.labels) if last_answer_only else inputs.labels
        return self.backbone.forward(inputs, vision, prompt_embeds, labels=labels).loss


def last_answer_labels(labels: Tensor) -> Tensor:
    """Keep only the last run of target tokens (the final assistant answer) of (1, L) SFT labels.

    A corpus sample k holds the first k turns of a video's dialogue, so with every answer a target the
    judgement turn of an anomalous video is trained once per later sample (4x per anomalous video, 1x per
    normal one); keeping the last answer trains each turn once.
    """
    out = torch.full_like(labels, -100)
    target = (labels[0] != -100).nonzero().flatten()
    if len(target) == 0:
        return out
    end = int(target[-1]) + 1
    start = end - 1
    while start > 0 and labels[0, start - 1] != -100:
        start -= 1
    out[0, start:end] = labels[0, start:end]
    return out
