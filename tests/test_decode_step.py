"""tvad_chat.decode_step: the lean one-token step gives the generic text-model forward's logits and cache, the
decode loop with it gives transformers' generate tokens (plain, cached, follow-up, LoRA, 4-bit), and every case
it cannot handle falls back to the generic forward."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, Qwen2_5_VLForConditionalGeneration
from transformers.cache_utils import DynamicSlidingWindowLayer, StaticLayer

from tests.test_backbone import _hf_answer, frames, scramble
from tvad_chat import decode_step as ds
from tvad_chat.backbone import Backbone
from tvad_chat.errors import ConfigError
from tvad_chat.kv_cache import PreallocatedCache, empty_cache, preallocated_copy
from tvad_chat.tiny import build_config, build_processor, build_tokenizer

QUESTION = [{"role": "user", "content": "Is there an anomaly?"}]
STEP_TOKENS = [5, 77, 300, 12, 9, 140, 5, 41]  # fed back one at a time (any ids of the tiny vocabulary)


def _scrambled(seed: int = 0) -> Backbone:
    b = Backbone.from_tiny(seed=seed)
    scramble(b.model)
    return b


@pytest.fixture(scope="module")
def bb() -> Backbone:
    return _scrambled()


@pytest.fixture(scope="module")
def clip_vision(bb):
    return bb.encode_video(frames(8, 112, 168), fps=4.0, tap_layers=(0,))


@pytest.fixture()
def lean_calls(monkeypatch) -> list[int]:
    """Counts the decode loop's calls of the lean step (one entry per decoded token that used it)."""
    calls: list[int] = []
    real = ds.decode_step

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(ds, "decode_step", spy)
    return calls


def _transformers_copy(cache) -> DynamicCache:
    """transformers' own concatenating DynamicCache holding the same keys and values."""
    other = DynamicCache()
    for i, layer in enumerate(cache.layers):
        other.update(layer.keys.clone(), layer.values.clone(), i)
    return other


def _compare_steps(b: Backbone, vision, prompt=None, copy=preallocated_copy, atol=1e-5) -> None:
    """Prefix + question through the generic forward into two equal caches, then one-token steps: generic
    into one, lean into the other; logits and caches must agree at every step."""
    n_prompt = 0 if prompt is None else prompt.shape[0]
    inp = b.build_inputs(vision, QUESTION, num_prompt_tokens=n_prompt)
    clip = b.prefill(inp, vision, prompt)
    n = clip.prefix.ids.shape[1]
    generic, lean = copy(clip.prefix.cache, n), copy(clip.prefix.cache, n)
    deltas = clip.prefix.rope_deltas
    text_model = b.model.model.language_model
    embed = b._embed_tokens()
    length = inp.input_ids.shape[1]
    with torch.inference_mode():
        question = embed(inp.input_ids[:, n:])
        positions = b._text_positions(n, length, deltas)
        assert torch.equal(b._next_logits(question, positions, generic), b._next_logits(question, positions, lean))
        assert ds.unsupported_reason(text_model, lean) is None
        previous = None
        for i, token in enumerate(STEP_TOKENS):
            e = embed(torch.tensor([[token]]))
            pos = b._text_positions(length + i, length + i + 1, deltas)
            want = b._next_logits(e, pos, generic)
            got = b._next_logits(e, pos, lean, lean=True)
            assert torch.allclose(got, want, atol=atol, rtol=1e-5), f"step {i}: {(got - want).abs().max()}"
            assert previous is None or not torch.allclose(got, previous, atol=1e-2)  # the steps really differ
            previous = got
    assert generic.get_seq_length() == lean.get_seq_length() == length + len(STEP_TOKENS)
    for g, m in zip(generic.layers, lean.layers):
        assert torch.allclose(g.keys, m.keys, atol=atol) and torch.allclose(g.values, m.values, atol=atol)


@pytest.mark.parametrize("copy", [preallocated_copy, lambda cache, n: _transformers_copy(cache)],
                         ids=["preallocated", "transformers-dynamic"])
def test_lean_step_equals_the_generic_forward_after_a_video_prefix(bb, clip_vision, copy):
    prompt = torch.randn(6, bb.text_dim, generator=torch.Generator().manual_seed(3))
    _compare_steps(bb, clip_vision, prompt, copy=copy)


def test_lean_step_equals_the_generic_forward_with_eager_attention():
    b = _scrambled(seed=4)
    b.model.set_attn_implementation("eager")
    assert b.model.model.language_model.config._attn_implementation == "eager"
    _compare_steps(b, b.encode_video(frames(4, 56, 84), fps=4.0, tap_layers=(0,)))


def test_decode_step_takes_one_token_of_one_sequence(bb, clip_vision):
    inp = bb.build_inputs(clip_vision, QUESTION)
    clip = bb.prefill(inp, clip_vision)
    cache = preallocated_copy(clip.prefix.cache, clip.prefix.ids.shape[1])
    text_model = bb.model.model.language_model
    two = bb._embed_tokens()(torch.tensor([[5, 6]]))
    with pytest.raises(ConfigError, match="one token"):
        ds.decode_step(text_model, two, bb._text_positions(0, 2, clip.prefix.rope_deltas), cache)
    with pytest.raises(ConfigError, match="rotary positions"):
        ds.decode_step(text_model, two[:, :1], torch.zeros(1, 1, dtype=torch.long), cache)


