"""Backbone + tiny models: taps, un-windowing, E_t, injection, 3D rotary positions, caching, save/load, 4-bit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tvad_chat.backbone import ANOMALY_TOKENS, Backbone
from tvad_chat.errors import CheckpointError, ConfigError
from tvad_chat.tiny import DEEP_VISION, build_config, build_processor, build_tiny, build_tokenizer


@dataclass
class _Prompts:
    normal_texts: list[str]
    abnormal_texts: list[str]


def frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def clip_vision(bb):
    # 112x168: 8x12 patches = 4x6 merge units = 2x3 windows of the tiny tower (window 56 px): non-square,
    # several windows, so the window order differs from the natural order.
    return bb.encode_video(frames(8, 112, 168), fps=4.0, tap_layers=(0, 2, 4))


def test_tokenizer_is_byte_level_with_qwen_specials():
    tok = build_tokenizer(["a tiny corpus about people walking"], vocab_size=300)
    text = "Ünïcode 日本 bicycle!\n  two  spaces"
    assert tok.decode(tok(text)["input_ids"]) == text
    for special in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|video_pad|>", "<|image_pad|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}],
        tokenize=False, add_generation_prompt=True,
    )
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_encode_video_shapes(bb, clip_vision):
    v = clip_vision
    assert v.grid_shape == (4, 8, 12)
    assert [tuple(g.shape) for g in v.grids] == [(4, 8, 12, bb.vision_dim)] * 3
    assert v.video_embeds.shape == (4 * 4 * 6, bb.text_dim)
    assert v.second_per_grid_ts.item() == pytest.approx(0.5)  # 2 frames per temporal patch at 4 fps
    # odd frame count: the processor repeats the last frame, T' = ceil(T / 2)
    odd = bb.encode_video(frames(3, 56, 56), fps=2.0, tap_layers=(1,))
    assert odd.grid_shape == (2, 4, 4) and odd.grids[0].shape == (2, 4, 4, bb.vision_dim)
    with pytest.raises(ConfigError):
        bb.encode_video(frames(2, 56, 56), fps=2.0, tap_layers=(bb.vision_depth + 1,))
    with pytest.raises(ConfigError):
        bb.encode_video(frames(2, 56, 56), fps=0.0)


def test_tap0_grid_equals_patch_embedding_of_the_pixels(bb, clip_vision):
    """Independent reference: normalise the raw frames and apply the Conv3d weights patch by patch."""
    vp = bb.processor.video_processor
    x = frames(8, 112, 168).astype(np.float64) / 255.0
    x = (x - np.array(vp.image_mean)) / np.array(vp.image_std)
    x = torch.from_numpy(x).float().reshape(4, 2, 8, 14, 12, 14, 3)  # (T', tp, gh, ph, gw, pw, C)
    w = bb.visual.patch_embed.proj.weight.detach()  # (D, C, tp, ph, pw)
    ref = torch.einsum("tagphqc,dcapq->tghd", x, w)
    assert torch.allclose(clip_vision.grids[0], ref, atol=1e-4)
    # the block states really were in a different (window) order for this clip
    from transformers.vision_utils import get_vision_window_index

    window_index, _ = get_vision_window_index(clip_vision.video_grid_thw, 2, bb.visual.window_size, 14)
    assert not torch.equal(window_index, torch.arange(len(window_index)))


def test_last_tap_merged_in_natural_order_equals_video_tokens(bb, clip_vision):
    """The model's own merger + reorder on its last block, against our un-windowed grid merged by hand."""
    g = clip_vision.grids[2]  # tap 4 = output of the last block of the tiny tower
    t, h, w, d = g.shape
    units = g.reshape(t, h // 2, 2, w // 2, 2, d).permute(0, 1, 3, 2, 4, 5).reshape(-1, d)
    with torch.no_grad():
        merged = bb.visual.merger(units)
    assert torch.allclose(merged, clip_vision.video_embeds, atol=1e-5)


def test_deep_tower_paper_taps():
    deep = Backbone.from_tiny(DEEP_VISION, seed=1)
    assert deep.vision_depth == 32
    fr = frames(2, 56, 84)
    v = deep.encode_video(fr, fps=2.0, tap_layers=(1, 8, 16, 32))
    assert [tuple(g.shape) for g in v.grids] == [(1, 4, 6, 32)] * 4
    # Hidden states recorded by transformers itself (index i = output of block i-1), un-windowed by us.
    pixels, thw, _ = deep.prepare_video(fr, 2.0)
    with torch.no_grad():
        out = deep.model.model.get_video_features(pixels, thw, output_hidden_states=True, return_dict=True)
    for tap, grid in zip(v.tap_layers, v.grids):
        assert torch.allclose(grid, deep.unwindow(out.hidden_states[tap], thw), atol=1e-6)
    assert torch.allclose(v.video_embeds, torch.cat(list(out.pooler_output)), atol=1e-6)
    assert deep.vision_passes == 1


def test_build_inputs_match_the_processor(bb, clip_vision):
    """Our token layout against Qwen2_5_VLProcessor run on the same text and frames."""
    from transformers.video_utils import VideoMetadata

    inp = bb.build_inputs(clip_vision, [{"role": "user", "content": "Is there an anomaly?"}], num_prompt_tokens=5)
    text = bb.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"},
                                      {"type": "text", "text": bb.placeholder_block(5) + "Is there an anomaly?"}]}],
        tokenize=False, add_generation_prompt=True,
    )
    ref = bb.processor(text=[text], videos=[frames(8, 112, 168)], return_tensors="pt",
                       video_metadata=[VideoMetadata(total_num_frames=8, fps=4.0)])
    assert torch.equal(inp.input_ids, ref["input_ids"])
    assert torch.equal(inp.mm_token_type_ids.long(), ref["mm_token_type_ids"].long())
    assert torch.equal(inp.video_grid_thw, ref["video_grid_thw"])
    assert torch.allclose(inp.second_per_grid_ts.float(), torch.as_tensor(ref["second_per_grid_ts"]).float())
    pixels, _, _ = bb.prepare_video(frames(8, 112, 168), 4.0)
    assert torch.allclose(pixels, ref["pixel_values_videos"])
    # the prefix ends right after the placeholder block, which follows the video block
    ids = inp.input_ids[0].tolist()
    start, pad, end = bb.anomaly_token_ids
    vision_end = bb.tokenizer.convert_tokens_to_ids("<|vision_end|>")
    assert ids[inp.prefix_len - 1] == end and ids[ids.index(start) - 1] == vision_end
    assert ids.count(pad) == 5


