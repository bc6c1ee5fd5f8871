"""Qwen2.5-VL wrapper: loading, one vision pass with layer taps, E_t class vectors, prompt injection, generation.

The model is transformers' own ``Qwen2_5_VLForConditionalGeneration`` (no forked modeling code), so the same
code serves a tiny random model on a CPU and Qwen2.5-VL-7B-Instruct on a GPU. Answers come from transformers'
``generate``, continuing a copy of the clip's cached prefix (benchmarks/bench_decode.py measured a hand-written
decode loop: no faster at a real model's layer width). The pitfalls this module exists to avoid: vision block
outputs are in window order; the video processor needs the real fps; rotary positions silently fall back to 1D
without ``mm_token_type_ids``; ``model.model.rope_deltas`` is mutable state a previous clip leaves behind, so
every full forward resets it and every cached answer restores the clip's own (they travel with its caches).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from tvad_chat.dtypes import parse_dtype
from tvad_chat.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from transformers.cache_utils import Cache

logger = logging.getLogger(__name__)

# The three special tokens of the anomaly-prompt block (same strings as prompts.PromptSet.anomaly_tokens).
ANOMALY_TOKENS: tuple[str, str, str] = ("<|anomaly_start|>", "<|anomaly_pad|>", "<|anomaly_end|>")
VISION_SKIP_MODULES = ["model.visual", "lm_head"]  # left unquantised under 4-bit loading


@dataclass
class VisionOutput:
    """Result of one vision pass over a clip; cache it per clip."""

    video_embeds: Tensor  # (N, D) merged video tokens for the language model, natural (unwindowed) order
    grids: list[Tensor]  # one per tap, (T', H', W', D_v), natural order
    tap_layers: tuple[int, ...]
    video_grid_thw: Tensor  # (1, 3) long: T', H', W' in patches
    second_per_grid_ts: Tensor  # (1,) seconds covered by one temporal patch
    fps: float
    frame_size: tuple[int, int]  # (height, width) of the frames the tower saw

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        t, h, w = (int(x) for x in self.video_grid_thw[0].tolist())
        return t, h, w

    @property
    def num_video_tokens(self) -> int:
        return int(self.video_embeds.shape[0])


@dataclass
class BackboneInputs:
    """Token-level inputs of one conversation over one clip (batch of one)."""

    input_ids: Tensor  # (1, L)
    attention_mask: Tensor  # (1, L)
    mm_token_type_ids: Tensor  # (1, L): 0 text, 2 video; required for 3D rotary positions
    video_grid_thw: Tensor
    second_per_grid_ts: Tensor
    prefix_len: int  # tokens up to and including the video block and the anomaly-prompt block
    num_prompt_tokens: int  # <|anomaly_pad|> rows to receive P_An
    labels: Tensor | None = None  # (1, L): assistant answers (+ their <|im_end|>), -100 elsewhere

    def model_kwargs(self) -> dict[str, Tensor]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "mm_token_type_ids": self.mm_token_type_ids,
            "video_grid_thw": self.video_grid_thw,
            "second_per_grid_ts": self.second_per_grid_ts,
        }


@dataclass
class CacheState:
    """A KV cache with the token ids it covers and the rotary offset it was computed with."""

    ids: Tensor  # (1, n) the tokens whose keys/values the cache holds
    cache: Cache
    rope_deltas: Tensor


@dataclass
class ClipCache:
    """The expensive per-clip language-model state: the prefix cache and the latest conversation cache.

    A question is answered from a copy of whichever state shares the longest token prefix with the new
    conversation, so the prefix (video + anomaly prompts) is computed once per clip and a follow-up costs
    only the tokens after the last answer.
    """

    prefix: CacheState
    latest: CacheState | None = None

    def best(self, ids: Tensor) -> tuple[Cache, int, Tensor]:
        """(a copy of the cache holding only the shared tokens, their number, rope_deltas) to continue ``ids`` from.

        The copy is independent: generating from it leaves the clip's states as they were.
        """
        best_state, best_n = self.prefix, _common_prefix(self.prefix.ids, ids)
        if best_n < self.prefix.ids.shape[1]:
            raise ConfigError("the conversation does not start with this clip's prefix; build it with build_inputs")
        if self.latest is not None:
            n = _common_prefix(self.latest.ids, ids)
            if n > best_n:
                best_state, best_n = self.latest, n
        best_n = min(best_n, ids.shape[1] - 1)  # generate needs at least one uncached token
        cache = copy.deepcopy(best_state.cache)
        extra = cache.get_seq_length() - best_n
        if extra > 0:
            cache.crop(-extra)
        return cache, best_n, best_state.rope_deltas.clone()


def _common_prefix(a: Tensor, b: Tensor) -> int:
    n = min(a.shape[1], b.shape[1])
    if n == 0:
        return 0
    diff = (a[0, :n] != b[0, :n]).nonzero()
    return int(diff[0, 0]) if len(diff) else n


@dataclass
class DecodeOptions:
    """How Backbone.generate picks tokens; greedy by default (the sampling knobs act only with do_sample)."""

    max_new_tokens: int = 64
    min_new_tokens: int = 0  # stop tokens are barred until this many tokens are out
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # transformers' rule over every token of the conversation
    seed: int | None = None  # sampling generator seed (None: torch's global generator)


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    state: CacheState | None = None  # cache after this turn (for the next follow-up)
    new_tokens_processed: int = 0  # prompt tokens the language model had to run (not cached)


def _default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _serialised(method):
    """Run a Backbone method under the instance lock (rope_deltas must not change mid-call)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") != 1 or os.sep != "/" and os.sep in name


