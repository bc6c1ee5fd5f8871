"""Stages 0, 1 and 2 on a tiny configuration and a toy corpus: two steps each, a falling loss, an exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tvad_chat.errors import ConfigError
from tvad_chat.train import common, stage0, stage1, stage2
from tvad_chat.train.toycorpus import make_toy_corpus

TINY = {"text_hidden": 64, "text_layers": 2, "text_heads": 2, "text_kv_heads": 1, "text_intermediate": 128,
        "vision_hidden": 32, "vision_heads": 2, "vision_intermediate": 64, "vision_depth": 4, "tokenizer_vocab_size": 300}
COMMON = {"progress": False, "cpu": True, "grad_accum": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_toy_corpus(tmp_path_factory.mktemp("toy"), videos=10, frames=8)


@pytest.fixture(scope="module")
def stage0_dir(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("s0")
    cfg = stage0.Stage0Config(corpus=str(corpus), out_dir=str(out), max_steps=2, val_samples=2, **TINY, **COMMON)
    return stage0.run(cfg)


@pytest.fixture(scope="module")
def stage1_dir(corpus, stage0_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("s1")
    cfg = stage1.Stage1Config(backbone=str(stage0_dir), corpus=str(corpus), out_dir=str(out), max_steps=2, **COMMON)
    return stage1.run(cfg)


def _log(path):
    return [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_stage0_two_steps_write_a_loadable_backbone(stage0_dir):
    from tvad_chat.backbone import Backbone

    steps = [r for r in _log(stage0_dir.parent) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(r["loss"] > 0 for r in steps)
    bb = Backbone.load(stage0_dir, dtype="float32", device="cpu")
    assert bb.text_dim == 64 and bb.vision_depth == 4
    # the tokenizer was trained on the corpus: its words are single tokens or nearly so
    text = "Is there an anomaly in this video?"
    n = len(bb.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert n < len(text.encode()) / 2
    init = Backbone.load(stage0_dir.parent / "init", dtype="float32", device="cpu")
    moved = [not torch.equal(a, b) for a, b in zip(bb.model.parameters(), init.model.parameters())]
    assert all(moved)  # every parameter trains in stage 0 (vision tower included)


def test_stage0_select_last_keeps_the_final_weights(corpus, tmp_path):
    from tvad_chat.backbone import Backbone

    out = tmp_path / "s0"
    cfg = stage0.Stage0Config(corpus=str(corpus), out_dir=str(out), max_steps=3, val_samples=2, eval_every=1,
                              save_every=3, select="last", **TINY, **COMMON)
    model_dir = stage0.run(cfg)
    final = common.load_state(out / "ckpt-0000003")["modules"]["model"]
    saved = Backbone.load(model_dir, dtype="float32", device="cpu").model.state_dict()
    assert final and all(torch.equal(saved[k], v) for k, v in final.items())
    assert not (out / "best").exists()  # no selection ran: nothing kept on the side
    with pytest.raises(ConfigError):
        stage0.run(stage0.Stage0Config(corpus=str(corpus), out_dir=str(tmp_path / "bad"), select="best"))


def test_stage0_model_carries_its_pixel_budget(stage0_dir):
    """The backbone-only pipeline must see frames of the size stage 0 trained on, not the 448x448 default."""
    from tvad_chat.pipeline import TVAD

    trained = json.loads((stage0_dir / "stage0_config.json").read_text())
    tvad = TVAD.from_pretrained(stage0_dir, use_heads=())
    assert (tvad.config.max_pixels, tvad.config.min_pixels) == (trained["max_pixels"], trained["min_pixels"])
    assert (tvad.config.max_pixels, tvad.config.min_pixels) == (112 * 168, 56 * 56)  # Stage0Config's budget


@pytest.mark.slow
def test_stage1_two_steps_train_only_the_ahd(stage1_dir, stage0_dir):
    from heads.ahd import AnomalyHeatmapDecoder

    ahd = AnomalyHeatmapDecoder.from_pretrained(stage1_dir)
    assert ahd.config.tap_layers == stage1.default_taps(4) == [1, 2, 4]
    log = _log(stage1_dir.parent)
    assert [r["step"] for r in log if "loss" in r] == [1, 2]
    evals = [r["eval"] for r in log if "eval" in r]
    assert evals and 0.0 <= evals[-1]["micro_auc"] <= 1.0
    state = common.load_state(common.latest_checkpoint(stage1_dir.parent))
    assert set(state["modules"]) == {"ahd"}  # the backbone is frozen: not in the checkpoint


@pytest.fixture(scope="module")
def stage2_dir(corpus, stage0_dir, stage1_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("s2")
    cfg = stage2.Stage2Config(backbone=str(stage0_dir), ahd=str(stage1_dir), corpus=str(corpus),
                              out_dir=str(out), max_steps=2, phase_b_steps=2, val_samples=2, lora_r=4,
                              lora_alpha=8, phase_b_layers=1, **COMMON)
    return stage2.run(cfg)


@pytest.mark.slow
def test_stage2_two_steps_per_phase_give_a_full_model(stage0_dir, stage2_dir):
    from tvad_chat.pipeline import TVAD

    final, tmp_path = stage2_dir, stage2_dir.parent
    for phase in ("phase_a", "phase_b"):
        assert [r["step"] for r in _log(tmp_path / phase) if "loss" in r] == [1, 2]
    tvad = TVAD.from_pretrained(final, dtype="float32", device="cpu")
    assert tvad.variant == "ahd+rae" and tvad.backbone.peft_model is None  # LoRA merged
    # phase B trained LoRA on the last layer only (phase_b_layers=1): the first layer is as phase A left it
    a = TVAD.from_pretrained(tmp_path / "phase_a" / "model", dtype="float32", device="cpu")
    q = "model.language_model.layers.{}.self_attn.q_proj.weight"
    sd_a, sd_b = a.backbone.model.state_dict(), tvad.backbone.model.state_dict()
    assert torch.equal(sd_a[q.format(0)], sd_b[q.format(0)])
    assert not torch.equal(sd_a[q.format(1)], sd_b[q.format(1)])
    base = TVAD.from_pretrained(stage0_dir, dtype="float32", device="cpu", use_heads=())
    assert not torch.equal(base.backbone.model.state_dict()[q.format(0)], sd_a[q.format(0)])  # phase A merged
    vision_keys = [k for k in sd_b if ".visual." in k or k.startswith("model.visual")]
    sd_0 = base.backbone.model.state_dict()
    assert vision_keys and all(torch.equal(sd_0[k], sd_b[k]) for k in vision_keys)  # the tower stayed frozen


@pytest.mark.slow
def test_stage0_loss_falls_on_a_fixed_batch(corpus, stage0_dir):
    """30 optimizer steps on one fixed batch: the answer loss must fall a lot (the loop really learns)."""
    from tvad_chat.backbone import Backbone
    from tvad_chat.train.data import ClipStore, load_samples

    bb = Backbone.load(stage0_dir.parent / "init", dtype="float32", device="cpu")
    for p in bb.model.parameters():
        p.requires_grad_(True)
    import dataclasses

    # one judgement sample on two 56 x 56 frames (one merged video token): a cheap but complete stage-0 step
    first = load_samples(corpus, split="train")[0]
    batch = [dataclasses.replace(first, frame_indices=first.frame_indices[:2], conversation=first.conversation[:2])]
    store = ClipStore(max_pixels=56 * 56)
    cfg = common.TrainConfig(out_dir=str(stage0_dir.parent / "fixed"), max_steps=30, grad_accum=1, lr=3e-3,
                             save_every=1000, progress=False, cpu=True, resume=False)
    tr = common.Trainer(cfg, {"model": bb.model},
                        lambda b: sum(stage0.sample_loss(bb, store, s, None) for s in b) / len(b),
                        lambda *a: batch, desc="fixed")
    hist = tr.fit()
    first, last = hist[0].loss, hist[-1].loss
    assert last < 0.5 * first, (first, last)
    assert min(r.loss for r in hist[-5:]) < min(r.loss for r in hist[:5])


@pytest.mark.slow
def test_stage1_interrupted_and_resumed_equals_uninterrupted(corpus, stage0_dir, tmp_path):
    def cfg(out, **kw):
        return stage1.Stage1Config(backbone=str(stage0_dir), corpus=str(corpus), out_dir=str(out), max_steps=4,
                                   save_every=2, val_split="", **COMMON, **kw)

    stage1.run(cfg(tmp_path / "a"))
    stage1.run(cfg(tmp_path / "b", stop_at_step=3))  # "crash" after step 3
    assert common.latest_checkpoint(tmp_path / "b").name == "ckpt-0000003"
    assert not (tmp_path / "b" / "ahd").exists()
    stage1.run(cfg(tmp_path / "b"))
    sa = common.load_state(common.latest_checkpoint(tmp_path / "a"))
    sb = common.load_state(common.latest_checkpoint(tmp_path / "b"))
    assert sa["step"] == sb["step"] == 4
    for k, v in sa["modules"]["ahd"].items():
        assert torch.equal(v, sb["modules"]["ahd"][k]), k
    from heads.ahd import AnomalyHeatmapDecoder

    ha = AnomalyHeatmapDecoder.from_pretrained(tmp_path / "a" / "ahd").state_dict()
    hb = AnomalyHeatmapDecoder.from_pretrained(tmp_path / "b" / "ahd").state_dict()
    assert all(torch.equal(ha[k], hb[k]) for k in ha)


@pytest.mark.slow
def test_eval_run_reports_every_variant(corpus, stage0_dir, stage2_dir, tmp_path, capsys):
    import shutil

    from tvad_chat.cli import main
    from tvad_chat.eval.runner import variant_file_name, video_tasks
    from tvad_chat.train.data import load_samples

    model = tmp_path / "model"
    shutil.copytree(stage2_dir, model)
    shutil.copytree(stage0_dir, model / "backbone")
    out = tmp_path / "eval"
    rc = main(["eval", "run", "--model", str(model), "--corpus", str(corpus), "--split", "test",
               "--max-new-tokens", "4", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report) == ["backbone only", "+ AHD", "+ RAE (no AHD maps)", "full"]
    tasks = video_tasks(load_samples(corpus, split="test"))
    n_questions = sum(len(t.questions) for t in tasks)
    for name in report:
        preds = (out / f"predictions_{variant_file_name(name)}.jsonl").read_text().splitlines()
        assert len(preds) == n_questions
        assert 0.0 <= report[name]["yesno.accuracy"] <= 100.0
    assert "pixel.auroc" in report["full"] and "pixel.auroc" not in report["backbone only"]
    assert "rbdc" in report["+ AHD"] and 0.0 <= report["+ AHD"]["rbdc"] <= 100.0
    assert "pixel.auroc" not in report["+ RAE (no AHD maps)"]  # a blank map is no evidence to score
    for name in report:  # the toy corpus has trajectory questions: content and diversity are scored too
        assert 0.0 < report[name]["distinct.trajectory"] <= 100.0
        assert 0.0 <= report[name]["trajectory.direction"] <= 100.0
    for name in report:  # every judgement is counted once, under its video's type
        by_type = report[name]["yesno.by_type"]
        assert sum(g["videos"] for g in by_type.values()) == len(tasks)
        assert set(by_type) <= {"normal", "anomalous"}  # the toy corpus names no anomaly types
    table = capsys.readouterr().out
    assert "| backbone only |" in table and "| full |" in table and "traj. dir." in table
    assert "Yes/No accuracy per video type" in table


def test_yes_no_by_type_counts_each_type_and_its_yes_share():
    from tvad_chat.eval.runner import VariantResult, VideoTask, format_report, yes_no_by_type
    from tvad_chat.train.data import Sample

    def task(vid, event):
        sample = Sample(id=f"{vid}/judgement", video_id=vid, video="v.mp4", frame_indices=[0, 1], fps=10.0,
                        mask_dir=None, conversation=[], meta={"event": event} if event else {})
        return VideoTask(vid, sample, [(f"{vid}/judgement", "Anything unusual?")], anomalous=event is not None)

    tasks = [task("a", "chase"), task("b", "chase"), task("c", "drive"), task("d", None), task("e", None)]
    truth = {"a": "Yes", "b": "Yes", "c": "Yes", "d": "No", "e": "No"}
    answers = {"a": "Yes, someone runs.", "b": "No, nothing unusual.", "c": "No.", "d": "No.", "e": "Yes, a car."}
    refs = {f"{v}/judgement": {"video_id": v, "kind": "yesno", "references": [truth[v]]} for v in truth}
    res = VariantResult("full", predictions={f"{v}/judgement": a for v, a in answers.items()})
    by_type = yes_no_by_type(res, refs, tasks)
    assert by_type == {"chase": {"videos": 2, "accuracy": 50.0, "said_yes": 50.0},
                       "drive": {"videos": 1, "accuracy": 0.0, "said_yes": 0.0},
                       "normal": {"videos": 2, "accuracy": 50.0, "said_yes": 50.0}}
    table = format_report({"full": {"yesno.accuracy": 40.0, "yesno.by_type": by_type}})
    assert "| variant | chase (2) | drive (1) | normal (2) |" in table  # anomaly types first, normal last
    assert "| full | 50.0 (50) | 0.0 (0) | 50.0 (50) |" in table


def test_train_cli_shows_and_overrides_config(capsys):
    from tvad_chat.cli import main

    assert main(["train", "stage2", "--show-config", "lora_r=8", "phase_b_steps=0"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["lora_r"] == 8 and cfg["phase_b_steps"] == 0 and cfg["warmup_ratio"] == 0.1
    assert main(["train", "stage0", "no_such_key=1"]) == 1
    assert "unknown setting" in capsys.readouterr().err


def test_blank_maps_stand_in_for_the_ahd_with_no_evidence(stage2_dir):
    """The '+ RAE (no AHD maps)' row: RAE reads 50/50 maps, so its prompts differ from the full model's."""
    from tvad_chat.eval.runner import BlankMaps
    from tvad_chat.pipeline import TVAD

    full = TVAD.from_pretrained(stage2_dir)
    blank = TVAD(full.backbone, ahd=BlankMaps(full.ahd), rae=full.rae, config=full.config)
    frames = np.random.default_rng(0).integers(0, 255, (4, 56, 84, 3), dtype=np.uint8)
    vision = full.backbone.encode_video(frames, 5.0, tuple(full.ahd.config.tap_layers))
    out = blank.heatmap_outputs(vision)
    assert out.class_probs.shape == full.heatmap_outputs(vision).class_probs.shape
    assert torch.all(out.class_probs == 0.5)
    trained = full.anomaly_prompts(full.heatmap_outputs(vision).class_probs)
    assert not torch.allclose(blank.anomaly_prompts(out.class_probs), trained)