def test_class_vectors_are_masked_means(bb):
    prompts = _Prompts(["a normal scene", "people walk on the sidewalk as usual today"],
                       ["a person riding a bicycle", "a fight"])
    e_t = bb.class_vectors(prompts)
    assert e_t.shape == (2, bb.text_dim)
    table = bb.model.get_input_embeddings().weight.detach()

    def ref(texts):
        per = [table[bb.tokenizer(t, add_special_tokens=False)["input_ids"]].mean(0) for t in texts]
        return torch.stack(per).mean(0)

    assert torch.allclose(e_t[0], ref(prompts.normal_texts), atol=1e-6)
    assert torch.allclose(e_t[1], ref(prompts.abnormal_texts), atol=1e-6)


def test_anomaly_tokens_added_once_with_mean_rows():
    model, processor = build_tiny(seed=3)
    n_before = len(processor.tokenizer)
    mean_row = model.get_input_embeddings().weight.detach().mean(0).clone()
    b = Backbone(model, processor)
    assert b.anomaly_token_ids == [n_before, n_before + 1, n_before + 2]
    assert b.tokenizer.convert_ids_to_tokens(b.anomaly_token_ids) == list(ANOMALY_TOKENS)
    emb = b.model.get_input_embeddings().weight
    assert emb.shape[0] == n_before + 3 and b.model.lm_head.weight.shape[0] == n_before + 3
    assert torch.allclose(emb[n_before:], mean_row.expand(3, -1), atol=1e-6)
    assert Backbone(b.model, b.processor).anomaly_token_ids == b.anomaly_token_ids  # idempotent
    assert b.model.get_input_embeddings().weight.shape[0] == n_before + 3
    # spare rows (as in the real 152064-row table): tokens are added without resizing
    from transformers import Qwen2_5_VLForConditionalGeneration

    tok = build_tokenizer()
    cfg = build_config(tok)
    cfg.text_config.vocab_size += 16
    spare = Backbone(Qwen2_5_VLForConditionalGeneration(cfg), build_processor(tok))
    assert spare.model.get_input_embeddings().weight.shape[0] == cfg.text_config.vocab_size
    assert max(spare.anomaly_token_ids) < cfg.text_config.vocab_size


