"""`tvad eval text|frames|objects|pixels` end to end, on real UCSD Ped2 masks where it fits."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from shared_data import DATA
from sklearn.metrics import roc_auc_score

from tvad_chat.cli import main
from tvad_chat.eval.objects import Detections, Regions, rbdc_tbdc
from tvad_chat.eval.text import BleuSettings, best_reference_bleu4

PED2 = DATA / "ucsd_ped2" / "testing"
needs_ped2 = pytest.mark.shared_data("ucsd_ped2")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_text_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    refs = [
        {"id": "1", "video_id": "v1", "kind": "target", "references": ["a man on a bicycle", "a cyclist"]},
        {"id": "2", "video_id": "v2", "kind": "target", "references": ["a small cart"]},
        {"id": "3", "video_id": "v1", "kind": "trajectory", "references": ["moves from left to right"]},
        {"id": "4", "video_id": "v1", "kind": "yesno", "references": ["Yes"]},
        {"id": "5", "video_id": "v2", "kind": "yesno", "references": ["No"]},
    ]
    preds = [{"id": "1", "prediction": "a man on a bicycle"}, {"id": "2", "prediction": "a cart"},
             {"id": "3", "prediction": "moves left to right"}, {"id": "4", "prediction": "Yes, a cyclist."},
             {"id": "5", "prediction": "Nothing unusual happens."}]
    out = tmp_path / "report.json"
    code = main(["eval", "text", "--pred", str(_jsonl(tmp_path / "p.jsonl", preds)),
                 "--ref", str(_jsonl(tmp_path / "r.jsonl", refs)), "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    expected = best_reference_bleu4([("v1", "a man on a bicycle", refs[0]["references"]),
                                     ("v2", "a cart", refs[1]["references"])], BleuSettings())["bleu4"]
    assert report["bleu4.target"] == pytest.approx(expected, abs=1e-3)
    assert 0 < report["bleu4.trajectory"] < 100
    assert report["yesno.accuracy"] == 100.0 and report["yesno.balanced_accuracy"] == 100.0
    printed = capsys.readouterr().out
    assert "tokenize=13a" in printed and "lowercase=True" in printed and "smooth=exp" in printed


def test_malformed_lines_name_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred = tmp_path / "p.jsonl"
    pred.write_text('{"id": "1", "prediction": "yes"}\n{"id": "2", "prediction": \n', encoding="utf-8")
    ref = _jsonl(tmp_path / "r.jsonl", [{"id": "1", "video_id": "v", "kind": "yesno", "references": ["yes"]}])
    assert main(["eval", "text", "--pred", str(pred), "--ref", str(ref)]) == 1
    assert f"{pred}:2" in capsys.readouterr().err
    gt, det = tmp_path / "gt", tmp_path / "det"
    gt.mkdir(), det.mkdir()
    (gt / "01.txt").write_text("0, 3, 10, 10, 20, 20\n0, 4, 10, 10, 20\n")
    assert main(["eval", "objects", "--gt-tracks", str(gt), "--detections", str(det), "--num-frames", "9"]) == 1
    assert f"{gt / '01.txt'}:2" in capsys.readouterr().err
    (gt / "01.txt").write_text("0, 3, 10, 10, 20, 20\n")
    (det / "01.txt").write_text("3, 10, 10, 20, 20, 0.5\n3, 30, 10, 20, 20, 0.4\n")
    assert main(["eval", "objects", "--gt-tracks", str(gt), "--detections", str(det), "--num-frames", "9"]) == 1
    assert f"{det / '01.txt'}:2" in capsys.readouterr().err  # x2 < x1


@needs_ped2
def test_frames_on_real_ped2_labels(tmp_path: Path) -> None:
    labels = json.loads((PED2 / "frame_labels.json").read_text())
    rng = np.random.default_rng(0)
    scores = {k: (np.asarray(v) * 0.4 + rng.random(len(v))).tolist() for k, v in labels.items()}
    scores_path = tmp_path / "s.json"
    scores_path.write_text(json.dumps(scores))
    out = tmp_path / "f.json"
    assert main(["eval", "frames", "--scores", str(scores_path), "--labels", str(PED2 / "frame_labels.json"),
                 "--sigma", "2", "--one-class", "pad", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    from scipy.ndimage import gaussian_filter1d

    ys = np.concatenate([labels[k] for k in sorted(labels)])
    ss = np.concatenate([gaussian_filter1d(np.asarray(scores[k]), 2) for k in sorted(labels)])
    assert report["micro_auc"] == pytest.approx(100 * roc_auc_score(ys, ss), abs=1e-3)
    assert report["sigma"] == 2 and report["one_class"] == "pad"


def _ped2_boxes(video: str) -> list[tuple[int, int, int, int, int]]:
    rows = []
    for path in sorted((PED2 / "masks" / video).glob("*.png")):
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0
        if mask.any():
            ys, xs = np.nonzero(mask)
            rows.append((int(path.stem), int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))
    return rows


@needs_ped2
def test_objects_on_boxes_from_real_ped2_masks(tmp_path: Path) -> None:
    gt, det = tmp_path / "gt", tmp_path / "det"
    gt.mkdir(), det.mkdir()
    rng = np.random.default_rng(1)
    regions, dets, total_frames = [], [], 0
    for v, video in enumerate(("01", "04")):
        boxes = _ped2_boxes(video)
        total_frames += len(list((PED2 / "masks" / video).glob("*.png")))
        (gt / f"{video}.txt").write_text("".join(f"0, {f}, {x1}, {y1}, {x2}, {y2}\n" for f, x1, y1, x2, y2 in boxes))
        lines = []
        for f, x1, y1, x2, y2 in boxes[::2]:  # every other region, jittered, plus a false positive
            j = rng.integers(-3, 4, 4)
            lines.append((f, x1 + j[0], y1 + j[1], x2 + j[2], y2 + j[3], round(float(rng.random()), 3)))
            lines.append((f, 0, 0, 15, 15, round(float(rng.random()) * 0.5, 3)))
        (det / f"{video}.txt").write_text("".join(", ".join(map(str, r)) + "\n" for r in lines))
        regions += [(v, f, v, x1, y1, x2, y2) for f, x1, y1, x2, y2 in boxes]
        dets += [(v, *r) for r in lines]
    out = tmp_path / "o.json"
    assert main(["eval", "objects", "--gt-tracks", str(gt), "--detections", str(det),
                 "--num-frames", str(total_frames), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    r, d = np.array(regions, float), np.array(dets, float)
    expected = rbdc_tbdc(Regions(r[:, 0].astype(int), r[:, 1].astype(int), r[:, 2].astype(int), r[:, 3:]),
                         Detections(d[:, 0].astype(int), d[:, 1].astype(int), d[:, 2:6], d[:, 6]), total_frames)
    assert report["rbdc"] == pytest.approx(expected["rbdc"], abs=1e-3)
    assert report["tbdc"] == pytest.approx(100.0)  # both tracks have half their regions hit
    assert 30 < report["rbdc"] < 55


@needs_ped2
def test_pixels_on_real_ped2_masks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt, pred = tmp_path / "gt" / "04", tmp_path / "pred" / "04"
    gt.mkdir(parents=True), pred.mkdir(parents=True)
    rng = np.random.default_rng(2)
    ys, ss = [], []
    for index, path in enumerate(sorted((PED2 / "masks" / "04").glob("*.png"))[25:45]):
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        (gt / path.name).write_bytes(path.read_bytes())
        if index % 10 == 9:  # a few frames without a map
            ys.append(mask.ravel() > 0), ss.append(np.zeros(mask.size))
            continue
        score = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 6) * 0.6 + rng.random(mask.shape) * 90
        score = np.clip(score, 0, 255).astype(np.uint8)
        cv2.imwrite(str(pred / path.name), score)
        ys.append(mask.ravel() > 0), ss.append(score.ravel().astype(float))
    out = tmp_path / "p.json"
    assert main(["eval", "pixels", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["auroc"] == pytest.approx(100 * roc_auc_score(np.concatenate(ys), np.concatenate(ss)), abs=1e-3)
    for key in ("ap", "aupro", "f1_max", "tao.auroc", "tao.ap", "tao.aupro", "tao.f1"):
        assert 0 <= report[key] <= 100, key
    assert report["frames_without_prediction"] == 2
    printed = capsys.readouterr().out
    assert "TAO protocol" in printed and "exact" in printed


def test_pixels_with_float_npy_maps_and_a_score_range(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(3)
    (tmp_path / "gt" / "v").mkdir(parents=True), (tmp_path / "pred" / "v").mkdir(parents=True)
    ys, ss = [], []
    for i in range(4):
        mask = np.zeros((24, 32), np.uint8)
        mask[5 + i:12 + i, 8:16] = 255
        score = rng.random((24, 32)) * 0.6 + (mask > 0) * 0.3
        cv2.imwrite(str(tmp_path / "gt" / "v" / f"{i:03d}.png"), mask)
        np.save(tmp_path / "pred" / "v" / f"{i:03d}.npy", score)
        ys.append(mask.ravel() > 0), ss.append(score.ravel())
    out = tmp_path / "r.json"
    assert main(["eval", "pixels", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--score-range", "0", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["auroc"] == pytest.approx(100 * roc_auc_score(np.concatenate(ys), np.concatenate(ss)), abs=0.01)
    assert "65536 equal-width bins over [0, 1]" in capsys.readouterr().out
    assert main(["eval", "pixels", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--score-range", "1", "0"]) == 1


# --------------------------------------------------------------------------- `tvad eval run` on workers

TINY_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "tvad-tiny"


@pytest.mark.slow
def test_eval_run_on_two_workers_gives_the_same_predictions_and_report(tmp_path: Path) -> None:
    """`tvad eval run --workers 2` (a video per task in two spawned processes) writes what the in-process run
    writes: the predictions in the same order, the same metrics."""
    from tvad_chat.train.toycorpus import make_toy_corpus

    corpus = make_toy_corpus(tmp_path / "toy", videos=10, frames=8)  # 2 test videos, one anomalous
    command = ["eval", "run", "--model", str(TINY_MODEL), "--corpus", str(corpus), "--split", "test",
               "--no-ablation", "--max-new-tokens", "4"]
    assert main(command + ["--out", str(tmp_path / "here")]) == 0
    assert main(command + ["--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    here = (tmp_path / "here" / "predictions_full.jsonl").read_text()
    assert (tmp_path / "two" / "predictions_full.jsonl").read_text() == here and len(here.splitlines()) >= 4
    report, two = (json.loads((tmp_path / d / "report.json").read_text())["full"] for d in ("here", "two"))
    assert set(two) == set(report) and "pixel.auroc" in report and report["videos"] == 2
    for key, value in report.items():
        if isinstance(value, float):
            assert two[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key
        else:
            assert two[key] == value, key


def test_a_process_loads_each_model_once_across_videos_and_variants(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a worker does for the four ablation rows, two videos each: two model loads (the stage-0 backbone and the
    whole model), "+ AHD" on the backbone of "backbone only", "full" the model of "+ RAE (no AHD maps)"."""
    from tvad_chat.eval.runner import load_variant, variant_names
    from tvad_chat.pipeline import TVAD

    loads = []
    load = TVAD.from_pretrained.__func__

    def counted(cls, directory, **kwargs):
        loads.append(Path(directory).name)
        return load(cls, directory, **kwargs)

    monkeypatch.setattr(TVAD, "from_pretrained", classmethod(counted))
    names = variant_names(TINY_MODEL, ablation=True)
    assert names == ["backbone only", "+ AHD", "+ RAE (no AHD maps)", "full"]
    models = {name: [load_variant(TINY_MODEL, name) for _video in range(2)] for name in names}
    assert loads == ["backbone", "tvad-tiny"]
    assert all(a is b for a, b in models.values())
    assert models["+ AHD"][0].backbone is models["backbone only"][0].backbone and models["+ AHD"][0].ahd is not None
    assert models["full"][0].backbone is models["+ RAE (no AHD maps)"][0].backbone