def test_last_answer_labels_keep_only_the_final_answer():
    from tvad_chat.pipeline import last_answer_labels

    labels = torch.tensor([[-100, -100, 5, 6, -100, -100, 7, 8, 9, -100]])
    kept = last_answer_labels(labels)
    assert kept.tolist() == [[-100] * 6 + [7, 8, 9, -100]]
    assert last_answer_labels(torch.full((1, 4), -100)).tolist() == [[-100] * 4]
    assert last_answer_labels(torch.tensor([[1, 2]])).tolist() == [[1, 2]]


def test_video_dropout_is_a_reproducible_share_of_samples():
    picks = [stage2.drops_video(0, step, f"v{i}/judgement", 0.5) for step in range(20) for i in range(50)]
    assert 0.45 < sum(picks) / len(picks) < 0.55
    again = [stage2.drops_video(0, step, f"v{i}/judgement", 0.5) for step in range(20) for i in range(50)]
    assert picks == again  # a resumed run drops the same samples
    assert not any(stage2.drops_video(0, s, "v", 0.0) for s in range(100))


@pytest.mark.slow
def test_stage2_with_map_inputs_video_dropout_and_last_answer_loss(corpus, stage0_dir, stage1_dir, tmp_path,
                                                                   monkeypatch):
    from heads.rae import RegionAwareAnomalyEncoder

    seen = {"blank": 0, "full": 0, "last_only": 0}
    real = stage2.sample_loss

    def counting(tvad, cache, sample, blank_video=False, last_only=False):
        seen["blank" if blank_video else "full"] += 1
        seen["last_only"] += int(last_only)
        return real(tvad, cache, sample, blank_video, last_only)

    monkeypatch.setattr(stage2, "sample_loss", counting)
    cfg = stage2.Stage2Config(backbone=str(stage0_dir), ahd=str(stage1_dir), corpus=str(corpus),
                              out_dir=str(tmp_path), max_steps=4, phase_b_steps=0, val_samples=2, lora_r=4,
                              lora_alpha=8, rae_inputs="maps_and_difference", video_dropout=0.5, rae_lr_scale=20.0,
                              answer_loss="last", **COMMON)
    final = stage2.run(cfg)
    rae = RegionAwareAnomalyEncoder.from_pretrained(final / "rae")
    assert rae.config.inputs == "maps_and_difference"
    assert seen["blank"] > 0 and seen["full"] > 0 and seen["last_only"] == seen["blank"] + seen["full"]
    with pytest.raises(ConfigError, match="answer_loss"):
        stage2.run(stage2.Stage2Config(**{**cfg.__dict__, "out_dir": str(tmp_path / "bad"), "answer_loss": "first"}))