def test_injection_changes_exactly_the_placeholder_rows(bb, clip_vision):
    inp = bb.build_inputs(clip_vision, [{"role": "user", "content": "What happens?"}], num_prompt_tokens=7)
    with torch.no_grad():
        plain = bb.model.get_input_embeddings()(inp.input_ids)
        prompt = torch.randn(7, bb.text_dim)
        injected = bb.inputs_embeds(inp, clip_vision, prompt)
    pad_rows = inp.input_ids[0] == bb.anomaly_token_ids[1]
    video_rows = inp.input_ids[0] == bb.model.config.video_token_id
    changed = (injected[0] != plain[0]).any(-1)
    assert torch.equal(changed, pad_rows | video_rows)
    assert torch.equal(injected[0, pad_rows], prompt)
    assert torch.allclose(injected[0, video_rows], clip_vision.video_embeds)
    with pytest.raises(ConfigError):
        bb.inputs_embeds(inp, clip_vision, torch.randn(6, bb.text_dim))


def _record_positions(bb):
    seen: list[torch.Tensor] = []
    handle = bb.model.model.language_model.rotary_emb.register_forward_hook(
        lambda module, args, out: seen.append(args[1].expand(3, -1, -1).clone())
    )
    return seen, handle


def test_rotary_positions_are_3d_and_equal_get_rope_index(bb, clip_vision):
    """Regression test for the silent 1D fallback (missing mm_token_type_ids)."""
    inp = bb.build_inputs(clip_vision, [{"role": "user", "content": "Is there an anomaly?"}], num_prompt_tokens=4)
    ref, _ = bb.model.model.get_rope_index(inp.input_ids, inp.mm_token_type_ids, video_grid_thw=inp.video_grid_thw,
                                           second_per_grid_ts=inp.second_per_grid_ts)
    video = inp.input_ids[0] == bb.model.config.video_token_id
    assert not torch.equal(ref[0, 0, video], ref[1, 0, video])  # genuinely 3D
    prompt = torch.randn(4, bb.text_dim)
    seen, handle = _record_positions(bb)
    try:
        bb.forward(inp, clip_vision, prompt)  # teacher-forced pass
        cache = bb.prefill(inp, clip_vision, prompt)
        bb.generate(inp, clip_cache=cache, max_new_tokens=3)
        bb.generate(inp, clip_vision, prompt, max_new_tokens=3)
    finally:
        handle.remove()
    n = inp.prefix_len
    assert torch.equal(seen[0], ref)
    assert torch.equal(seen[1], ref[:, :, :n])
    assert torch.equal(seen[2], ref[:, :, n:])  # the question, continuing from the cached prefix
    last = ref[:, :, -1:]
    assert torch.equal(seen[3], last + 1) and torch.equal(seen[4], last + 2)  # decode steps
    assert torch.equal(seen[5], ref)  # uncached generate: full sequence
    # without mm_token_type_ids transformers silently uses 1D positions: the logits differ
    with torch.no_grad():
        embeds = bb.inputs_embeds(inp, clip_vision, prompt)
        good = bb.forward(inp, clip_vision, prompt).logits
        bb.model.model.rope_deltas = None
        bad = bb.model(inputs_embeds=embeds, input_ids=inp.input_ids, video_grid_thw=inp.video_grid_thw).logits
    assert not torch.allclose(good, bad, atol=1e-3)


