"""AHD and RAE: the paper's shapes and maths, training signal, and safe save/load."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from heads.ahd import AHDConfig, AnomalyHeatmapDecoder, masks_to_patch_grid
from heads.rae import RAEConfig, RegionAwareAnomalyEncoder
from tvad_chat.errors import CheckpointError, ConfigError


@pytest.fixture(autouse=True)
def _one_thread():
    """The heads are tiny here: one thread is faster and does not fight other processes for the 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _ahd(taps=(1, 8, 16, 32)) -> AnomalyHeatmapDecoder:
    torch.manual_seed(0)
    return AnomalyHeatmapDecoder(AHDConfig(vision_dim=16, text_dim=24, tap_layers=list(taps)))


def test_ahd_shapes_and_probabilities() -> None:
    ahd = _ahd()
    grids = [torch.randn(4, 6, 10, 16) for _ in range(4)]
    out = ahd(grids, torch.randn(2, 24))
    assert out.class_logits.shape == (4, 2, 6, 10)
    assert out.heatmap.shape == (4, 6, 10)
    torch.testing.assert_close(out.class_probs.sum(1), torch.ones(4, 6, 10))
    assert torch.all((out.heatmap >= 0) & (out.heatmap <= 1))
    batched = ahd([g[None].expand(3, -1, -1, -1, -1) for g in grids], torch.randn(2, 24))
    assert batched.heatmap.shape == (3, 4, 6, 10)


def test_ahd_equals_hand_computed_fusion() -> None:
    ahd = _ahd(taps=(0, 2))
    with torch.no_grad():
        ahd.layer_weight_logits.copy_(torch.tensor([0.3, -0.4]))
    grids = [torch.randn(2, 3, 4, 16) for _ in range(2)]
    classes = torch.randn(2, 24)
    out = ahd(grids, classes)
    w = torch.softmax(torch.tensor([0.3, -0.4]), 0)
    expected = 0
    for i, grid in enumerate(grids):
        feats = F.normalize(ahd.projections[i](grid), dim=-1)
        cos = feats @ F.normalize(classes, dim=-1).T  # (T', H', W', 2)
        expected = expected + w[i] * ahd.logit_scale * cos.permute(0, 3, 1, 2)
    torch.testing.assert_close(out.class_logits, expected)
    torch.testing.assert_close(out.heatmap, expected.softmax(1)[:, 1])


def test_ahd_rejects_wrong_inputs() -> None:
    ahd = _ahd()
    with pytest.raises(ConfigError):
        ahd([torch.randn(2, 3, 4, 16)], torch.randn(2, 24))
    with pytest.raises(ConfigError):
        ahd([torch.randn(2, 3, 4, 16)] * 4, torch.randn(3, 24))