def test_stage2_select_last_keeps_each_phases_final_weights(corpus, stage0_dir, stage1_dir, tmp_path):
    from heads.rae import RegionAwareAnomalyEncoder

    cfg = stage2.Stage2Config(backbone=str(stage0_dir), ahd=str(stage1_dir), corpus=str(corpus),
                              out_dir=str(tmp_path), max_steps=3, phase_b_steps=0, val_samples=2, lora_r=4,
                              lora_alpha=8, eval_every=1, save_every=3, select="last", **COMMON)
    final = stage2.run(cfg)
    last = common.load_state(tmp_path / "phase_a" / "ckpt-0000003")["modules"]["rae"]
    saved = RegionAwareAnomalyEncoder.from_pretrained(final / "rae").state_dict()
    assert last and all(torch.equal(saved[k], v) for k, v in last.items())
    assert not (tmp_path / "phase_a" / "best").exists()
    with pytest.raises(ConfigError, match="select"):
        stage2.run(stage2.Stage2Config(**{**cfg.__dict__, "out_dir": str(tmp_path / "bad"), "select": "best"}))


def test_judgement_repeat_multiplies_only_the_dialogue_judgement():
    from tvad_chat.train.data import Sample

    def sample(sid, kind, qtype):
        return Sample(id=sid, video="v", frame_indices=[0], fps=1.0, conversation=[],
                      meta={"kind": kind, "question_type": qtype})

    train = [sample("a/judgement", "judgement", "dialogue"), sample("a/target", "target", "dialogue"),
             sample("a/inv", "judgement", "inverted_judgement"), sample("b/judgement", "judgement", "dialogue"),
             sample("b/mv", "trajectory", "appearance_to_motion")]
    assert [s.id for s in stage2.with_repeats(train, 3)] == [
        "a/judgement", "a/judgement", "a/judgement", "a/target", "a/inv",
        "b/judgement", "b/judgement", "b/judgement", "b/mv"]
    assert stage2.with_repeats(train, 1) == train
    with pytest.raises(ConfigError, match="judgement_repeat"):
        stage2.check_config(stage2.Stage2Config(judgement_repeat=0))


def test_phase_b_takes_the_focused_descriptions_without_yes_no_items(corpus):
    from tvad_chat.train.data import load_samples

    train = load_samples(corpus, split="train")
    subset = stage2.phase_b_samples(train)
    assert subset and all(s.kind != "judgement" for s in subset)
    expected = [s for s in train if s.kind != "judgement" and (s.meta.get("anomaly_focused") if any(
        t.meta.get("anomaly_focused") for t in train) else s.anomalous_video)]
    assert [s.id for s in subset] == [s.id for s in expected]