def test_cached_followups_generate_the_same_tokens_as_full_reruns(bb, clip_vision):
    prompt = torch.randn(6, bb.text_dim, generator=torch.Generator().manual_seed(1))
    dialogue = [{"role": "user", "content": "Is there an anomaly?"}]
    inp = bb.build_inputs(clip_vision, dialogue, num_prompt_tokens=6)
    cache = bb.prefill(inp, clip_vision, prompt)
    streamed: list[str] = []
    first = bb.generate(inp, clip_cache=cache, max_new_tokens=10, stream=streamed.append)
    full = bb.generate(inp, clip_vision, prompt, max_new_tokens=10)
    assert first.token_ids == full.token_ids and len(set(first.token_ids)) > 2
    assert "".join(streamed) == first.text
    assert first.new_tokens_processed == inp.input_ids.shape[1] - inp.prefix_len
    other = bb.generate(inp, clip_vision, torch.randn(6, bb.text_dim), max_new_tokens=10)
    assert other.token_ids != full.token_ids  # the prompt embeddings matter, so equality above is meaningful
    passes = bb.vision_passes
    for question in ("What does it look like?", "Where does it go?"):
        dialogue = dialogue + [{"role": "assistant", "content": first.text}, {"role": "user", "content": question}]
        inp2 = bb.build_inputs(clip_vision, dialogue, num_prompt_tokens=6)
        cached = bb.generate(inp2, clip_cache=cache, max_new_tokens=10)
        rerun = bb.generate(inp2, clip_vision, prompt, max_new_tokens=10)
        assert cached.token_ids == rerun.token_ids
        assert cached.new_tokens_processed < 40 < inp2.input_ids.shape[1]  # only the new turn's tokens
        first = cached
    assert bb.vision_passes == passes


def test_anomaly_placeholders_are_never_generated(bb, clip_vision):
    """The placeholders are suppressed: made the likeliest tokens, the answer is the one without them."""
    inp = bb.build_inputs(clip_vision, [{"role": "user", "content": "Is there an anomaly?"}], num_prompt_tokens=6)
    cache = bb.prefill(inp, clip_vision, torch.randn(6, bb.text_dim, generator=torch.Generator().manual_seed(2)))
    plain = bb.generate(inp, clip_cache=cache, max_new_tokens=12)
    placeholders = list(bb.anomaly_token_ids)

    def favour_placeholders(module, args, logits):
        logits = logits.clone()
        logits[..., placeholders] += 1e4
        return logits

    handle = bb.model.lm_head.register_forward_hook(favour_placeholders)
    try:
        cache.latest = None
        favoured = bb.generate(inp, clip_cache=cache, max_new_tokens=12)
        bb.model.model.rope_deltas = cache.prefix.rope_deltas
        with torch.no_grad():  # transformers' generate without the suppression picks them every time
            raw = bb.model.generate(**inp.model_kwargs(), past_key_values=cache.best(inp.input_ids)[0],
                                    max_new_tokens=12, min_new_tokens=12, do_sample=False)
    finally:
        handle.remove()
    assert set(raw[0, inp.input_ids.shape[1]:].tolist()) <= set(placeholders)
    assert favoured.token_ids == plain.token_ids and not set(favoured.token_ids) & set(placeholders)