def test_ahd_loss_learns_a_mask() -> None:
    ahd = _ahd(taps=(1,))
    torch.manual_seed(1)
    grid = torch.randn(2, 4, 4, 16)
    masks = torch.zeros(2, 4, 4, dtype=torch.long)
    masks[:, 1:3, 1:3] = 1
    grid[masks.bool()] += 2.0  # anomalous patches look different
    classes = torch.randn(2, 24)
    opt = torch.optim.Adam(ahd.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = ahd.loss(ahd([grid], classes), masks)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    heat = ahd([grid], classes).heatmap
    assert heat[masks.bool()].min() > 0.5 > heat[~masks.bool()].max()


def test_masks_to_patch_grid_or_merges_frame_pairs() -> None:
    masks = torch.zeros(5, 28, 56, dtype=torch.bool)
    masks[1, 0:14, 0:14] = True  # frame 1 fills patch (0, 0): temporal patch 0
    masks[4, 20:22, 40:42] = True  # 4 of 196 pixels of patch (1, 2): below 10%, not anomalous
    grid = masks_to_patch_grid(masks, (2, 4))
    assert grid.shape == (3, 2, 4)
    assert grid[0, 0, 0] == 1 and grid.sum() == 1
    masks[4, 14:28, 28:42] = True
    assert masks_to_patch_grid(masks, (2, 4))[2, 1, 2] == 1


def test_rae_shapes_and_difference_input() -> None:
    torch.manual_seed(0)
    rae = RegionAwareAnomalyEncoder(RAEConfig(text_dim=24, hidden_channels=8, num_base_prompts=4))
    probs = torch.rand(5, 2, 6, 10)
    prompts = rae(probs)
    assert prompts.shape == (4, 4 + 9 + 1, 24)
    assert rae.num_prompt_tokens(5) == 4 * 14
    # the base prompts are shared, the rest depends only on temporal differences
    torch.testing.assert_close(prompts[:, :4], rae.base_prompts.expand(4, -1, -1))
    torch.testing.assert_close(rae(probs + 0.3), prompts)
    assert rae(torch.rand(1, 2, 6, 10)).shape == (1, 14, 24)
    assert rae(probs[None].expand(2, -1, -1, -1, -1)).shape == (2, 4, 14, 24)


def test_rae_maps_and_difference_sees_a_stationary_anomaly(tmp_path) -> None:
    torch.manual_seed(0)
    paper = RegionAwareAnomalyEncoder(RAEConfig(text_dim=24, hidden_channels=8))
    both = RegionAwareAnomalyEncoder(RAEConfig(text_dim=24, hidden_channels=8, inputs="maps_and_difference"))
    assert both.backbone[0].in_channels == 4 and paper.backbone[0].in_channels == 2
    quiet = torch.zeros(4, 2, 6, 6)
    quiet[:, 0] = 1.0  # every patch normal
    still = quiet.clone()
    still[:, 1, 2:4, 2:4], still[:, 0, 2:4, 2:4] = 1.0, 0.0  # the same anomalous blob in every step
    # the paper's difference input cannot tell a stationary anomaly from an empty scene; the map input can
    torch.testing.assert_close(paper(still), paper(quiet))
    assert (both(still) - both(quiet))[:, 4:].abs().amax() > 1e-3
    torch.testing.assert_close(both(still)[:, :4], both(quiet)[:, :4])  # base prompts stay input-free
    moving = still.clone()
    moving[2:, :, 2:4, 2:4] = quiet[2:, :, 2:4, 2:4]  # the blob disappears: the difference channels see it
    assert (both(moving)[1] - both(still)[1]).abs().amax() > 1e-3
    both.save_pretrained(tmp_path / "rae")
    loaded = RegionAwareAnomalyEncoder.from_pretrained(tmp_path / "rae")
    assert loaded.config.inputs == "maps_and_difference"
    assert torch.equal(loaded(still), both(still))
    with pytest.raises(ConfigError, match="inputs"):
        RAEConfig(text_dim=24, inputs="maps")


def test_gradients_reach_every_head_parameter() -> None:
    ahd = _ahd(taps=(1, 2))
    rae = RegionAwareAnomalyEncoder(RAEConfig(text_dim=24, hidden_channels=8))
    out = ahd([torch.randn(3, 4, 4, 16) for _ in range(2)], torch.randn(2, 24))
    loss = ahd.loss(out, torch.randint(0, 2, (3, 4, 4))) + rae(out.class_probs).pow(2).mean()
    loss.backward()
    for name, param in [*ahd.named_parameters(), *rae.named_parameters()]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_save_load_round_trip_identical(tmp_path) -> None:
    ahd = _ahd()
    rae = RegionAwareAnomalyEncoder(RAEConfig(text_dim=24, hidden_channels=8, region_grid=(2, 3)))
    grids = [torch.randn(3, 4, 4, 16) for _ in range(4)]
    classes = torch.randn(2, 24)
    ahd.save_pretrained(tmp_path / "ahd")
    rae.save_pretrained(tmp_path / "rae")
    assert sorted(p.name for p in (tmp_path / "ahd").iterdir()) == ["config.json", "model.safetensors"]
    ahd2 = AnomalyHeatmapDecoder.from_pretrained(tmp_path / "ahd")
    rae2 = RegionAwareAnomalyEncoder.from_pretrained(tmp_path / "rae")
    out, out2 = ahd(grids, classes), ahd2(grids, classes)
    assert torch.equal(out.class_logits, out2.class_logits)
    assert torch.equal(rae(out.class_probs), rae2(out.class_probs))
    assert rae2.config.region_grid == (2, 3)


def test_loading_bad_checkpoints_raises_our_error(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not a directory"):
        AnomalyHeatmapDecoder.from_pretrained(tmp_path / "missing")
    _ahd().save_pretrained(tmp_path / "ahd")
    with pytest.raises(CheckpointError, match="different head"):
        RegionAwareAnomalyEncoder.from_pretrained(tmp_path / "ahd")
    config = json.loads((tmp_path / "ahd" / "config.json").read_text())
    config["text_dim"] = 32  # weights no longer match
    (tmp_path / "ahd" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match"):
        AnomalyHeatmapDecoder.from_pretrained(tmp_path / "ahd")
    (tmp_path / "ahd" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError):
        AnomalyHeatmapDecoder.from_pretrained(tmp_path / "ahd")
    (tmp_path / "ahd" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        AnomalyHeatmapDecoder.from_pretrained(tmp_path / "ahd")


def _imports(path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def test_heads_do_not_import_transformers() -> None:
    """The import graph of heads/ (read statically; a subprocess import costs seconds) stays torch-only."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    allowed = {"torch", "numpy", "safetensors", "heads", "__future__", "tvad_chat"}
    for path in sorted((root / "heads").glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top in allowed or top in sys.stdlib_module_names, (path.name, name)
            if top == "tvad_chat":
                assert name in ("tvad_chat.errors", "tvad_chat.files"), (path.name, name)
    for path in (root / "tvad_chat" / "__init__.py", root / "tvad_chat" / "errors.py", root / "tvad_chat" / "files.py"):
        assert all(n.split(".")[0] in sys.stdlib_module_names or n == "tvad_chat.errors" for n in _imports(path)), path


def test_masks_to_patch_grid_matches_a_direct_loop() -> None:
    rng = np.random.default_rng(3)
    masks = np.zeros((7, 42, 70), bool)  # 14-pixel cells on a (3, 5) grid, odd frame count
    for t in range(7):
        y, x = rng.integers(0, 35, 2)
        masks[t, y : y + rng.integers(1, 12), x : x + rng.integers(1, 30)] = True
    for min_fraction in (0.0, 0.1, 0.5):
        expected = np.zeros((4, 3, 5), np.int64)
        for t in range(7):
            for i in range(3):
                for j in range(5):
                    cell = masks[t, 14 * i : 14 * (i + 1), 14 * j : 14 * (j + 1)]
                    hit = cell.any() if min_fraction == 0 else cell.mean() >= min_fraction
                    expected[t // 2, i, j] |= int(hit)
        got = masks_to_patch_grid(masks, (3, 5), min_fraction=min_fraction)
        assert got.dtype == torch.long
        np.testing.assert_array_equal(got.numpy(), expected)
    with pytest.raises(ConfigError):
        masks_to_patch_grid(masks[0], (3, 5))


@pytest.mark.shared_data("ucsd_ped2")
def test_masks_to_patch_grid_on_real_ped2_masks() -> None:
    from PIL import Image

    from tests.shared_data import DATA

    folder = DATA / "ucsd_ped2" / "testing" / "masks" / "01"
    masks = np.stack([np.array(Image.open(folder / f"{i:03d}.png")) > 0 for i in range(100, 108)])
    grid = masks_to_patch_grid(masks, (17, 25), min_fraction=0.0)
    assert grid.shape == (4, 17, 25)
    # every anomalous pixel lies in a marked cell (any-pixel rule), and no cell is marked without one
    for t in range(8):
        ys, xs = np.nonzero(masks[t])
        rows = np.floor(ys * 17 / 240).astype(int)
        cols = np.floor(xs * 25 / 360).astype(int)
        assert grid[t // 2, rows, cols].all()
    assert grid.sum() > 0 and grid.float().mean() < 0.2


def test_ahd_batched_equals_per_clip_and_scale_stays_positive() -> None:
    ahd = _ahd(taps=(1, 2))
    grids = [torch.randn(2, 3, 4, 5, 16) for _ in range(2)]
    classes = torch.randn(2, 24)
    batched = ahd(grids, classes).class_logits
    for b in range(2):
        torch.testing.assert_close(batched[b], ahd([g[b] for g in grids], classes).class_logits)
    with torch.no_grad():
        ahd.log_logit_scale.fill_(-50.0)
    assert ahd.logit_scale.item() > 0
    with pytest.raises(ConfigError):
        ahd([torch.randn(3, 4, 5, 16), torch.randn(3, 4, 5, 8)], classes)


def test_rae_checkpoint_with_other_sizes_is_refused(tmp_path) -> None:
    RegionAwareAnomalyEncoder(RAEConfig(text_dim=24, hidden_channels=8)).save_pretrained(tmp_path / "rae")
    config = json.loads((tmp_path / "rae" / "config.json").read_text())
    config["hidden_channels"] = 16
    (tmp_path / "rae" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match"):
        RegionAwareAnomalyEncoder.from_pretrained(tmp_path / "rae")
    (tmp_path / "rae" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        RegionAwareAnomalyEncoder.from_pretrained(tmp_path / "rae")
