"""TVAD pipeline on tiny models: the three variants, one vision pass per clip, cached answers, gradients, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heads.ahd import AHDConfig, AnomalyHeatmapDecoder
from heads.rae import RAEConfig, RegionAwareAnomalyEncoder
from tvad_chat.backbone import Backbone
from tvad_chat.errors import CheckpointError, ConfigError
from tvad_chat.tiny import DEEP_VISION
from tvad_chat.video import Clip


def make_clip(t: int = 8, h: int = 112, w: int = 168, fps: float = 10.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    return Clip(
        frames=frames, timestamps=np.arange(t) / fps, frame_indices=np.arange(t), source=__import__("pathlib").Path("x"),
        source_fps=fps, source_size=(w, h), num_source_frames=t, duration_s=t / fps,
    )


def heads_for(bb: Backbone, taps, with_rae: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    ahd = AnomalyHeatmapDecoder(AHDConfig(vision_dim=bb.vision_dim, text_dim=bb.text_dim, tap_layers=list(taps)))
    rae = RegionAwareAnomalyEncoder(RAEConfig(text_dim=bb.text_dim)) if with_rae else None
    return ahd, rae


@pytest.fixture(scope="module")
def full(bb):
    from tvad_chat.pipeline import TVAD, TVADConfig

    ahd, rae = heads_for(bb, (1, 2, 4))
    return TVAD(bb, ahd=ahd, rae=rae, config=TVADConfig(max_pixels=112 * 168, max_new_tokens=8))


def test_variants_shapes(bb, full):
    from tvad_chat.pipeline import TVAD, TVADConfig

    clip = make_clip()
    cfg = TVADConfig(max_pixels=112 * 168, max_new_tokens=8)
    base = TVAD(bb, config=cfg)
    a0 = base.analyze(clip)
    assert base.variant == "backbone" and a0.heatmaps is None and a0.state.num_prompt_tokens == 0
    ahd_only = TVAD(bb, ahd=full.ahd, config=cfg)
    a1 = ahd_only.analyze(clip)
    assert a1.heatmaps.shape == (4, 8, 12) and a1.state.num_prompt_tokens == 0
    assert a1.heatmaps.min() >= 0 and a1.heatmaps.max() <= 1
    a2 = full.analyze(clip)
    assert full.variant == "ahd+rae"
    np.testing.assert_allclose(a2.heatmaps, a1.heatmaps, atol=1e-6)  # same AHD, same pixels
    assert a2.frame_scores.shape == (8,) and isinstance(a2.judgement, bool)
    assert a2.state.vision.grids == []  # dropped after the heads ran (keep_grids=False)
    k = full.rae.config.num_base_prompts + full.rae.config.region_grid[0] * full.rae.config.region_grid[1] + 1
    assert a2.state.prompt_embeds.shape == (3 * k, bb.text_dim)  # (T'-1) steps x (N_base + 9 + 1) prompts
    ids = a2.state.clip_cache.prefix.ids[0]
    assert int((ids == bb.anomaly_token_ids[1]).sum()) == 3 * k
    with pytest.raises(ConfigError):
        TVAD(bb, rae=full.rae, config=cfg)


def test_followups_reuse_the_clip_and_match_full_reruns(bb, full):
    clip = make_clip(seed=1)
    passes = full.vision_passes
    analysis = full.analyze(clip)
    assert full.vision_passes == passes + 1
    history: list[tuple[str, str]] = []
    streamed: list[str] = []
    previous_len = None
    for question in ("Is there an anomaly?", "What does it look like?", "How does it move?"):
        answer = full.answer(analysis, history, question, stream=streamed.append if not history else None)
        gen = analysis.last_generation
        # reference: the whole conversation from scratch (video tokens + P_An + every turn), no cache
        st = analysis.state
        inputs = bb.build_inputs(st.vision, full.dialogue(history, question), st.num_prompt_tokens,
                                 system_prompt=full._system_prompt())
        rerun = bb.generate(inputs, st.vision, st.prompt_embeds, max_new_tokens=8)
        assert gen.token_ids == rerun.token_ids
        length = inputs.input_ids.shape[1]
        if previous_len is None:
            assert "".join(streamed) == answer
            assert gen.new_tokens_processed == length - inputs.prefix_len  # the prefix came from analyze()
        else:
            # at most the previous answer (re-tokenised from text) and the new turn run; never the prefix
            assert gen.new_tokens_processed <= length - previous_len
        previous_len = length
        history.append((question, answer))
    assert full.vision_passes == passes + 1  # follow-ups never re-ran the vision tower
    with pytest.raises(ConfigError):
        full.answer(analysis, history, "   ")


@pytest.mark.slow
def test_gradients_reach_heads_lora_and_token_rows_only(bb):
    from tvad_chat.lora import apply_lora, merge_lora
    from tvad_chat.pipeline import TVAD, TVADConfig

    local = Backbone.from_tiny(seed=2)
    ahd, rae = heads_for(local, (1, 4))
    model = TVAD(local, ahd=ahd, rae=rae, config=TVADConfig(max_pixels=112 * 168))
    apply_lora(local)
    ahd.train()
    rae.train()
    vision = local.encode_video(model.model_frames(make_clip(t=4)), 10.0, (1, 4))
    out = model.heatmap_outputs(vision, grad=True)
    masks = torch.zeros(out.heatmap.shape)
    masks[:, 2:5, 3:7] = 1
    dialogue = [{"role": "user", "content": "Is there an anomaly?"}, {"role": "assistant", "content": "Yes."}]
    loss = ahd.loss(out, masks) + model.lm_loss(vision, dialogue, class_probs=out.class_probs)
    loss.backward()  # first step: LoRA B is zero, so step once and check the A matrices on the second pass
    groups = {"ahd": list(ahd.parameters()), "rae": list(rae.parameters())}
    for name, params in groups.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name
        assert all(p.grad is not None for p in params if p.requires_grad), name
    trainable = [(n, p) for n, p in local.peft_model.named_parameters() if p.requires_grad]
    assert any("lora_B" in n and p.grad.abs().sum() > 0 for n, p in trainable)
    delta = [p for n, p in trainable if "trainable_tokens_delta" in n]
    assert delta and delta[0].grad[[0, 2]].abs().sum() > 0  # start/end rows; the pad row is replaced by P_An
    frozen = [n for n, p in local.peft_model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen == []
    merge_lora(local)


def test_save_load_round_trip(bb, full, tmp_path):
    from tvad_chat.pipeline import TVAD

    clip = make_clip(seed=3)
    a = full.analyze(clip)
    answer = full.answer(a, [], "Is there an anomaly?")
    full.save_pretrained(tmp_path / "tvad")
    assert (tmp_path / "tvad" / "ahd" / "model.safetensors").is_file()
    assert (tmp_path / "tvad" / "rae" / "config.json").is_file()
    loaded = TVAD.from_pretrained(tmp_path / "tvad", device="cpu")
    assert loaded.variant == "ahd+rae" and loaded.config.max_new_tokens == 8
    b = loaded.analyze(clip)
    np.testing.assert_array_equal(a.heatmaps, b.heatmaps)
    assert torch.equal(a.state.prompt_embeds, b.state.prompt_embeds)
    assert loaded.answer(b, [], "Is there an anomaly?") == answer
    only_backbone = TVAD.from_pretrained(tmp_path / "tvad", device="cpu", use_heads=())
    assert only_backbone.variant == "backbone"
    with pytest.raises(CheckpointError):
        TVAD.from_pretrained(tmp_path / "missing")


def test_mismatched_heads_are_refused(bb):
    from tvad_chat.pipeline import TVAD

    ahd = AnomalyHeatmapDecoder(AHDConfig(vision_dim=bb.vision_dim + 1, text_dim=bb.text_dim, tap_layers=[1]))
    with pytest.raises(CheckpointError):
        TVAD(bb, ahd=ahd)
    ahd = AnomalyHeatmapDecoder(AHDConfig(vision_dim=bb.vision_dim, text_dim=bb.text_dim,
                                          tap_layers=[bb.vision_depth + 1]))
    with pytest.raises(CheckpointError):
        TVAD(bb, ahd=ahd)


def test_deep_tower_with_paper_taps():
    from tvad_chat.pipeline import TVAD, TVADConfig

    deep = Backbone.from_tiny(DEEP_VISION, seed=1)
    ahd, rae = heads_for(deep, (1, 8, 16, 32))
    model = TVAD(deep, ahd=ahd, rae=rae, config=TVADConfig(max_pixels=56 * 84, max_new_tokens=4, keep_grids=True))
    a = model.analyze(make_clip(t=4, h=56, w=84))
    assert a.heatmaps.shape == (2, 4, 6)
    assert [g.shape for g in a.state.vision.grids] == [(2, 4, 6, deep.vision_dim)] * 4
    assert isinstance(model.answer(a, [], "Is there an anomaly?"), str)
    assert model.vision_passes == 1