def test_repetition_penalty_comes_from_the_generation_config(bb, clip_vision, monkeypatch):
    """Greedy answers inherit the checkpoint's repetition penalty (Qwen2.5-VL-7B-Instruct ships 1.05)."""
    inp = bb.build_inputs(clip_vision, [{"role": "user", "content": "Is there an anomaly?"}], num_prompt_tokens=6)
    cache = bb.prefill(inp, clip_vision, torch.randn(6, bb.text_dim, generator=torch.Generator().manual_seed(2)))
    free = bb.generate(inp, clip_cache=cache, max_new_tokens=12).token_ids
    assert len(set(free)) < len(free)  # this answer repeats tokens, so a penalty changes it
    penalised = bb.generate(inp, clip_cache=cache, max_new_tokens=12, repetition_penalty=1.5).token_ids
    assert penalised != free
    monkeypatch.setattr(bb.model.generation_config, "repetition_penalty", 1.5)
    cache.latest = None
    assert bb.generate(inp, clip_cache=cache, max_new_tokens=12).token_ids == penalised
    assert bb.generate(inp, clip_cache=cache, max_new_tokens=12, repetition_penalty=1.0).token_ids == free


def test_decode_stops_on_stop_tokens_after_min_new_tokens(bb, clip_vision, monkeypatch):
    prompt = torch.randn(6, bb.text_dim, generator=torch.Generator().manual_seed(2))
    inp = bb.build_inputs(clip_vision, [{"role": "user", "content": "Is there an anomaly?"}], num_prompt_tokens=6)
    cache = bb.prefill(inp, clip_vision, prompt)
    free = bb.generate(inp, clip_cache=cache, max_new_tokens=12).token_ids
    stop = free[3]
    first_stop = free.index(stop)
    monkeypatch.setattr(bb.model.generation_config, "eos_token_id", [bb.stop_token_ids()[0], stop])
    stopped = bb.generate(inp, clip_cache=cache, max_new_tokens=12)
    assert stopped.token_ids == free[: first_stop + 1]
    assert stopped.state.ids.shape[1] == inp.input_ids.shape[1] + first_stop  # the stop token is never fed back
    # min_new_tokens bars the stop tokens until that many are out (transformers' rule)
    held = bb.generate(inp, clip_cache=cache, max_new_tokens=12, min_new_tokens=first_stop + 2).token_ids
    assert held[: first_stop] == free[: first_stop]  # the same answer until the barred stop token
    assert len(held) > first_stop + 1 and stop not in held[: first_stop + 2]


def test_sampling_options(bb, clip_vision):
    prompt = torch.randn(6, bb.text_dim, generator=torch.Generator().manual_seed(2))
    inp = bb.build_inputs(clip_vision, [{"role": "user", "content": "Is there an anomaly?"}], num_prompt_tokens=6)
    cache = bb.prefill(inp, clip_vision, prompt)
    greedy = bb.generate(inp, clip_cache=cache, max_new_tokens=10).token_ids
    assert bb.generate(inp, clip_cache=cache, max_new_tokens=10, do_sample=True, top_k=1, seed=5).token_ids == greedy
    assert bb.generate(inp, clip_cache=cache, max_new_tokens=10, do_sample=True, top_p=1e-6, seed=5).token_ids == greedy
    global_state = torch.get_rng_state()
    hot = [bb.generate(inp, clip_cache=cache, max_new_tokens=10, do_sample=True, temperature=5.0, seed=s).token_ids
           for s in (1, 1, 2)]
    assert hot[0] == hot[1] and hot[0] != hot[2] and hot[0] != greedy
    assert torch.equal(torch.get_rng_state(), global_state)  # seeded answers leave torch's global generator alone
    with pytest.raises(ConfigError, match="unknown generation options"):
        bb.generate(inp, clip_cache=cache, num_beams=2)
    with pytest.raises(ConfigError):
        bb.generate(inp, clip_cache=cache, max_new_tokens=0)
    with pytest.raises(ConfigError):
        bb.generate(inp, clip_cache=cache, do_sample=True, temperature=0.0)


