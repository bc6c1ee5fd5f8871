"""Offline tiny Qwen2.5-VL models: configs, a locally trained tokenizer, the chat template, a processor.

Everything here is built in-process from random weights and a byte-level BPE trained on a small
corpus, so tests and the shipped default model never touch a model hub. The architecture is the
real transformers ``Qwen2_5_VLForConditionalGeneration``; only the widths and depths are small.

The constraints that transformers does not check for us:
sum(mrope_section) == head_dim / 2, vision head dim divisible by 4, vision ``out_hidden_size`` ==
text ``hidden_size``, every ``fullatt_block_indexes`` entry < depth, ``window_size`` a multiple of 28.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tvad_chat.errors import ConfigError

logger = logging.getLogger(__name__)

# Qwen2.5-VL's own special tokens, in Qwen's order. The chat template and the processor rely on them.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# ChatML as Qwen2.5-VL uses it: a default system turn, images/videos rendered as
# <|vision_start|><|..._pad|><|vision_end|> inside the user turn, <|im_end|> after every turn.
CHAT_TEMPLATE = (
    # Newlines are Jinja string expressions so that whitespace control never eats them.
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'video' or 'video' in item -%}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in item -%}"
    "{{ item['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- endif -%}"
)

# A small English corpus about surveillance scenes: the default training text of the tiny BPE.
# Byte-level BPE encodes any text; these words just get short token sequences.
DEFAULT_CORPUS: tuple[str, ...] = (
    "Is there an anomaly in this video? Yes, there is an anomaly. No, there is no anomaly.",
    "The video shows a normal scene where people walk on the sidewalk.",
    "A person is riding a bicycle through the crowd of pedestrians.",
    "A car drives across the walkway from left to right at high speed.",
    "A man runs quickly from the bottom to the top of the frame.",
    "Two people fight near the entrance while others walk past.",
    "A skateboarder moves fast along the path; a cart is pushed slowly.",
    "The anomalous target wears a red shirt and blue trousers and carries a bag.",
    "The target appears at the left edge, moves toward the right and leaves the scene.",
    "It enters at 2.5 seconds and exits at 7.0 seconds, moving up and to the left.",
    "What does the anomalous object look like? How does it move? When does it happen?",
    "a surveillance clip where a person walking occurs",
    "a surveillance clip where a person running does not occur",
    "people walking, standing, sitting, talking, loitering, throwing, jumping, falling, chasing",
    "black white grey green yellow orange purple brown pink small large slow fast",
    "top bottom left right center upper lower middle corner entrance exit",
    "frame second seconds object objects vehicle truck van motorcycle wheelchair dog",
)


@dataclass
class TinyModelConfig:
    """Widths and depths of a tiny Qwen2.5-VL (defaults: the fast test model)."""

    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 256
    vision_hidden: int = 64
    vision_depth: int = 4
    vision_heads: int = 4
    vision_intermediate: int = 128
    # 56 px = 4x4 patches = 2x2 merge units per window: small frames still span several windows,
    # so the window reorder is exercised (the real model uses 112).
    window_size: int = 56
    fullatt_block_indexes: list[int] | None = None  # default: every quarter of the depth
    tokens_per_second: int = 2
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 4096
    tokenizer_vocab_size: int = 512
    tie_word_embeddings: bool = False
    # processor pixel budget (sides are multiples of 28 in between)
    min_pixels: int = 56 * 56
    max_pixels: int = 448 * 448

    def resolved_fullatt(self) -> list[int]:
        if self.fullatt_block_indexes is not None:
            return list(self.fullatt_block_indexes)
        step = max(1, self.vision_depth // 4)
        return [i for i in range(step - 1, self.vision_depth, step)]

    def validate(self) -> None:
        head_dim = self.text_hidden // self.text_heads
        if self.text_hidden % self.text_heads or head_dim % 2:
            raise ConfigError(f"text_hidden {self.text_hidden} must split into {self.text_heads} even-sized heads")
        if self.text_heads % self.text_kv_heads:
            raise ConfigError("text_heads must be a multiple of text_kv_heads")
        if self.vision_hidden % self.vision_heads or (self.vision_hidden // self.vision_heads) % 4:
            raise ConfigError("vision_hidden / vision_heads must be an integer divisible by 4")
        if self.window_size % 28:
            raise ConfigError(f"window_size {self.window_size} must be a multiple of 28")
        if any(not 0 <= i < self.vision_depth for i in self.resolved_fullatt()):
            raise ConfigError(f"fullatt_block_indexes must lie in [0, {self.vision_depth})")


FAST = TinyModelConfig()
# Same widths, a 32-block vision tower: the paper's tap indices (1, 8, 16, 32) exist.
DEEP_VISION = TinyModelConfig(vision_hidden=32, vision_heads=2, vision_intermediate=64, vision_depth=32)


def mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (t, h, w) in Qwen2.5-VL's 1:1.5:1.5 ratio (16/24/24 at 128)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 512):
    """Train a byte-level BPE on ``corpus`` locally and wrap it as a Qwen2 tokenizer with Qwen's special tokens.

    The pre-tokenizer is the one Qwen2Tokenizer installs (Qwen's split regex, then byte-level), so the
    merges learnt here apply unchanged inside the transformers tokenizer.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    texts = list(corpus) if corpus is not None else list(DEFAULT_CORPUS)
    if not texts:
        raise ConfigError("the tokenizer corpus is empty: pass at least one text")
    # Train with a plain byte-level pre-tokenizer to learn merges; Qwen2Tokenizer then applies its own
    # regex split + byte-level mapping, which yields the same byte alphabet.
    proto = Qwen2Tokenizer(vocab={"<|endoftext|>": 0}, merges=[])
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = proto.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size, 257),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    vocab = dict(sorted(trained["vocab"].items(), key=lambda kv: kv[1]))
    merges_raw = trained["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges_raw]
    next_id = len(vocab)
    for tok in QWEN_SPECIAL_TOKENS:
        vocab[tok] = next_id
        next_id += 1
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer, min_pixels: int = 56 * 56, max_pixels: int = 448 * 448):
    """A Qwen2_5_VLProcessor with explicit pixel budgets (the defaults upscale small frames)."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=dict(size)),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(
            size=dict(size), do_sample_frames=False, cap_pixels_per_frame=False
        ),
        chat_template=CHAT_TEMPLATE,
    )


def build_config(tokenizer, cfg: TinyModelConfig = FAST):
    """The transformers Qwen2_5_VLConfig of a tiny model whose vocabulary is ``tokenizer``'s."""
    from transformers import Qwen2_5_VLConfig

    cfg.validate()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    head_dim = cfg.text_hidden // cfg.text_heads
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": cfg.text_hidden,
        "intermediate_size": cfg.text_intermediate,
        "num_hidden_layers": cfg.text_layers,
        "num_attention_heads": cfg.text_heads,
        "num_key_value_heads": cfg.text_kv_heads,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": cfg.rope_theta,
            "mrope_section": mrope_section(head_dim),
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": cfg.vision_depth,
        "hidden_size": cfg.vision_hidden,
        "intermediate_size": cfg.vision_intermediate,
        "num_heads": cfg.vision_heads,
        "out_hidden_size": cfg.text_hidden,
        "window_size": cfg.window_size,
        "fullatt_block_indexes": cfg.resolved_fullatt(),
        "tokens_per_second": cfg.tokens_per_second,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "spatial_merge_size": 2,
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=cfg.tie_word_embeddings,
    )


def build_tiny(
    cfg: TinyModelConfig | None = None,
    corpus: Iterable[str] | None = None,
    seed: int = 0,
    save_dir: str | Path | None = None,
):
    """Build a tiny random Qwen2.5-VL and its processor offline: returns ``(model, processor)``.

    With ``save_dir`` both are also written there (``save_pretrained``), loadable back by
    ``AutoModelForImageTextToText`` / ``AutoProcessor`` or ``Backbone.load``.
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    cfg = cfg or FAST
    tokenizer = build_tokenizer(corpus, vocab_size=cfg.tokenizer_vocab_size)
    processor = build_processor(tokenizer, cfg.min_pixels, cfg.max_pixels)
    config = build_config(tokenizer, cfg)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).float().eval()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config = GenerationConfig(
        eos_token_id=[im_end, pad], pad_token_id=pad, do_sample=False, max_new_tokens=64
    )
    if save_dir is not None:
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(save_dir)
        processor.save_pretrained(save_dir)
        logger.info("saved tiny model to %s", save_dir)
    return model, processor
