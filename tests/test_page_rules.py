"""What the page accepts and says, without a browser: the model allow-list, the limits text, and messages and
exports that name files as the user did (never the server's temporary paths)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from media_factory import write_video

from tvad_chat import models, ui
from tvad_chat.chat import ChatEngine, EngineConfig
from tvad_chat.errors import ConfigError, VideoError
from tvad_chat.pipeline import Analysis
from tvad_chat.report import write_report
from tvad_chat.stages.run import StageSettings
from tvad_chat.video import load_clip


def test_model_setting_accepts_only_the_allow_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(models.MODELS_DIR_ENV, raising=False)
    monkeypatch.delenv(models.ALLOW_HUB_ENV, raising=False)
    assert models.allowed_model_source(models.DEFAULT_MODEL) == models.DEFAULT_MODEL
    # Server folders, existing or not, readable or not, get the same answer: nothing about the server leaks.
    messages = set()
    for probe in ("/etc", "/root", "/no/such/dir", "../../etc", "~", "Qwen/Qwen2.5-VL-3B-Instruct"):
        with pytest.raises(ConfigError) as err:
            models.allowed_model_source(probe)
        messages.add(str(err.value).replace(repr(probe), "X"))
    assert len(messages) == 1 and "choose one of" in messages.pop()
    # A configured models folder offers its model folders by name; hub ids only when the server allows them.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    (tmp_path / "not_a_model").mkdir()
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path))
    assert "mine" in models.allowed_models() and "not_a_model" not in models.allowed_models()
    assert models.allowed_model_source("mine") == str(tmp_path / "mine")
    with pytest.raises(ConfigError):
        models.allowed_model_source(str(tmp_path / "mine"))  # by name, not by server path
    monkeypatch.setenv(models.ALLOW_HUB_ENV, "1")
    assert models.allowed_model_source("Qwen/Qwen2.5-VL-3B-Instruct") == "Qwen/Qwen2.5-VL-3B-Instruct"
    with pytest.raises(ConfigError):
        models.allowed_model_source("/etc")


def test_limits_are_stated_and_sizes_parsed() -> None:
    text = ui.limits_text(EngineConfig(max_duration_s=30 * 60))
    assert "30 min" in text and ui.MAX_UPLOAD_TEXT in text and "deleted" in text
    assert ui._size_bytes("200mb") == 200 * 1024**2 and ui._size_bytes("1.5 GB") == int(1.5 * 1024**3)
    with pytest.raises(ValueError, match="TVAD_MAX_UPLOAD"):
        ui._size_bytes("lots")


def test_messages_and_exports_carry_no_server_path(tmp_path: Path) -> None:
    """An upload lives at a server path like /tmp/gradio/<hash>/name: users only ever see `name`."""
    upload_dir = tmp_path / "gradio" / "3f9a0c1d2e"
    upload_dir.mkdir(parents=True)
    engine = ChatEngine(EngineConfig(answers="grounded", profile="none"))
    session = engine.new_session()
    broken = {"random.mp4": np.random.default_rng(0).bytes(5000), "notes.avi": b"a shopping list\n" * 40,
              "cut.mp4": (write_video(tmp_path / "ok.mp4", num_frames=20)).read_bytes()[:3000], "empty.mkv": b""}
    for name, data in broken.items():
        (upload_dir / name).write_bytes(data)
        with pytest.raises(VideoError) as err:
            engine.load_video(session, upload_dir / name)
        message = str(err.value)
        assert name in message and str(tmp_path) not in message and "Errno" not in message, message
    clip = load_clip(write_video(upload_dir / "walk.mp4", num_frames=12), num_frames=4)
    analysis = Analysis(clip=clip, model_frames_shape=(4, 56, 84), heatmaps=None, frame_scores=None,
                        judgement=None, score=None)
    report = write_report(analysis, tmp_path / "r.json", models.ModelInfo(models.DEFAULT_MODEL, True, "ahd+rae"),
                          source_name="walk.mp4")
    text = report.read_text()
    assert json.loads(text)["source"] == "walk.mp4" and str(tmp_path) not in text
    assert json.loads(text)["model"]["source"] == models.DEFAULT_MODEL


def test_stage_weights_are_named_without_server_paths(tmp_path: Path) -> None:
    weights = tmp_path / "secret" / "sam2.1_hiera_tiny.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"")
    assert ui._weights_name(str(weights)) == "sam2.1_hiera_tiny.pt"
    assert ui._weights_name("facebook/sam2.1-hiera-tiny") == "facebook/sam2.1-hiera-tiny"
    assert ui._weights_name(None) == "not configured"
    page = ui.build_app(ChatEngine(EngineConfig(answers="grounded", stages=StageSettings(sam2=str(weights)))),
                        examples=[])
    labels = [c.get("props", {}).get("label", "") for c in page.config["components"]]
    assert "SAM2 object masks (sam2.1_hiera_tiny.pt)" in labels and not any(str(tmp_path) in str(x) for x in labels)