def test_save_load_round_trip_gives_identical_outputs(bb, clip_vision, tmp_path):
    bb.save_pretrained(tmp_path / "ckpt")
    loaded = Backbone.load(tmp_path / "ckpt", device="cpu")
    assert loaded.anomaly_token_ids == bb.anomaly_token_ids
    assert loaded.model.get_input_embeddings().weight.shape == bb.model.get_input_embeddings().weight.shape
    v2 = loaded.encode_video(frames(8, 112, 168), fps=4.0, tap_layers=(0, 2, 4))
    for a, b in zip(clip_vision.grids, v2.grids):
        assert torch.equal(a, b)
    prompt = torch.randn(3, bb.text_dim)
    dialogue = [{"role": "user", "content": "Is there an anomaly?"}]
    i1 = bb.build_inputs(clip_vision, dialogue, num_prompt_tokens=3)
    i2 = loaded.build_inputs(v2, dialogue, num_prompt_tokens=3)
    assert torch.equal(i1.input_ids, i2.input_ids)
    with torch.no_grad():
        assert torch.equal(bb.forward(i1, clip_vision, prompt).logits, loaded.forward(i2, v2, prompt).logits)
    assert bb.generate(i1, clip_vision, prompt, max_new_tokens=8).token_ids == \
        loaded.generate(i2, v2, prompt, max_new_tokens=8).token_ids


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Backbone.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        Backbone.load(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="offline"):  # a hub id that is not in the local cache
        Backbone.load("tvad-tests/no-such-model")


@pytest.mark.slow
def test_4bit_loading_on_cpu_quantises_only_the_language_model(tmp_path):
    import bitsandbytes as bnb

    model, processor = build_tiny(seed=5, save_dir=tmp_path / "tiny")
    full = Backbone.load(tmp_path / "tiny", device="cpu")
    q = Backbone.load(tmp_path / "tiny", device="cpu", load_in_4bit=True)
    quantised = [n for n, m in q.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    layers = q.model.config.text_config.num_hidden_layers
    assert len(quantised) == 7 * layers and all(".language_model.layers." in n for n in quantised)
    assert not isinstance(q.model.lm_head, bnb.nn.Linear4bit)
    fr = frames(4, 56, 84)
    vf, vq = full.encode_video(fr, 4.0, (0, 4)), q.encode_video(fr, 4.0, (0, 4))
    assert all(torch.equal(a, b) for a, b in zip(vf.grids, vq.grids))  # vision tower untouched
    dialogue = [{"role": "user", "content": "Is there an anomaly?"}]
    inf, inq = full.build_inputs(vf, dialogue), q.build_inputs(vq, dialogue)
    with torch.no_grad():
        lf, lq = full.forward(inf, vf).logits[0, -1], q.forward(inq, vq).logits[0, -1]
    assert not torch.equal(lf, lq)
    assert torch.corrcoef(torch.stack([lf, lq]))[0, 1] > 0.9  # NF4 error is small
    assert len(q.generate(inq, vq, max_new_tokens=4).token_ids) == 4


def test_labels_cover_exactly_the_answers(bb, clip_vision):
    dialogue = [{"role": "user", "content": "Is there an anomaly?"}, {"role": "assistant", "content": "Yes, a cyclist ûé."},
                {"role": "user", "content": "Where?"}, {"role": "assistant", "content": "Left."}]
    inp = bb.build_inputs(clip_vision, dialogue, num_prompt_tokens=2, add_generation_prompt=False, with_labels=True)
    labelled = inp.labels[0] != -100
    assert torch.equal(inp.labels[0, labelled], inp.input_ids[0, labelled])
    assert bb.tokenizer.decode(inp.input_ids[0, labelled]) == "Yes, a cyclist ûé.<|im_end|>Left.<|im_end|>"
    runs = torch.diff(labelled.int()).eq(1).sum()  # two separate answer spans
    assert int(runs) == 2