def test_greedy_answers_match_transformers_generate_over_40_tokens(bb, clip_vision, lean_calls):
    """New clip, cached first answer and cached follow-up, 40 tokens each, with the lean steps in use."""
    prompt = torch.randn(6, bb.text_dim, generator=torch.Generator().manual_seed(2))
    inp = bb.build_inputs(clip_vision, QUESTION, num_prompt_tokens=6)
    clip = bb.prefill(inp, clip_vision, prompt)
    n = 40
    ref = _hf_answer(bb, inp, clip_vision, prompt, max_new_tokens=n, min_new_tokens=n)
    assert len(ref) == n and len(set(ref)) > 8
    assert bb.generate(inp, clip_vision, prompt, max_new_tokens=n, min_new_tokens=n).token_ids == ref
    assert len(lean_calls) == n - 1  # every step after the prompt took the lean path
    first = bb.generate(inp, clip_cache=clip, max_new_tokens=n, min_new_tokens=n)
    assert first.token_ids == ref and len(lean_calls) == 2 * (n - 1)
    dialogue = QUESTION + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Where?"}]
    inp2 = bb.build_inputs(clip_vision, dialogue, num_prompt_tokens=6)
    ref_follow = _hf_answer(bb, inp2, clip_cache=clip, max_new_tokens=n, min_new_tokens=n)
    follow = bb.generate(inp2, clip_cache=clip, max_new_tokens=n, min_new_tokens=n)
    assert follow.token_ids == ref_follow != ref
    assert follow.new_tokens_processed < inp2.input_ids.shape[1] - inp2.prefix_len  # continued the first answer
    assert len(lean_calls) == 3 * (n - 1)


def test_sampling_penalty_stop_and_stream_are_the_same_on_both_paths(bb, clip_vision, lean_calls, monkeypatch):
    """The decode options act on the logits the same way whichever path produced them."""
    prompt = torch.randn(6, bb.text_dim, generator=torch.Generator().manual_seed(5))
    inp = bb.build_inputs(clip_vision, QUESTION, num_prompt_tokens=6)
    clip = bb.prefill(inp, clip_vision, prompt)
    settings = [dict(max_new_tokens=24), dict(max_new_tokens=24, repetition_penalty=0.3),
                dict(max_new_tokens=24, do_sample=True, temperature=3.0, top_k=50, top_p=0.95, seed=7)]

    def answers():
        out = []
        for options in settings:
            streamed: list[str] = []
            clip.latest = None
            result = bb.generate(inp, clip_cache=clip, stream=streamed.append, **options)
            out.append((result.token_ids, "".join(streamed) == result.text, result.state.ids.tolist()))
        return out

    lean = answers()
    assert len(lean_calls) > 0
    used = len(lean_calls)
    monkeypatch.setattr(ds, "unsupported_reason", lambda *args: "forced fallback")
    generic = answers()
    assert len(lean_calls) == used  # the fallback never called the lean step
    assert lean == generic
    assert all(streamed_ok for _, streamed_ok, _ in lean)
    assert len({tuple(tokens) for tokens, _, _ in lean}) == 3  # the three settings give three answers


def test_lora_before_merging(clip_vision, lean_calls):
    """peft wraps q_proj/v_proj in place: the lean step calls the wrapped modules, adapters included."""
    from tvad_chat.lora import apply_lora, merge_lora

    b = _scrambled(seed=0)
    prompt = torch.randn(6, b.text_dim, generator=torch.Generator().manual_seed(2))
    inp = b.build_inputs(clip_vision, QUESTION, num_prompt_tokens=6)
    n = 32
    plain = b.generate(inp, clip_vision, prompt, max_new_tokens=n, min_new_tokens=n).token_ids
    peft_model = apply_lora(b)
    b.model.eval()  # peft adds its modules in training mode (LoRA dropout); inference runs them in eval
    with torch.no_grad():  # peft starts B at zero (a no-op adapter): make the adapters change the model
        g = torch.Generator().manual_seed(9)
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    assert hasattr(b.model.model.language_model.layers[0].self_attn.q_proj, "lora_A")
    assert ds.unsupported_reason(b.model.model.language_model) is None
    _compare_steps(b, clip_vision, prompt)
    calls = len(lean_calls)
    with_lora = b.generate(inp, clip_vision, prompt, max_new_tokens=n, min_new_tokens=n).token_ids
    assert len(lean_calls) == calls + n - 1
    assert with_lora == _hf_answer(b, inp, clip_vision, prompt, max_new_tokens=n, min_new_tokens=n)
    assert with_lora != plain  # the adapters act on the lean path
    clip = b.prefill(inp, clip_vision, prompt)
    assert b.generate(inp, clip_cache=clip, max_new_tokens=n, min_new_tokens=n).token_ids == with_lora
    merge_lora(b)
    assert not hasattr(b.model.model.language_model.layers[0].self_attn.q_proj, "lora_A")
    assert b.generate(inp, clip_vision, prompt, max_new_tokens=n, min_new_tokens=n).token_ids == with_lora


