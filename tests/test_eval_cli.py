"""`tvad eval ...`: JSON keys as documented, percent values, errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tvad_chat.cli import main


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_text_json_keys(tmp_path: Path) -> None:
    pred = _write_jsonl(tmp_path / "p.jsonl", [
        {"id": "1", "prediction": "Yes, a cyclist."}, {"id": "2", "prediction": "No."},
        {"id": "3", "prediction": "a cyclist in a red shirt"}, {"id": "4", "prediction": "it rides left to right"}])
    ref = _write_jsonl(tmp_path / "r.jsonl", [
        {"id": "1", "video_id": "a", "kind": "yesno", "references": ["Yes"]},
        {"id": "2", "video_id": "b", "kind": "yesno", "references": ["Yes"]},
        {"id": "3", "video_id": "a", "kind": "target", "references": ["a cyclist in a red shirt"]},
        {"id": "4", "video_id": "a", "kind": "trajectory", "references": ["it rides from left to right"]}])
    assert main(["eval", "text", "--pred", str(pred), "--ref", str(ref), "--json", str(tmp_path / "o.json")]) == 0
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["bleu4.target"] == pytest.approx(100.0)
    assert 0 < report["bleu4.trajectory"] < 100
    assert report["yesno.accuracy"] == 50.0 and report["yesno.balanced_accuracy"] == 50.0


def test_eval_text_malformed_line_names_file_and_line(tmp_path: Path, capsys) -> None:
    pred = _write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "prediction": "yes"}])
    ref = tmp_path / "r.jsonl"
    ref.write_text('{"id": "1", "video_id": "a", "kind": "yesno", "references": ["Yes"]}\n{"id": 2\n')
    assert main(["eval", "text", "--pred", str(pred), "--ref", str(ref)]) == 1
    assert f"{ref}:2" in capsys.readouterr().err


def test_eval_frames_and_objects(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps({"v": [0.1, 0.9, 0.8, 0.2]}))
    (tmp_path / "l.json").write_text(json.dumps({"v": [0, 1, 1, 0]}))
    assert main(["eval", "frames", "--scores", str(tmp_path / "s.json"), "--labels", str(tmp_path / "l.json"),
                 "--json", str(tmp_path / "f.json")]) == 0
    assert json.loads((tmp_path / "f.json").read_text())["micro_auc"] == 100.0
    gt, det = tmp_path / "gt", tmp_path / "det"
    gt.mkdir(), det.mkdir()
    (gt / "01.txt").write_text("1, 0, 10, 10, 20, 20\n1, 1, 12, 10, 22, 20\n")
    (det / "01.txt").write_text("0, 10, 10, 20, 20, 0.9\n1, 12, 10, 22, 20, 0.8\n")
    assert main(["eval", "objects", "--gt-tracks", str(gt), "--detections", str(det), "--num-frames", "2",
                 "--json", str(tmp_path / "o.json")]) == 0
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["rbdc"] == pytest.approx(100.0) and report["tbdc"] == pytest.approx(100.0)


def test_eval_pixels_png_maps(tmp_path: Path) -> None:
    pred, gt = tmp_path / "pred" / "01", tmp_path / "gt" / "01"
    pred.mkdir(parents=True), gt.mkdir(parents=True)
    for i in range(3):
        mask = np.zeros((20, 30), np.uint8)
        mask[5:10, 5 + i : 12 + i] = 255
        cv2.imwrite(str(gt / f"{i:03d}.png"), mask)
        cv2.imwrite(str(pred / f"{i:03d}.png"), (mask // 2 + 20).astype(np.uint8))
    assert main(["eval", "pixels", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--json", str(tmp_path / "o.json")]) == 0
    report = json.loads((tmp_path / "o.json").read_text())
    for key in ("auroc", "ap", "aupro", "f1_max", "tao.auroc", "tao.aupro", "tao.f1"):
        assert key in report
    assert report["auroc"] == 100.0 and report["aupro"] == 100.0