class _CallbackStreamer:
    """Streams decoded text to a callback as new tokens arrive (transformers' TextStreamer does the detokenising)."""

    def __init__(self, tokenizer, callback: Callable[[str], Any]):
        from transformers import TextStreamer

        # generate puts the prompt's ids first: skipped.
        streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        streamer.on_finalized_text = lambda text, stream_end=False: callback(text) if text else None
        self._streamer = streamer

    def put(self, value: Tensor) -> None:
        self._streamer.put(value)

    def end(self) -> None:
        self._streamer.end()


class Backbone:
    """A Qwen2.5-VL model and its processor, with the operations T-VAD needs."""

    def __init__(self, model, processor, anomaly_tokens: Sequence[str] = ANOMALY_TOKENS):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.vision_passes = 0  # counts encode_video calls (tests prove follow-ups do not re-run it)
        self.peft_model = None  # set by tvad_chat.lora.apply_lora while adapters are unmerged
        # model.model.rope_deltas is shared mutable state: one language-model call at a time (UI sessions).
        self._lock = threading.RLock()
        self._class_vector_cache: dict[tuple, Tensor] = {}
        self.anomaly_tokens = tuple(anomaly_tokens)
        self.anomaly_token_ids = self._ensure_anomaly_tokens()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        model_id_or_dir: str | Path,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        device_map: str | dict | None = None,
        load_in_4bit: bool = False,
    ) -> Backbone:
        """Load a Qwen2.5-VL from a local directory or a hub id (the hub only when online and allowed).

        dtype defaults to bfloat16 on CUDA and float32 on CPU. ``load_in_4bit`` quantises the language model
        with bitsandbytes (NF4) and leaves the vision tower and lm_head in ``dtype``.
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

        name = str(model_id_or_dir)
        path = Path(name).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise CheckpointError(
                    f"{path} has no config.json: point to a directory written by save_pretrained "
                    "(or build one with `tvad` train stage 0 / tvad_chat.tiny.build_tiny(save_dir=...))"
                )
            source = str(path)
        elif _looks_like_path(name):
            raise CheckpointError(
                f"checkpoint directory {name} does not exist: pass an existing model directory "
                "or a hub id such as Qwen/Qwen2.5-VL-7B-Instruct"
            )
        else:
            source = name
        dev = _default_device(device)
        torch_dtype = parse_dtype(dtype, dev)
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if load_in_4bit:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch_dtype,
                llm_int8_skip_modules=list(VISION_SKIP_MODULES),
            )
            kwargs["device_map"] = device_map if device_map is not None else {"": str(dev)}
        elif device_map is not None:
            kwargs["device_map"] = device_map
        try:
            model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
            processor = AutoProcessor.from_pretrained(source)
        except (OSError, ValueError) as exc:
            where = "the local directory" if source != name else "the hub id (no local directory has that name)"
            raise CheckpointError(
                f"cannot load a Qwen2.5-VL from {where} {name!r}: {exc}. Use a local directory with config.json, "
                "model.safetensors and the processor files, or a hub id already in the local cache "
                "(everything runs offline)"
            ) from exc
        if getattr(model.config, "model_type", None) != "qwen2_5_vl":
            raise CheckpointError(f"{name} is a {model.config.model_type!r} model, not Qwen2.5-VL")
        if not load_in_4bit and device_map is None:
            model = model.to(dev)
        model.eval()
        logger.info("loaded %s (%s, %s%s)", name, torch_dtype, dev, ", 4-bit" if load_in_4bit else "")
        return cls(model, processor)

    @classmethod
    def from_tiny(cls, cfg=None, corpus=None, seed: int = 0, device: str | None = "cpu") -> Backbone:
        """A tiny random Qwen2.5-VL built offline (tvad_chat.tiny), float32."""
        from tvad_chat.tiny import build_tiny

        model, processor = build_tiny(cfg, corpus=corpus, seed=seed)
        return cls(model.to(device or "cpu"), processor)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write model (safetensors) + processor; LoRA adapters must be merged first (tvad_chat.lora.merge_lora)."""
        if self.peft_model is not None:
            raise ConfigError("merge the LoRA adapters (tvad_chat.lora.merge_lora) before saving the backbone")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def text_dim(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def vision_dim(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    @property
    def vision_depth(self) -> int:
        return int(self.model.config.vision_config.depth)

    @property
    def visual(self):
        return self.model.model.visual

    def _embed_tokens(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    # ------------------------------------------------------------------ anomaly tokens
    def _ensure_anomaly_tokens(self) -> list[int]:
        """Add the start/pad/end tokens (if missing) and give fresh rows the mean embedding of the vocabulary."""
        from tokenizers import AddedToken

        missing = [t for t in self.anomaly_tokens if t not in self.tokenizer.get_vocab()]
        if missing:
            self.tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing],
                                      special_tokens=True)
        ids = [int(self.tokenizer.convert_tokens_to_ids(t)) for t in self.anomaly_tokens]
        emb = self._embed_tokens()
        old_rows = emb.weight.shape[0]
        if max(ids) >= old_rows:
            # The real checkpoints have spare rows (152064 > 151665 tokens); tiny ones do not.
            self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        if missing:
            fresh = [self.tokenizer.convert_tokens_to_ids(t) for t in missing]
            with torch.no_grad():
                w = self._embed_tokens().weight
                w[fresh] = w[: min(old_rows, min(fresh))].float().mean(0).to(w.dtype)
                head = self.model.get_output_embeddings()
                if head is not None and head.weight is not w and head.weight.shape[0] > max(fresh):
                    head.weight[fresh] = head.weight[: min(fresh)].float().mean(0).to(head.weight.dtype)
        return ids

    # ------------------------------------------------------------------ vision
    def prepare_video(self, model_frames: np.ndarray, fps: float) -> tuple[Tensor, Tensor, Tensor]:
        """Processor step: (pixel_values_videos, video_grid_thw, second_per_grid_ts) for uint8 (T, H, W, 3) frames."""
        from transformers.video_utils import VideoMetadata

        frames = np.asarray(model_frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ConfigError(f"model frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        if not fps or fps <= 0:
            raise ConfigError(f"fps must be positive, got {fps}")
        t, h, w, _ = frames.shape
        vp = self.processor.video_processor
        factor = vp.patch_size * vp.merge_size
        kwargs: dict[str, Any] = {}
        if h % factor == 0 and w % factor == 0:
            kwargs["do_resize"] = False  # frames were already sized by video.resize_for_model
        meta = VideoMetadata(total_num_frames=t, fps=float(fps), width=w, height=h, duration=t / float(fps),
                             frames_indices=list(range(t)))
        out = vp(videos=[frames], video_metadata=[meta], do_sample_frames=False, return_tensors="pt", **kwargs)
        tps = vp.temporal_patch_size
        second_per_grid_ts = torch.tensor([tps / float(fps)])
        return out["pixel_values_videos"], out["video_grid_thw"], second_per_grid_ts

    def unwindow(self, states: Tensor, grid_thw: Tensor) -> Tensor:
        """Vision-block states (seq, D) in window order -> grid (T', H', W', D) in natural order."""
        from transformers.vision_utils import get_vision_window_index

        visual = self.visual
        m = visual.spatial_merge_size
        window_index, _ = get_vision_window_index(
            grid_thw.cpu(), spatial_merge_size=m, window_size=visual.window_size, patch_size=visual.patch_size
        )
        unit = m * m
        t, gh, gw = (int(x) for x in grid_thw[0].tolist())
        d = states.shape[-1]
        reverse = torch.argsort(window_index).to(states.device)
        natural = states.reshape(-1, unit, d)[reverse]
        # Rows are (t, gh/m, gw/m, m, m) merge units; un-merge to a plain patch grid.
        grid = natural.reshape(t, gh // m, gw // m, m, m, d).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(t, gh, gw, d)

    def encode_video(
        self,
        model_frames: np.ndarray,
        fps: float,
        tap_layers: Sequence[int] = (),
        grad: bool = False,
    ) -> VisionOutput:
        """ONE vision pass: merged video embeddings for the LM and the tapped block outputs as grids.

        tap 0 is the input of block 0 (the patch embedding); tap i (1-based) is the output of block i-1.
        """
        taps = tuple(int(i) for i in tap_layers)
        depth = self.vision_depth
        bad = [i for i in taps if not 0 <= i <= depth]
        if bad:
            raise ConfigError(f"tap layers {bad} out of range: this vision tower has blocks 1..{depth} (0 = patch embed)")
        pixels, grid_thw, spg = self.prepare_video(model_frames, fps)
        visual = self.visual
        pixels = pixels.to(self.device)
        grid_thw = grid_thw.to(self.device)
        captured: dict[int, Tensor] = {}
        handles = []

        def _save(idx: int):
            def hook(module, args, kwargs, output=None):
                if output is None:  # pre-hook: the block's input
                    hs = args[0] if args else kwargs["hidden_states"]
                else:
                    hs = output[0] if isinstance(output, tuple) else output
                captured[idx] = hs
            return hook

        try:
            for i in set(taps):
                if i == 0:
                    handles.append(visual.blocks[0].register_forward_pre_hook(_save(0), with_kwargs=True))
                else:
                    handles.append(visual.blocks[i - 1].register_forward_hook(_save(i), with_kwargs=True))
            with torch.set_grad_enabled(grad):
                out = self.model.model.get_video_features(pixels, grid_thw, return_dict=True)
        finally:
            for h in handles:
                h.remove()
        self.vision_passes += 1
        video_embeds = torch.cat(list(out.pooler_output), dim=0)
        grids = [self.unwindow(captured[i], grid_thw) for i in taps]
        h, w = int(model_frames.shape[1]), int(model_frames.shape[2])
        return VisionOutput(
            video_embeds=video_embeds,
            grids=grids,
            tap_layers=taps,
            video_grid_thw=grid_thw,
            second_per_grid_ts=spg.to(self.device),
            fps=float(fps),
            frame_size=(h, w),
        )

    # ------------------------------------------------------------------ text side
    def class_vectors(self, prompt_set) -> Tensor:
        """E_t: (2, D) rows [normal, abnormal]; masked mean of input embeddings per template, mean per class."""
        key = (tuple(prompt_set.normal_texts), tuple(prompt_set.abnormal_texts))
        cached = self._class_vector_cache.get(key)
        if cached is not None:
            return cached
        rows = [self.text_embedding(prompt_set.normal_texts).mean(0), self.text_embedding(prompt_set.abnormal_texts).mean(0)]
        vectors = torch.stack(rows).detach()
        self._class_vector_cache[key] = vectors
        return vectors

    def text_embedding(self, texts: Sequence[str]) -> Tensor:
        """(len(texts), D) float32: masked mean of the input-embedding rows over each text's real tokens."""
        if not texts:
            raise ConfigError("no prompt texts given for a class vector")
        enc = self.tokenizer(list(texts), add_special_tokens=False, padding=True, return_tensors="pt")
        ids = enc["input_ids"].to(self.device)
        mask = enc["attention_mask"].to(self.device).float().unsqueeze(-1)
        with torch.no_grad():
            emb = self._embed_tokens()(ids).float()
        return (emb * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    # ------------------------------------------------------------------ inputs
    def placeholder_block(self, num_prompt_tokens: int) -> str:
        if num_prompt_tokens <= 0:
            return ""
        start, pad, end = self.anomaly_tokens
        return start + pad * num_prompt_tokens + end

    def build_inputs(
        self,
        vision: VisionOutput,
        dialogue: Sequence[dict[str, str]],
        num_prompt_tokens: int = 0,
        system_prompt: str | None = None,
        add_generation_prompt: bool = True,
        with_labels: bool = False,
    ) -> BackboneInputs:
        """Token ids of [system, user: <video block><anomaly block>first question, assistant, user, ...].

        ``dialogue`` alternates {"role": "user"|"assistant", "content": str}, starting with the user. The anomaly
        placeholder block sits right after the video block, so everything up to it is a per-clip prefix.
        ``with_labels`` marks the assistant answers (and the <|im_end|> closing each) as SFT targets.
        """
        if not dialogue or dialogue[0].get("role") != "user":
            raise ConfigError("the dialogue must start with a user turn")
        messages: list[dict[str, Any]] = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        first = dialogue[0]
        block = self.placeholder_block(num_prompt_tokens)
        messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": block + first["content"]}]})
        messages.extend({"role": m["role"], "content": m["content"]} for m in dialogue[1:])
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        video_pad = self.processor.video_token
        if text.count(video_pad) != 1:
            raise ConfigError("the chat template must render exactly one video placeholder")
        text = text.replace(video_pad, video_pad * vision.num_video_tokens)
        # The prefix ends after a special token, so it tokenizes identically on its own and inside `text`.
        end_marker = self.anomaly_tokens[2] if num_prompt_tokens > 0 else "<|vision_end|>"
        prefix_text = text[: text.index(end_marker) + len(end_marker)]
        enc = self.tokenizer(text, add_special_tokens=False, return_tensors="pt", return_offsets_mapping=with_labels)
        ids = enc["input_ids"]
        labels = None
        if with_labels:
            labels = self._answer_labels(text, ids, enc["offset_mapping"][0], dialogue)
        prefix_ids = self.tokenizer(prefix_text, add_special_tokens=False)["input_ids"]
        if ids[0, : len(prefix_ids)].tolist() != list(prefix_ids):
            raise ConfigError("the clip prefix does not tokenize as a prefix of the conversation")
        video_id = self.model.config.video_token_id
        image_id = self.model.config.image_token_id
        mm = torch.zeros_like(ids, dtype=torch.int32)
        mm[ids == image_id] = 1
        mm[ids == video_id] = 2
        n_pad = int((ids == self.anomaly_token_ids[1]).sum())
        if n_pad != num_prompt_tokens:
            raise ConfigError(f"found {n_pad} anomaly pad tokens, expected {num_prompt_tokens}: keep them out of the dialogue")
        dev = self.device
        return BackboneInputs(
            input_ids=ids.to(dev),
            attention_mask=torch.ones_like(ids).to(dev),
            mm_token_type_ids=mm.to(dev),
            video_grid_thw=vision.video_grid_thw.to(dev),
            second_per_grid_ts=vision.second_per_grid_ts.to(dev),
            prefix_len=len(prefix_ids),
            num_prompt_tokens=num_prompt_tokens,
            labels=labels.to(dev) if labels is not None else None,
        )

    def _answer_labels(self, text: str, ids: Tensor, offsets: Tensor, dialogue: Sequence[dict[str, str]]) -> Tensor:
        """-100 everywhere except the tokens of each assistant answer and its closing <|im_end|>."""
        head, end = "<|im_start|>assistant\n", "<|im_end|>"
        spans, pos = [], 0
        for message in dialogue:
            if message["role"] != "assistant":
                continue
            start = text.find(head + message["content"] + end, pos)
            if start < 0:
                raise ConfigError("an assistant turn was not rendered by the chat template as expected")
            begin = start + len(head)
            pos = begin + len(message["content"]) + len(end)
            spans.append((begin, pos))
        labels = torch.full_like(ids, -100)
        starts = offsets[:, 0].tolist()
        for i, s in enumerate(starts):
            if any(b <= s < e for b, e in spans):
                labels[0, i] = ids[0, i]
        return labels

    def inputs_embeds(self, inputs: BackboneInputs, vision: VisionOutput, prompt_embeds: Tensor | None = None) -> Tensor:
        """Token embeddings with the video tokens and P_An scattered into their rows (masked_scatter)."""
        ids = inputs.input_ids
        embeds = self._embed_tokens()(ids)
        video_mask = (ids == self.model.config.video_token_id).unsqueeze(-1).expand_as(embeds)
        if int(video_mask[..., 0].sum()) != vision.num_video_tokens:
            raise ConfigError("the number of video tokens does not match the vision output")
        embeds = embeds.masked_scatter(video_mask, vision.video_embeds.to(embeds.device, embeds.dtype))
        if prompt_embeds is not None:
            embeds = self.inject(ids, embeds, prompt_embeds)
        elif inputs.num_prompt_tokens:
            raise ConfigError("the inputs hold anomaly pad tokens but no prompt embeddings were given")
        return embeds

    def inject(self, input_ids: Tensor, embeds: Tensor, prompt_embeds: Tensor) -> Tensor:
        """Replace the <|anomaly_pad|> rows of ``embeds`` with ``prompt_embeds`` (any shape ending in D)."""
        flat = prompt_embeds.reshape(-1, embeds.shape[-1]).to(embeds.device, embeds.dtype)
        mask = (input_ids == self.anomaly_token_ids[1]).unsqueeze(-1).expand_as(embeds)
        n = int(mask[..., 0].sum())
        if n != flat.shape[0]:
            raise ConfigError(f"{flat.shape[0]} prompt vectors for {n} placeholder tokens")
        return embeds.masked_scatter(mask, flat)

    # ------------------------------------------------------------------ language model
    @_serialised
    def forward(self, inputs: BackboneInputs, vision: VisionOutput, prompt_embeds: Tensor | None = None,
                labels: Tensor | None = None, **kwargs):
        """Teacher-forced forward pass (training / scoring) with 3D rotary positions."""
        embeds = self.inputs_embeds(inputs, vision, prompt_embeds)
        self.model.model.rope_deltas = None  # never let a previous clip's offset leak in
        return self.model(inputs_embeds=embeds, labels=labels, **inputs.model_kwargs(), **kwargs)

    @_serialised
    def prefill(self, inputs: BackboneInputs, vision: VisionOutput, prompt_embeds: Tensor | None = None) -> ClipCache:
        """Run the per-clip prefix (system, video, anomaly prompts) once and keep its KV cache."""
        n = inputs.prefix_len
        prefix = BackboneInputs(
            input_ids=inputs.input_ids[:, :n],
            attention_mask=inputs.attention_mask[:, :n],
            mm_token_type_ids=inputs.mm_token_type_ids[:, :n],
            video_grid_thw=inputs.video_grid_thw,
            second_per_grid_ts=inputs.second_per_grid_ts,
            prefix_len=n,
            num_prompt_tokens=inputs.num_prompt_tokens,
        )
        with torch.no_grad():
            embeds = self.inputs_embeds(prefix, vision, prompt_embeds)
            self.model.model.rope_deltas = None
            out = self.model.model(inputs_embeds=embeds, use_cache=True, **prefix.model_kwargs())
        rope_deltas = self.model.model.rope_deltas.clone()
        return ClipCache(prefix=CacheState(ids=prefix.input_ids.clone(), cache=out.past_key_values,
                                           rope_deltas=rope_deltas))

    @_serialised
    def generate(
        self,
        inputs: BackboneInputs,
        vision: VisionOutput | None = None,
        prompt_embeds: Tensor | None = None,
        clip_cache: ClipCache | None = None,
        max_new_tokens: int = 64,
        stream: Callable[[str], Any] | None = None,
        **options: Any,
    ) -> GenerationResult:
        """Answer the conversation in ``inputs`` with transformers' ``generate`` (greedy unless ``do_sample=True``).

        With ``clip_cache`` only the tokens after the longest cached prefix are run (no vision pass, no prefix);
        without it the whole sequence is run from ``vision`` and ``prompt_embeds``. ``stream`` receives text
        chunks as they are decoded. ``options`` are the fields of DecodeOptions (min_new_tokens, do_sample,
        temperature, top_k, top_p, repetition_penalty, seed). The anomaly placeholders are never generated.
        """
        from transformers import DynamicCache

        opts = self.decode_options(max_new_tokens, **options)
        ids = inputs.input_ids
        length = ids.shape[1]
        if clip_cache is None and vision is None:
            raise ConfigError("generate needs the clip's vision output or its cache")
        sampling = {"temperature": opts.temperature, "top_k": opts.top_k, "top_p": opts.top_p} if opts.do_sample else {}
        devices = [self.device] if self.device.type == "cuda" else []
        # A seed draws from a forked generator state, so seeded answers leave torch's global state untouched.
        with torch.inference_mode(), torch.random.fork_rng(devices=devices, enabled=opts.seed is not None):
            embeds: dict[str, Tensor] = {}
            if clip_cache is not None:
                cache, n_cached, rope_deltas = clip_cache.best(ids)
                self.model.model.rope_deltas = rope_deltas  # the clip's offset for the text after its video block
            else:
                embeds["inputs_embeds"] = self.inputs_embeds(inputs, vision, prompt_embeds)
                cache, n_cached = DynamicCache(config=self.model.config), 0
                self.model.model.rope_deltas = None  # computed afresh from this sequence
            if opts.seed is not None:
                torch.manual_seed(opts.seed)
            sequences = self.model.generate(
                **inputs.model_kwargs(), **embeds, past_key_values=cache,
                max_new_tokens=opts.max_new_tokens, min_new_tokens=opts.min_new_tokens, do_sample=opts.do_sample,
                repetition_penalty=opts.repetition_penalty, eos_token_id=self.stop_token_ids(),
                suppress_tokens=list(self.anomaly_token_ids), **sampling,
                streamer=_CallbackStreamer(self.tokenizer, stream) if stream is not None else None,
            )
        token_ids = sequences[0, length:].tolist()
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        # The last token was never fed back, so the cache covers the sequence up to the one before it.
        state = CacheState(ids=sequences[:, : cache.get_seq_length()].clone(), cache=cache,
                           rope_deltas=self.model.model.rope_deltas.clone())
        if clip_cache is not None:
            clip_cache.latest = state
        return GenerationResult(text=text, token_ids=token_ids, state=state, new_tokens_processed=length - n_cached)

    def decode_options(self, max_new_tokens: int = 64, **options: Any) -> DecodeOptions:
        """DecodeOptions from keyword options; defaults from the model's generation_config where it has them."""
        fields = set(DecodeOptions.__dataclass_fields__)
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ConfigError(f"unknown generation options {unknown}: use {sorted(fields)}")
        gc = self.model.generation_config
        # Only the repetition penalty is inherited when greedy (Qwen2.5-VL-7B-Instruct ships 1.05). The sampling
        # knobs only matter with do_sample=True.
        values: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "repetition_penalty": float(getattr(gc, "repetition_penalty", None) or 1.0),
            "temperature": float(getattr(gc, "temperature", None) or 1.0),
            "top_k": int(getattr(gc, "top_k", None) or 0),
            "top_p": float(getattr(gc, "top_p", None) or 1.0),
        }
        values.update({k: v for k, v in options.items() if v is not None})
        opts = DecodeOptions(**values)
        if opts.max_new_tokens < 1 or opts.min_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be >= 1 and min_new_tokens >= 0, got {opts.max_new_tokens}, "
                              f"{opts.min_new_tokens}")
        if opts.temperature <= 0 or not 0 < opts.top_p <= 1 or opts.top_k < 0 or opts.repetition_penalty <= 0:
            raise ConfigError("sampling options out of range: temperature > 0, 0 < top_p <= 1, top_k >= 0, "
                              "repetition_penalty > 0")
        return opts

    def stop_token_ids(self) -> list[int]:
        """Token ids that end an answer: the generation_config's eos ids, else <|im_end|>."""
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]