def test_4bit_language_model(tmp_path, lean_calls):
    """bitsandbytes Linear4bit projections are called as modules: the lean step gives the generic logits."""
    import bitsandbytes as bnb

    from tvad_chat.tiny import build_tiny

    model, processor = build_tiny(seed=5)
    scramble(model)
    Backbone(model, processor).save_pretrained(tmp_path / "tiny")
    q = Backbone.load(tmp_path / "tiny", device="cpu", load_in_4bit=True)
    assert isinstance(q.model.model.language_model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert ds.unsupported_reason(q.model.model.language_model) is None
    vision = q.encode_video(frames(4, 56, 84), fps=4.0, tap_layers=(0,))
    _compare_steps(q, vision)
    inp = q.build_inputs(vision, QUESTION)
    n = 16
    assert q.generate(inp, vision, max_new_tokens=n, min_new_tokens=n).token_ids == \
        _hf_answer(q, inp, vision, max_new_tokens=n, min_new_tokens=n)
    assert len(lean_calls) == len(STEP_TOKENS) + n - 1  # the compared steps, then the answer's


def test_refusals_fall_back_to_the_generic_forward(bb, clip_vision, lean_calls):
    text_model = bb.model.model.language_model
    assert ds.unsupported_reason(text_model) is None
    prompt = torch.randn(6, bb.text_dim, generator=torch.Generator().manual_seed(2))
    inp = bb.build_inputs(clip_vision, QUESTION, num_prompt_tokens=6)
    n = 12
    lean = bb.generate(inp, clip_vision, prompt, max_new_tokens=n, min_new_tokens=n).token_ids
    assert len(lean_calls) == n - 1
    # A forward hook on a decoder layer: the lean step would skip it, so the whole answer runs generically.
    seen: list[int] = []
    handle = text_model.layers[1].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    try:
        assert "hooks" in ds.unsupported_reason(text_model)
        hooked = bb.generate(inp, clip_vision, prompt, max_new_tokens=n, min_new_tokens=n).token_ids
    finally:
        handle.remove()
    assert hooked == lean and len(lean_calls) == n - 1  # no lean call for the hooked answer
    assert seen == [inp.input_ids.shape[1]] + [1] * (n - 1)  # the hook saw the prompt and every decode step
    assert ds.unsupported_reason(text_model) is None
    # Training mode (dropout), attention implementations other than sdpa/eager.
    text_model.train()
    try:
        assert "training" in ds.unsupported_reason(text_model)
    finally:
        text_model.eval()
    config = text_model.config
    old = config._attn_implementation
    config._attn_implementation = "flex_attention"
    try:
        assert "flex_attention" in ds.unsupported_reason(text_model)
    finally:
        config._attn_implementation = old
    # Caches whose layers do not return exactly the cached tokens, or hold a batch, or are not filled yet.
    clip = bb.prefill(inp, clip_vision, prompt)
    good = preallocated_copy(clip.prefix.cache, clip.prefix.ids.shape[1])
    assert ds.unsupported_reason(text_model, good) is None
    assert "every layer" in ds.unsupported_reason(text_model, PreallocatedCache())
    batch = DynamicCache()
    for i, layer in enumerate(good.layers):
        batch.update(layer.keys.expand(2, -1, -1, -1).clone(), layer.values.expand(2, -1, -1, -1).clone(), i)
    assert "batch of 2" in ds.unsupported_reason(text_model, batch)
    static = DynamicCache()
    static.layers[0:0] = [StaticLayer(max_cache_len=4096) for _ in good.layers]
    for i, layer in enumerate(good.layers):
        static.layers[i].update(layer.keys.clone(), layer.values.clone())
    assert "StaticLayer" in ds.unsupported_reason(text_model, static)


def test_sliding_window_model_is_refused_and_answers_like_transformers(lean_calls):
    """A model with sliding-window layers: the lean step would attend past the window, so it is not used."""
    tok = build_tokenizer()
    cfg = build_config(tok)
    text = cfg.text_config
    text.use_sliding_window, text.sliding_window = True, 16
    text.layer_types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    torch.manual_seed(0)
    b = Backbone(Qwen2_5_VLForConditionalGeneration(cfg).eval(), build_processor(tok))
    scramble(b.model)
    text_model = b.model.model.language_model
    assert text_model.layers[1].self_attn.sliding_window == 16
    assert "sliding-window" in ds.unsupported_reason(text_model)
    cache = empty_cache(b.model.config)
    assert any(isinstance(layer, DynamicSlidingWindowLayer) for layer in cache.layers)
    vision = b.encode_video(frames(4, 56, 84), fps=4.0, tap_layers=(0,))
    inp = b.build_inputs(vision, QUESTION)
    assert inp.input_ids.shape[1] > 16  # the window really cuts the context
    n = 12
    assert b.generate(inp, vision, max_new_tokens=n, min_new_tokens=n).token_ids == \
        _hf_answer(b, inp, vision, max_new_tokens=n, min_new_tokens=n)
    assert lean_calls == []
