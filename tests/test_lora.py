"""Stage-2 LoRA: where the adapters go, what trains, merging into the base weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvad_chat.backbone import Backbone
from tvad_chat.errors import ConfigError
from tvad_chat.lora import LoraSettings, apply_lora, lora_parameters, merge_lora


def _clip(bb: Backbone, n_prompt: int = 3):
    fr = np.random.default_rng(0).integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)
    vision = bb.encode_video(fr, fps=4.0)
    dialogue = [{"role": "user", "content": "Is there an anomaly?"}, {"role": "assistant", "content": "Yes."}]
    inputs = bb.build_inputs(vision, dialogue, num_prompt_tokens=n_prompt, add_generation_prompt=False)
    return vision, inputs


def _step(bb: Backbone, vision, inputs, prompt, lr: float = 0.05) -> None:
    bb.model.train()
    loss = bb.forward(inputs, vision, prompt, labels=inputs.input_ids).loss
    loss.backward()
    with torch.no_grad():
        for p in lora_parameters(bb):
            p -= lr * p.grad
            p.grad = None
    bb.model.eval()


@pytest.fixture()
def bb() -> Backbone:
    return Backbone.from_tiny(seed=7)


def _lora_layers(model) -> list[str]:
    return sorted(n for n, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A))


def test_adapters_only_on_language_model_q_v(bb):
    apply_lora(bb)
    names = _lora_layers(bb.model)
    layers = bb.model.config.text_config.num_hidden_layers
    assert len(names) == 2 * layers
    assert all(".language_model.layers." in n and n.endswith(("self_attn.q_proj", "self_attn.v_proj")) for n in names)
    q = bb.model.model.language_model.layers[0].self_attn.q_proj
    assert q.r["default"] == 16 and q.scaling["default"] == pytest.approx(2.0)
    assert q.lora_dropout["default"].p == pytest.approx(0.05)
    with pytest.raises(ConfigError):
        apply_lora(bb)


def test_last_layers_only(bb):
    apply_lora(bb, LoraSettings(last_layers=2))
    names = _lora_layers(bb.model)
    layers = bb.model.config.text_config.num_hidden_layers
    assert {int(n.split(".layers.")[1].split(".")[0]) for n in names} == {layers - 2, layers - 1}
    with pytest.raises(ConfigError):
        LoraSettings(last_layers=layers + 1).validate(layers)


def test_gradients_reach_lora_and_new_token_rows_only(bb):
    apply_lora(bb)
    vision, inputs = _clip(bb)
    prompt = torch.randn(3, bb.text_dim, requires_grad=True)
    _step(bb, vision, inputs, prompt)  # B matrices leave zero, so A gets gradients on the next step
    bb.model.train()
    bb.forward(inputs, vision, prompt, labels=inputs.input_ids).loss.backward()
    trainable = {n: p for n, p in bb.peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())
    delta = [p for n, p in trainable.items() if "trainable_tokens_delta" in n]
    assert len(delta) == 1 and delta[0].shape == (3, bb.text_dim)  # exactly the three new rows
    frozen_with_grad = [n for n, p in bb.peft_model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_with_grad == []
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0


def test_merge_keeps_outputs_and_changes_only_new_rows(bb, tmp_path):
    table_before = bb.model.get_input_embeddings().weight.detach().clone()
    apply_lora(bb)
    vision, inputs = _clip(bb)
    prompt = torch.randn(3, bb.text_dim)
    for _ in range(2):
        _step(bb, vision, inputs, prompt)
    with torch.no_grad():
        adapted = bb.forward(inputs, vision, prompt).logits
    with pytest.raises(ConfigError):
        bb.save_pretrained(tmp_path / "unmerged")
    merge_lora(bb)
    assert _lora_layers(bb.model) == [] and bb.peft_model is None
    with torch.no_grad():
        merged = bb.forward(inputs, vision, prompt).logits
    assert torch.allclose(adapted, merged, atol=1e-4)
    table = bb.model.get_input_embeddings().weight.detach()
    changed = (table != table_before).any(-1).nonzero().flatten().tolist()
    # the prompt block's start/end rows are used by the sequence; the pad rows are replaced by P_An
    assert set(changed) <= set(bb.anomaly_token_ids) and changed
    bb.save_pretrained(tmp_path / "merged")
    reloaded = Backbone.load(tmp_path / "merged", device="cpu")
    with torch.no_grad():
        assert torch.allclose(reloaded.forward(inputs, vision, prompt).logits, merged, atol=1e-5)


def test_adapters_follow_the_model_mode(bb):
    """An eval-mode model stays deterministic after apply_lora (no adapter dropout at inference)."""
    bb.model.eval()
    apply_lora(bb, LoraSettings(dropout=0.5))
    assert not any(m.training for m in bb.model.modules())
    with torch.no_grad():  # non-zero adapters, so dropout on their inputs would change the output
        for p in lora_parameters(bb):
            p.normal_(0, 0.5)
    vision, inputs = _clip(bb)
    prompt = torch.randn(3, bb.text_dim)
    with torch.no_grad():
        first = bb.forward(inputs, vision, prompt).logits
        assert torch.equal(first, bb.forward(inputs, vision, prompt).logits)
    bb.model.train()
    with torch.no_grad():
        assert not torch.equal(first, bb.forward(inputs, vision, prompt).logits)  # training mode: dropout is on
