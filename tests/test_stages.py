"""Bring-your-own-weights stages (tvad_chat.stages): TAO's prompt choice, masks (heat outline, SAM2), categories
(CLIP), their loading offline, and the analysis going on without them.

SAM2 is built from the sam2 package's own config with random weights (input size reduced to 128 so a frame takes
a fraction of a second on a CPU); CLIP is open_clip's ViT-S-32 with random weights, or a tiny open_clip folder made
here. No weights are downloaded (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from media_factory import write_frames

from tvad_chat.cli import main
from tvad_chat.errors import CheckpointError
from tvad_chat.scene.analyze import FrameBox, FrameRecord, SceneAnalysis
from tvad_chat.stages.categories import CategorySet, ClipCategoriser, load_categories
from tvad_chat.stages.masks import (
    HeatOutline,
    MaskRequest,
    ObjectMask,
    SAM2Masks,
    build_sam2_predictor,
    refine_heat,
)
from tvad_chat.stages.run import Stages, StageSettings, describe_categories, load_stages, run_stages
from tvad_chat.stages.tao import (
    REPROMPT_EVERY,
    TrackBox,
    merge_overlapping,
    plan_segments,
    robust_filter,
    schedule_prompts,
    track_boxes,
)

SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SAM2_TEST_SIZE = 128  # the config's 1024 reduced: the model is the same, its input smaller
WIDTH, HEIGHT, FRAMES = 96, 64, 7
BOX = (30.0, 16.0, 60.0, 48.0)
SAM2_HUB = "facebook/sam2.1-hiera-tiny"
CLIP_HUB = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


def _box(position: int, xyxy=BOX, score: float = 0.9, track: int = 1) -> TrackBox:
    return TrackBox(position, position, xyxy, score, track)


def _analysis(scores: list[float], thresholds: dict[str, float] | None = None) -> SceneAnalysis:
    """One track (id 1) in every frame at BOX with these box scores, frame scores equal to them."""
    frames = [FrameRecord(i, i / 10.0, s, [FrameBox(BOX, s, 1, (1.0, 1.0, 1.0), (200, 60, 60))])
              for i, s in enumerate(scores)]
    thresholds = thresholds or {"1/min": 0.5}
    return SceneAnalysis(None, (WIDTH, HEIGHT), 10.0, frames, np.array(scores, np.float32), thresholds,
                         next(iter(thresholds)))


# --------------------------------------------------------------------------- TAO's prompt choice


def test_robust_filter_keeps_boxes_confirmed_in_three_of_five_frames() -> None:
    moved = (40.0, 16.0, 70.0, 48.0)  # IoU with BOX 20/40 = 0.5: overlaps
    far = (0.0, 0.0, 10.0, 10.0)
    boxes = [_box(0), _box(1, moved), _box(2), _box(10), _box(11), _box(12, far)]
    kept = robust_filter(boxes)
    # frames 0-2 confirm each other (3 of the 5 around each); 10 and 11 have only each other; 12 overlaps nothing
    assert [b.position for b in kept] == [0, 1, 2]
    assert robust_filter([_box(0), _box(2), _box(4)]) == [_box(2)]  # 0..4 around 2 holds 3; around 0 or 4, 2


def test_overlapping_boxes_merge_under_the_higher_score_and_objects_are_re_prompted() -> None:
    a = TrackBox(5, 5, (10.0, 10.0, 30.0, 30.0), 0.6, 1)
    b = TrackBox(5, 5, (14.0, 10.0, 34.0, 30.0), 0.9, 2)  # IoU 16/24 = 0.67 with a
    c = TrackBox(5, 5, (60.0, 10.0, 80.0, 30.0), 0.7, 3)
    merged = merge_overlapping([a, b, c])
    assert sorted((m.track_id, m.xyxy) for m in merged) == [(2, (10.0, 10.0, 34.0, 30.0)), (3, c.xyxy)]
    positions = [0, 1, 2, 3, REPROMPT_EVERY - 1, REPROMPT_EVERY + 1, 2 * REPROMPT_EVERY + 1]
    prompts = schedule_prompts([_box(p) for p in positions])
    assert [p.position for p in prompts] == [0, REPROMPT_EVERY + 1, 2 * REPROMPT_EVERY + 1]


def test_segments_span_the_whole_track_with_prompts_inside() -> None:
    analysis = _analysis([0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.1])
    segments = plan_segments(track_boxes(analysis), 0.5)
    assert len(segments) == 1
    assert segments[0].positions == list(range(FRAMES))  # the track's low-score frames too
    assert [(p.position, p.object_id) for p in segments[0].prompts] == [(3, 1)]  # the middle frame


# --------------------------------------------------------------------------- masks


def test_object_masks_keep_crops_and_refine_the_heat() -> None:
    full = np.zeros((HEIGHT, WIDTH), bool)
    full[20:30, 40:45] = True
    mask = ObjectMask.from_full(3, full)
    assert mask.crop.shape == (10, 5) and mask.area == 50 and mask.box == (40, 20, 45, 30)
    assert np.array_equal(mask.full(), full)
    assert ObjectMask.from_full(4, np.zeros((HEIGHT, WIDTH), bool)).box is None

    heat = np.full((HEIGHT, WIDTH), 0.2, np.float32)
    heat[20:30, 40:42] = 0.9
    out = refine_heat(heat, [(mask, (38.0, 18.0, 50.0, 34.0), 0.6)])
    assert out[25, 41] == pytest.approx(0.9)  # on the mask, the higher heat stays
    assert out[25, 43] == pytest.approx(0.6)  # on the mask, the track's value
    assert out[32, 48] == 0.0  # in the box (with its margin), beside the mask
    assert out[5, 5] == pytest.approx(0.2)  # elsewhere unchanged


def test_heat_outline_masks_are_the_hot_pixels_inside_each_box() -> None:
    analysis = _analysis([0.9] * 3)
    outline = HeatOutline()
    for i in range(3):
        heat = np.zeros((HEIGHT, WIDTH), np.float32)
        heat[20:30, 35:40] = 0.8 if i != 1 else 0.3  # frame 1: below the outline level
        heat[0:5, 0:5] = 0.9  # hot, but outside the track's box
        outline.sink(i, heat)
    masks = outline.masks(MaskRequest(analysis, track_boxes(analysis), 0.5, read_frames=lambda _: None))
    assert sorted(masks[1]) == [0, 1, 2]
    assert masks[1][0].box == (35, 20, 40, 30) and masks[1][1].area == 0
    assert masks[1][2].full().shape == (HEIGHT, WIDTH)


@pytest.fixture(scope="module")
def sam2_random() -> SAM2Masks:
    torch.manual_seed(0)
    return SAM2Masks(build_sam2_predictor(SAM2_CONFIG, None, "cpu", image_size=SAM2_TEST_SIZE))


@pytest.fixture(scope="module")
def clip_random() -> ClipCategoriser:
    torch.manual_seed(0)
    return ClipCategoriser.create("ViT-S-32", device="cpu")


def test_both_stages_run_end_to_end_on_a_short_clip(sam2_random: SAM2Masks, clip_random: ClipCategoriser,
                                                    tmp_path: Path) -> None:
    """SAM2 prompted in the middle frame masks every frame of the track, before and after it; CLIP ranks the
    categories with scores summing to 1; the report carries both with their times."""
    clip = write_frames(tmp_path / "clip", FRAMES, WIDTH, HEIGHT)
    analysis = _analysis([0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.1])
    categories = CategorySet(("a cyclist", "a skateboarder", "a person walking", "a car"), ("a photo of {category}.",))
    seen: list[tuple[str, int, int]] = []
    results = run_stages(analysis, clip, Stages(sam2_random, clip_random, enabled=True), categories=categories,
                         folder_fps=10.0, progress=lambda stage, done, total, _s: seen.append((stage, done, total)))

    assert results.mask_source == "SAM2" and sorted(results.masks) == [1]
    masks = results.masks[1]
    assert sorted(masks) == list(range(FRAMES))  # every frame of the track: before, at and after the prompt (3)
    for mask in masks.values():
        assert mask.full().shape == (HEIGHT, WIDTH) and mask.full().dtype == bool
    assert ("masks", FRAMES, FRAMES) in seen and ("categories", 1, 1) in seen

    ranking = results.categories[1]
    assert sorted(r.name for r in ranking) == sorted(categories.names)
    assert sum(r.score for r in ranking) == pytest.approx(1.0, abs=1e-5)
    assert [r.score for r in ranking] == sorted((r.score for r in ranking), reverse=True)
    sentence = describe_categories(ranking)
    assert sentence == f"{ranking[0].name} ({ranking[0].score:.2f}) or {ranking[1].name} ({ranking[1].score:.2f})"

    report = analysis.to_report()
    results.add_to_report(report, analysis)
    event = report["events"][0]
    assert event["category_track"] == 1
    assert [c["name"] for c in event["categories"]] == [r.name for r in ranking]
    stages = report["stages"]
    assert stages["masks"]["source"] == "SAM2" and stages["masks"]["frames"] == FRAMES
    assert stages["masks"]["seconds"] > 0 and stages["categories"]["seconds"] > 0
    assert len(stages["masks"]["tracks"]["1"]) == sum(m.box is not None for m in masks.values())
    assert results.heat(3, np.zeros((HEIGHT, WIDTH), np.float32)).shape == (HEIGHT, WIDTH)


def test_sam2_propagates_backward_from_a_later_prompt(sam2_random: SAM2Masks, tmp_path: Path) -> None:
    """Prompted in the last frames only, the masks still reach the first frame (the backward pass)."""
    clip = write_frames(tmp_path / "clip", FRAMES, WIDTH, HEIGHT)
    analysis = _analysis([0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9])
    results = run_stages(analysis, clip, Stages(sam2_random, enabled=True), folder_fps=10.0)
    assert sorted(results.masks[1]) == list(range(FRAMES))


# --------------------------------------------------------------------------- categories


def test_default_categories_are_about_thirty_and_take_the_users() -> None:
    default = load_categories()
    assert 25 <= len(default.names) <= 40 and "a cyclist" in default.names
    assert all("{category}" in t for t in default.templates)
    extended = load_categories("bicycle, A Cyclist, forklift")
    assert extended.names == (*default.names, "bicycle", "forklift")


def _tiny_clip_folder(folder: Path) -> Path:
    """An open_clip model folder as published (open_clip_config.json + open_clip_model.safetensors), tiny."""
    import open_clip
    from safetensors.torch import save_file

    config = {"model_cfg": {"embed_dim": 32,
                            "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 32},
                            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                                         "layers": 2}},
              "preprocess_cfg": {"mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}}
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(1)
    model = open_clip.CLIP(**config["model_cfg"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def test_clip_loads_a_local_open_clip_folder(tmp_path: Path) -> None:
    folder = _tiny_clip_folder(tmp_path / "tiny-clip")
    categoriser = ClipCategoriser.load(str(folder))
    assert categoriser.source == str(folder)
    from safetensors.torch import load_file

    weights = load_file(str(folder / "open_clip_model.safetensors"))
    assert torch.equal(categoriser.model.state_dict()["text_projection"].cpu(), weights["text_projection"])
    with pytest.raises(CheckpointError, match="open_clip_config.json"):
        ClipCategoriser.load(str(tmp_path))


# --------------------------------------------------------------------------- loading offline


def _offline_empty_hub(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Offline with an empty hub cache, whatever this machine holds."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))


def test_hub_ids_offline_fail_with_what_is_missing_and_how_to_provide_it(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    _offline_empty_hub(monkeypatch, tmp_path / "empty-hub")
    with pytest.raises(CheckpointError) as sam2:
        SAM2Masks.load(SAM2_HUB)
    message = str(sam2.value)
    assert "not on this machine" in message and f"hf download {SAM2_HUB}" in message
    assert "sam2.1_hiera_tiny.pt" in message and "--sam2" in message
    with pytest.raises(CheckpointError, match=r"hf download laion/.*--clip"):
        ClipCategoriser.load(CLIP_HUB)
    with pytest.raises(CheckpointError, match="published file name"):
        SAM2Masks.load(str(_touch(tmp_path / "my_sam.pt")))
    with pytest.raises(CheckpointError, match="neither a checkpoint file or folder here nor a published"):
        SAM2Masks.load(str(tmp_path / "missing.pt"))

    stages = load_stages(StageSettings(sam2=SAM2_HUB, clip=CLIP_HUB))
    assert stages.sam2 is None and stages.categoriser.name == "none" and stages.enabled
    assert len(stages.notes) == 2 and "goes on without SAM2" in stages.notes[0]


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def test_sam2_loads_a_local_checkpoint_by_its_published_name(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = build_sam2_predictor(SAM2_CONFIG, None, "cpu")
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    loaded = SAM2Masks.load(str(tmp_path), device="cpu")  # the folder holding it
    assert loaded.predictor.image_size == 1024 and loaded.source == str(tmp_path)
    name = "memory_encoder.out_proj.weight"
    assert torch.equal(loaded.predictor.state_dict()[name], model.state_dict()[name])


RUNNER_FRAMES = 64  # 6.4 s of SynthCampus at 10 fps: enough to analyse uncalibrated (judging its objects needs 10 s)


def _runner_clip(folder: Path, frames: int = RUNNER_FRAMES, index: int = 1) -> Path:
    from datasets_builder.synth.generate import ClipConfig, generate_clip
    from datasets_builder.synth.writer import write_clip

    cfg = ClipConfig(frames=frames, width=320, height=192, fps=10.0, fixed_camera=True)
    write_clip(generate_clip(7, "train", index, cfg, event="run", scene_name="campus_walkway"), folder / "runner")
    return folder / "runner" / "video.mp4"


def test_analysis_completes_without_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    """`tvad analyze --sam2 HUB_ID --clip HUB_ID` offline: both stages say what is missing, the report is written
    with the heat outline as masks and the notes."""
    _offline_empty_hub(monkeypatch, tmp_path / "empty-hub")
    out = tmp_path / "report.json"
    code = main(["analyze", str(_runner_clip(tmp_path)), "--profile", "none", "--out", str(out),
                 "--sam2", SAM2_HUB, "--clip", CLIP_HUB])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    text = printed.out + printed.err
    assert f"hf download {SAM2_HUB}" in text and f"hf download {CLIP_HUB}" in text
    report = json.loads(out.read_text())
    assert len(report["frames"]) == RUNNER_FRAMES
    stages = report["stages"]
    assert len(stages["notes"]) == 2 and stages["masks"]["source"] == "heat outline"
    assert "categories" not in stages and all("categories" not in e for e in report["events"])


def test_ask_completes_without_the_weights_and_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    """`tvad ask --json --sam2 HUB_ID --clip HUB_ID` offline: answers, the notes as warnings, no categories."""
    _offline_empty_hub(monkeypatch, tmp_path / "empty-hub")
    video = _runner_clip(tmp_path)
    code = main(["ask", str(video), "--json", "--profile", "none", "--sam2", SAM2_HUB, "--clip", CLIP_HUB])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    answer = json.loads(printed.out)
    assert answer["answers"] and len(answer["stages"]["notes"]) == 2
    assert any(f"hf download {SAM2_HUB}" in w for w in answer["warnings"])
    assert "masks" not in answer["stages"]  # the page's heat is the outline already: no SAM2, no mask stage
    assert answer["event_categories"] == [[] for _ in answer["event_categories"]]


def test_scan_reports_carry_the_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tvad scan --sam2 --clip` offline: each clip's report carries the stages' notes and the heat-outline masks;
    a scan made before the stages existed (no sam2/clip in scan.json) resumes with them left unset."""
    from tvad_chat.executor import LocalExecutor
    from tvad_chat.scan.run import scan
    from tvad_chat.scan.work import ScanSettings

    _offline_empty_hub(monkeypatch, tmp_path / "empty-hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the spawned worker reads the environment
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    archive = tmp_path / "archive"
    archive.mkdir()
    _runner_clip(tmp_path).rename(archive / "runner.mp4")  # the video alone (not the ground-truth frame folders)
    settings = ScanSettings(profile="none", sam2=SAM2_HUB, clip=CLIP_HUB)
    executor = LocalExecutor(1)
    try:
        result = scan(archive, tmp_path / "out", settings, executor, (".mp4",))
    finally:
        executor.close()
    assert result.scanned == 1 and not result.failed
    report = json.loads(next((tmp_path / "out" / "clips").glob("*/report.json")).read_text())
    assert len(report["stages"]["notes"]) == 2 and report["stages"]["masks"]["source"] == "heat outline"

    older = tmp_path / "older"
    older.mkdir()
    (tmp_path / "empty-archive").mkdir()
    plain = {k: v for k, v in json.loads((tmp_path / "out" / "scan.json").read_text()).items()
             if k not in ("sam2", "clip")}
    (older / "scan.json").write_text(json.dumps(plain))
    executor = LocalExecutor(1)
    try:
        assert scan(tmp_path / "empty-archive", older, ScanSettings(profile="none"), executor, (".mp4",)).clips == 0
    finally:
        executor.close()


class _TrueMasks:
    """A mask source that knows the answer: every anomalous track's mask is the labelled anomaly mask."""

    name = "true masks"

    def __init__(self, read_mask) -> None:
        self.read_mask = read_mask

    def masks(self, request: MaskRequest) -> dict:
        return {t: {b.index: ObjectMask.from_full(b.index, self.read_mask(b.index)) for b in boxes}
                for t, boxes in request.tracks.items()}


def test_eval_scene_reports_pixel_metrics_with_and_without_the_mask_stage(tmp_path: Path) -> None:
    """With a mask stage, `evaluate_profile` reports the pixel metrics twice; the heat shaped by the true masks
    scores better than the heat alone."""
    from tvad_chat.eval.scene import LabelledClip, evaluate_profile
    from tvad_chat.scene.run import resolve_profile
    from tvad_chat.video import read_mask

    video = _runner_clip(tmp_path, frames=110, index=2)  # 11 s: a clip scored against itself judges its objects
    annotation = json.loads((video.parent / "annotation.json").read_text())
    masks_dir = video.parent / "masks"
    mask_files = sorted(masks_dir.iterdir())

    def mask(index: int) -> np.ndarray:
        return read_mask(mask_files[index])

    profile, _ = resolve_profile(video, "none")
    clip = LabelledClip("runner", str(video), None, np.array(annotation["frame_labels"]), mask)
    report = evaluate_profile(profile, [clip], mask_source=_TrueMasks(mask))
    assert {"pixel.auroc", "masks.pixel.auroc", "masks.pixel.aupro"} <= set(report)
    assert report["masks.pixel.auroc"] > report["pixel.auroc"]
    assert report["masks.pixel.aupro"] > report["pixel.aupro"]
    assert "masks.pixel.auroc" not in evaluate_profile(profile, [clip])


@pytest.mark.slow
@pytest.mark.shared_data("ucsd_ped2")
def test_the_page_overlay_takes_sam2_masks_and_is_shared_by_sessions_with_the_same_weights(
        sam2_random: SAM2Masks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With SAM2 the session's overlay is a second, masked one (the plain one stays cached for sessions without
    it); a second session with the same weights reuses both the analysis and the masked overlay."""
    import av
    from shared_data import DATA

    from tvad_chat import chat

    folder = tmp_path / "01"
    folder.mkdir()
    for frame in sorted((DATA / "ucsd_ped2" / "testing" / "frames" / "01").iterdir())[70:110]:  # the cyclist
        (folder / frame.name).write_bytes(frame.read_bytes())
    passes = []
    real = chat.analyze_clip
    monkeypatch.setattr(chat, "analyze_clip", lambda *a, **k: passes.append(a[0]) or real(*a, **k))
    engine = chat.ChatEngine(chat.EngineConfig(answers="grounded", profile="auto", folder_fps=10.0,
                                               stages=StageSettings(sam2="random-sam2")))
    monkeypatch.setattr(engine, "stages", lambda settings: Stages(sam2_random, enabled=True))
    first, second = engine.new_session(), engine.new_session()
    engine.load_video(first, folder)
    assert first.scene.events() and first.stages.mask_source == "SAM2" and first.stages.masks
    (made,) = engine._scenes.values()
    assert first.scene_overlay == made.masked[first.stage_settings][0] != made.overlay and len(passes) == 2

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]

    plain, masked = frames(made.overlay), frames(first.scene_overlay)
    assert len(plain) == len(masked) == 40
    assert any(np.abs(a.astype(int) - b).max() > 30 for a, b in zip(plain, masked, strict=True))
    engine.load_video(second, folder)
    assert second.scene_overlay == first.scene_overlay and len(passes) == 2
