"""Heatmap sources: the AHD's maps unchanged and from the one vision pass, a scene profile's maps on the patch
grid, the weighted-mean fusion, and the RAE reading whichever maps the pipeline was given."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datasets_builder.synth.generate import ClipConfig, generate_clip
from datasets_builder.synth.writer import write_clip
from tests.test_pipeline import heads_for, make_clip
from tvad_chat.errors import ConfigError
from tvad_chat.heatmap_sources import AHDSource, FusedSource, HeatmapRequest, ProfileSource, from_abnormal
from tvad_chat.pipeline import TVAD, TVADConfig
from tvad_chat.scene.calibrate import CalibrationConfig, calibrate
from tvad_chat.scene.profile import SceneProfile
from tvad_chat.scene.run import analyze_clip
from tvad_chat.video import load_clip

FPS = 10.0
FRAMES = 32
# the planted object: a red 20 x 40 block moving right 9 pixels a frame (2.25 of its heights a second, about
# three times a SynthCampus walker) along rows 120-159 of the 320 x 192 frames
PLANT_W, PLANT_H, PLANT_Y, PLANT_X0, PLANT_STEP = 20, 40, 120, 8, 9
GRID = (8, 8, 10)  # 16 sampled frames; 24 x 32 pixel cells, so the cell maximum is a plain block max


def planted_x(frame: int) -> int:
    return PLANT_X0 + PLANT_STEP * frame


@pytest.fixture(scope="module")
def full(bb) -> TVAD:
    ahd, rae = heads_for(bb, (1, 2, 4))
    return TVAD(bb, ahd=ahd, rae=rae, config=TVADConfig(max_pixels=112 * 168, max_new_tokens=8, keep_grids=True))


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, Path]:
    """(profile folder, planted clip's frame folder): a profile calibrated on four normal clips of one fixed
    SynthCampus camera, and a fifth normal clip of it with a fast object painted in."""
    root = tmp_path_factory.mktemp("scene")
    cfg = ClipConfig(frames=FRAMES, fps=FPS, fixed_camera=True, effects=False)
    normal = []
    for index in range(4):
        clip = generate_clip(0, "normal_train", index, cfg, scene_name="campus_walkway")
        write_clip(clip, root / f"normal{index}", "frames")
        normal.append(root / f"normal{index}" / "frames")
    frames = generate_clip(0, "normal_train", 50, cfg, scene_name="campus_walkway").frames.copy()
    planted = root / "planted"
    planted.mkdir()
    for f in range(FRAMES):
        frames[f, PLANT_Y:PLANT_Y + PLANT_H, planted_x(f):planted_x(f) + PLANT_W] = (200, 30, 30)
        cv2.imwrite(str(planted / f"{f:06d}.png"), frames[f][..., ::-1])
    profile = calibrate(normal, "synth-walkway", CalibrationConfig(min_seconds=3.0, min_objects=20),
                        folder_fps=FPS)
    profile.save(root / "profile")
    return root / "profile", planted


# --------------------------------------------------------------------------- (a) the AHD


def test_ahd_source_gives_the_ahd_maps_from_the_one_vision_pass(bb, full):
    clip = make_clip(seed=3)
    assert isinstance(full.heatmap_source, AHDSource) and full.heatmap_source.name == "ahd"
    passes = bb.vision_passes
    analysis = full.analyze(clip)
    assert bb.vision_passes == passes + 1
    vision = analysis.state.vision
    # The maps as TVAD computed them before heatmap sources: the AHD on the tapped grids, the model's prompts.
    with torch.no_grad():
        before = full.ahd([g.float() for g in vision.grids], bb.class_vectors(full.prompts))
    assert torch.equal(analysis.state.class_probs, before.class_probs)
    np.testing.assert_array_equal(analysis.heatmaps, before.heatmap.numpy())
    np.testing.assert_array_equal(analysis.frame_scores,
                                  before.heatmap.numpy().reshape(4, -1).max(axis=1).repeat(2))
    again = full.heatmap_source.class_probs(HeatmapRequest(clip, vision.grid_shape, vision))
    assert torch.equal(again, before.class_probs)
    with torch.no_grad():
        assert torch.equal(analysis.state.prompt_embeds, full.rae(before.class_probs).reshape(-1, bb.text_dim))
    assert bb.vision_passes == passes + 1  # the source reused the pipeline's vision pass
    assert analysis.heatmap_source == "ahd"
    with pytest.raises(ConfigError, match="vision pass"):
        full.heatmap_source.class_probs(HeatmapRequest(clip, vision.grid_shape))


# --------------------------------------------------------------------------- (b) a scene profile


@pytest.mark.slow
def test_profile_source_pools_the_profile_heat_onto_the_patch_grid(scene):
    profile_dir, planted = scene
    profile = SceneProfile.load(profile_dir)
    clip = load_clip(planted, num_frames=16, folder_fps=FPS)
    np.testing.assert_array_equal(clip.frame_indices, np.arange(1, FRAMES, 2))
    source = ProfileSource(profile)
    assert source.name == "profile:synth-walkway"
    probs = source.class_probs(HeatmapRequest(clip, GRID)).numpy()
    assert probs.shape == (8, 2, 8, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs[:, 0], 1.0 - probs[:, 1], atol=1e-7)
    # Exactly `tvad analyze --profile`'s heat (the clip starts within the warm-up, so both stream from frame 0):
    # the max over each temporal patch's two sampled frames, then the max of each 24 x 32 pixel cell.
    heat: dict[int, np.ndarray] = {}
    analyze_clip(planted, profile_dir, folder_fps=FPS, heat_sink=lambda index, h: heat.__setitem__(index, h))
    pooled = np.stack([np.maximum(heat[int(a)], heat[int(b)]) for a, b in clip.frame_indices.reshape(8, 2)])
    expected = pooled.reshape(8, 8, 24, 10, 32).max(axis=(2, 4))
    np.testing.assert_allclose(probs[:, 1], expected, atol=1e-6)
    # Highest on the planted object, low away from it (cells not next to the object's cells).
    abnormal = probs[:, 1]
    object_peak = 0.0
    for patch, (a, b) in enumerate(clip.frame_indices.reshape(8, 2)):
        on = np.zeros((8, 10), bool)
        on[PLANT_Y // 24:(PLANT_Y + PLANT_H - 1) // 24 + 1,
           planted_x(a) // 32:(planted_x(b) + PLANT_W - 1) // 32 + 1] = True
        near = cv2.dilate(on.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        object_peak = max(object_peak, float(abnormal[patch][on].max()))
        assert abnormal[patch][~near].mean() < 0.05, patch  # walkers keep their own low heat (max pooling)
    # the clip's hottest cell is on the object, above the threshold's heat (max pooling: undiluted)
    assert object_peak == float(abnormal.max()) and object_peak > 0.5


# --------------------------------------------------------------------------- (c) fusion


class ConstantSource:
    """A hand-made source: the same abnormal maps for every request."""

    def __init__(self, name: str, abnormal: torch.Tensor) -> None:
        self.name = name
        self.abnormal = abnormal
        self.requests: list[HeatmapRequest] = []

    def class_probs(self, request: HeatmapRequest) -> torch.Tensor:
        self.requests.append(request)
        return from_abnormal(self.abnormal)


def test_fused_source_is_the_weighted_mean_of_the_abnormal_channels():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.random((3, 4, 5), dtype=np.float32))
    b = torch.from_numpy(rng.random((3, 4, 5), dtype=np.float32))
    first, second = ConstantSource("ahd", a), ConstantSource("profile:cam", b)
    fused = FusedSource([first, second], [1.0, 3.0])
    assert fused.name == "fused(ahd 1, profile:cam 3)"
    request = HeatmapRequest(make_clip(t=6, h=56, w=70), (3, 4, 5))
    probs = fused.class_probs(request)
    np.testing.assert_allclose(probs[:, 1].numpy(), (a.numpy() + 3 * b.numpy()) / 4, atol=1e-7)
    np.testing.assert_allclose(probs[:, 0].numpy(), 1 - (a.numpy() + 3 * b.numpy()) / 4, atol=1e-7)
    assert first.requests == [request] and second.requests == [request]  # every source answers the same request
    np.testing.assert_allclose(FusedSource([first, second]).class_probs(request)[:, 1].numpy(),
                               (a.numpy() + b.numpy()) / 2, atol=1e-7)  # default: equal weights
    # A zero weight leaves that source out of the mean.
    assert torch.equal(FusedSource([first, second], [0.0, 2.0]).class_probs(request)[:, 1], b)
    for weights in ([1.0], [1.0, -1.0], [0.0, 0.0], [1.0, float("nan")]):
        with pytest.raises(ConfigError):
            FusedSource([first, second], weights)
    with pytest.raises(ConfigError):
        FusedSource([])
    with pytest.raises(ConfigError, match="patch grid"):
        FusedSource([first, ConstantSource("wrong", torch.zeros(3, 4, 6))]).class_probs(request)


# --------------------------------------------------------------------------- (d) the RAE reads the fused maps


def test_rae_and_evidence_read_the_given_source(bb, full):
    clip = make_clip(seed=4)
    grid = (4, 8, 12)
    calm = ConstantSource("calm", torch.full(grid, 0.1))
    hot = torch.full(grid, 0.1)
    hot[2, 3:5, 6:8] = 0.9
    busy = ConstantSource("busy", hot)
    fused = FusedSource([calm, busy], [1.0, 1.0])
    seen: list[torch.Tensor] = []
    hook = full.rae.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        passes = bb.vision_passes
        analysis = full.analyze(clip, heatmap_source=fused)
    finally:
        hook.remove()
    assert bb.vision_passes == passes + 1
    expected = from_abnormal((torch.full(grid, 0.1) + hot) / 2)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0].cpu(), expected, rtol=0, atol=1e-7)  # the RAE read the fused maps
    torch.testing.assert_close(analysis.state.class_probs.cpu(), expected, rtol=0, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(analysis.state.prompt_embeds, full.rae(expected).reshape(-1, bb.text_dim))
    np.testing.assert_allclose(analysis.heatmaps, expected[:, 1].numpy(), atol=1e-7)
    assert analysis.heatmap_source == "fused(calm 1, busy 1)"
    # The evidence reads them too: patch 2 (frames 4 and 5) peaks at (0.1 + 0.9) / 2 = 0.5 -> not abnormal.
    np.testing.assert_allclose(analysis.frame_scores, [0.1, 0.1, 0.1, 0.1, 0.5, 0.5, 0.1, 0.1], atol=1e-6)
    assert analysis.judgement is False
    assert isinstance(full.heatmap_source, AHDSource)  # a per-clip source leaves the model's default alone


def test_a_source_stands_in_for_the_ahd(bb, full):
    cfg = TVADConfig(max_pixels=112 * 168, max_new_tokens=8)
    with pytest.raises(ConfigError, match="RAE reads"):
        TVAD(bb, rae=full.rae, config=cfg)
    source = ConstantSource("profile:cam", torch.full((4, 8, 12), 0.8))
    model = TVAD(bb, rae=full.rae, config=cfg, heatmap_source=source)
    analysis = model.analyze(make_clip(seed=5))
    assert analysis.state.vision.tap_layers == ()  # no AHD: no grids tapped
    assert analysis.judgement is True and analysis.score == pytest.approx(0.8)
    assert analysis.state.num_prompt_tokens == 3 * full.rae.config.prompts_per_step
    assert TVAD(bb, config=cfg).analyze(make_clip(seed=5)).heatmap_source is None  # no source, no maps
