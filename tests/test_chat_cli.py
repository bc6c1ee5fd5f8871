"""`tvad ask` and `tvad analyze` on a real clip with the default model (untrained tiny T-VAD without a checkpoint)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import pytest
from shared_data import DATA

from tvad_chat import chat, cli, models
from tvad_chat.commands import chat as chat_commands

ROOT = Path(__file__).resolve().parents[1]
needs_data = pytest.mark.shared_data("cuhk_avenue")
AVENUE = DATA / "cuhk_avenue" / "testing_videos" / "21.avi"


@pytest.fixture(scope="module", autouse=True)
def one_model_build():
    """Each CLI call would build the tiny model again; build it once for the module (the same real model)."""
    if (ROOT / models.DEFAULT_MODEL / "config.json").is_file():
        yield
        return
    model = models.build_untrained_model()
    original = models.build_untrained_model
    models.build_untrained_model = lambda *a, **k: model
    yield
    models.build_untrained_model = original


@needs_data
@pytest.mark.slow
def test_ask_with_follow_ups_json(capsys):
    code = cli.main(["ask", str(AVENUE), "Is there an anomaly in this video?", "--follow-up",
                     "What does the anomalous target look like?", "--follow-up", "When does it happen?",
                     "--frames", "8", "--max-new-tokens", "5", "--json", "--model", models.DEFAULT_MODEL])
    out = capsys.readouterr()
    assert code == 0, out.err
    record = json.loads(out.out)
    assert [d["question"] for d in record["dialogue"]] == [
        "Is there an anomaly in this video?", "What does the anomalous target look like?", "When does it happen?"]
    assert all(isinstance(d["answer"], str) for d in record["dialogue"])
    assert record["vision_passes"] == 1  # three questions, one vision pass
    assert isinstance(record["model_judgement"], bool) and 0.0 <= record["model_score"] <= 1.0
    assert record["answers"] == "model" and record["judgement"] in ("yes", "no")  # the scene analysis's verdict
    if not record["trained"]:
        assert "RANDOM weights" in out.err


@needs_data
def test_ask_streams_text(capsys):
    code = cli.main(["ask", str(AVENUE), "--frames", "4", "--max-new-tokens", "4"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.startswith(f"Q: {chat.JUDGEMENT_QUESTION}\nA: ")
    assert "decoding and sampling frames" in out.err and "Traceback" not in out.err


@needs_data
@pytest.mark.slow
def test_analyze_writes_report_overlay_and_plot(tmp_path, capsys):
    report, overlay, plot = tmp_path / "r.json", tmp_path / "o.mp4", tmp_path / "p.png"
    code = cli.main(["analyze", str(AVENUE), "--out", str(report), "--overlay", str(overlay), "--plot", str(plot),
                     "--frames", "6", "--events", "bicycle, skateboard", "--model", models.DEFAULT_MODEL])
    out = capsys.readouterr()
    assert code == 0, out.err
    data = json.loads(report.read_text())
    assert len(data["frame_scores"]) == len(data["sampled_frame_indices"]) == 6
    assert data["source"].endswith("21.avi") and data["duration_s"] > 0
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6
    assert plot.stat().st_size > 5000 and plot.read_bytes()[:4] == b"\x89PNG"
    assert "judgement:" in out.out


def test_user_errors_are_messages(tmp_path, capsys):
    assert cli.main(["ask", str(tmp_path / "missing.mp4"), "hi"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error:") and "does not exist" in err and "Traceback" not in err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage" * 50)
    assert cli.main(["analyze", str(bad), "--out", str(tmp_path / "r.json")]) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith("error:")
    assert not (tmp_path / "r.json").exists()
    with pytest.raises(SystemExit) as exc:
        cli.main(["ask", str(bad), "--frames", "1"])
    assert exc.value.code == 2
    # the CLI refuses what the engine would refuse (its bounds are written down twice to keep `--help` light)
    assert (chat_commands.MIN_FRAMES, chat_commands.MAX_FRAMES) == (chat.MIN_FRAMES, chat.MAX_FRAMES)


def test_commands_are_registered():
    out = subprocess.run([sys.executable, "-m", "tvad_chat.cli", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    for name in ("app", "ask", "analyze"):
        assert f"    {name}" in out.stdout
