"""A lean one-token decode step for Qwen2.5-VL's text model, used by tvad_chat.backbone's decode loop.

On a small model, transformers' text-model forward spends most of a one-token step on generic machinery
(causal-mask construction, output capturing, kwarg deprecation checks, output classes) rather than on the
layers. ``decode_step`` calls the loaded model's own submodules in the order ``Qwen2_5_VLDecoderLayer`` and
``Qwen2_5_VLAttention`` call them (norms, q/k/v/o projections, MLP, final norm, the model's rotary module and
transformers' ``apply_rotary_pos_emb``), appends to the cache through its public ``update`` and attends with
``scaled_dot_product_attention``. Nothing of transformers' modeling code is copied: weights, peft LoRA
adapters (wrapped around q_proj/v_proj in place) and bitsandbytes layers act exactly as in the generic
forward; only the orchestration is ours.

It covers only the case where that orchestration is trivial: one sequence, one new token attending to every
cached position (no mask), full attention in every layer, inference (no dropout), the stock module classes
with no hooks on the modules it bypasses, and a cache whose layers return exactly the stored tokens.
``unsupported_reason`` checks those conditions; in any other case the caller keeps the generic forward.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VLAttention,
    Qwen2_5_VLDecoderLayer,
    Qwen2_5_VLTextModel,
    apply_rotary_pos_emb,
)

from tvad_chat.errors import ConfigError
from tvad_chat.kv_cache import PreallocatedLayer

# Attention implementations whose single-query, unmasked step is plain softmax(q k^T * scaling) v.
_SDPA_EQUIVALENT = ("sdpa", "eager")
# Cache layers whose update returns exactly the cached tokens (static layers return padded buffers that
# need a mask; sliding and quantised layers drop or alter tokens).
_EXACT_LAYERS = (DynamicLayer, PreallocatedLayer)


def _bypass_problem(module: torch.nn.Module, name: str) -> str | None:
    """Why skipping ``module``'s own forward could change the result (hooks, a patched forward), or None."""
    if module._forward_hooks or module._forward_pre_hooks or hasattr(module, "_hf_hook"):
        return f"{name} has forward hooks that the lean step would skip"
    if "forward" in vars(module):
        return f"{name} has a patched forward"
    return None


def unsupported_reason(text_model: torch.nn.Module, cache=None) -> str | None:
    """None when ``decode_step`` gives the generic forward's result for ``text_model`` (and ``cache``), else why not.

    ``text_model`` is the Qwen2.5-VL language model (``model.model.language_model``). ``cache``, when given,
    must already hold the prompt (its layers are created by the first, generic forward).
    """
    if type(text_model) is not Qwen2_5_VLTextModel:
        return f"not a Qwen2_5_VLTextModel ({type(text_model).__name__})"
    if text_model.training:
        return "the text model is in training mode (dropout)"
    config = text_model.config
    if getattr(config, "output_attentions", False):
        return "output_attentions is on"
    problem = _bypass_problem(text_model, "the text model")
    if problem:
        return problem
    for i, layer in enumerate(text_model.layers):
        attn = getattr(layer, "self_attn", None)
        if type(layer) is not Qwen2_5_VLDecoderLayer or type(attn) is not Qwen2_5_VLAttention:
            return f"layer {i} is not a stock Qwen2.5-VL decoder layer"
        problem = _bypass_problem(layer, f"layer {i}") or _bypass_problem(attn, f"layer {i} attention")
        if problem:
            return problem
        if attn.training or layer.training:
            return f"layer {i} is in training mode (dropout)"
        if attn.config._attn_implementation not in _SDPA_EQUIVALENT:
            return f"attention implementation {attn.config._attn_implementation!r} (lean step covers sdpa, eager)"
        if attn.sliding_window is not None or config.layer_types[i] != "full_attention":
            return f"layer {i} uses sliding-window attention"
        if attn.layer_idx != i:
            return f"layer {i} caches under index {attn.layer_idx}"
    if cache is not None:
        if not isinstance(cache, DynamicCache) or getattr(cache, "offloading", False):
            return f"cache type {type(cache).__name__} (lean step covers an in-memory DynamicCache)"
        if len(cache.layers) != len(text_model.layers):
            return "the cache does not hold every layer yet (run the prompt through the generic forward first)"
        for i, cached in enumerate(cache.layers):
            if type(cached) not in _EXACT_LAYERS or not cached.is_initialized:
                return f"cache layer {i} is a {type(cached).__name__}"
            if cached.keys.shape[0] != 1:
                return f"the cache holds a batch of {cached.keys.shape[0]} (lean step covers one sequence)"
    return None


def decode_step(text_model: torch.nn.Module, embeds: Tensor, positions: Tensor, cache) -> Tensor:
    """Run one new token through ``text_model``, appending its keys/values to ``cache``.

    ``embeds`` (1, 1, D) is the token's input embedding, ``positions`` (3, 1, 1) its multimodal rotary
    position (temporal, height, width rows). Returns the final-norm hidden state (1, 1, D), which is the
    generic forward's ``last_hidden_state``. Call only where ``unsupported_reason(text_model, cache)`` is None.
    """
    if embeds.dim() != 3 or embeds.shape[:2] != (1, 1):
        raise ConfigError(f"the lean decode step takes one token of one sequence, got embeds {tuple(embeds.shape)}")
    if tuple(positions.shape) != (3, 1, 1):
        raise ConfigError(f"the lean decode step takes (3, 1, 1) rotary positions, got {tuple(positions.shape)}")
    hidden = embeds
    # One rotary table for all layers, from the model's own module (it applies the mrope sections).
    cos, sin = text_model.rotary_emb(hidden, positions)
    for layer in text_model.layers:
        attn = layer.self_attn
        residual = hidden
        x = layer.input_layernorm(hidden)
        # (1, 1, heads * head_dim) -> (1, heads, 1, head_dim), as the attention module shapes them
        q = attn.q_proj(x).view(1, 1, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(1, 1, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(1, 1, -1, attn.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        keys, values = cache.update(k, v, attn.layer_idx)
        # A single query may see every cached position: no mask. enable_gqa shares each KV head across its
        # query group, as transformers' sdpa path does when there is no mask.
        out = torch.nn.functional.scaled_dot_product_attention(
            q, keys, values, dropout_p=0.0, scale=attn.scaling, enable_gqa=attn.num_key_value_groups > 1)
        hidden = residual + attn.o_proj(out.transpose(1, 2).reshape(1, 1, -1))
        residual = hidden
        hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
    return text_model.norm(hidden)
