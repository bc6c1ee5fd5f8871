"""ChatEngine on the real T-VAD pipeline (tiny model, random weights) and real clips from ../shared/data,
with the report, the rendering and the page's follow-up suggestions of its analyses."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest
from media_factory import first_frames, write_video
from shared_data import DATA

from tvad_chat import chat, models, render, report, ui
from tvad_chat.errors import CheckpointError, ConfigError, VideoError
from tvad_chat.scene.run import analyze_clip

needs_data = pytest.mark.shared_data("ucsd_ped2", "cuhk_avenue")


# The examples' first frames: the model samples 8 of them, and model mode also analyses every frame for the
# scene evidence it reads, which these tests of the engine (vision pass, sessions, streaming, export) do not need
# whole clips for.
EXAMPLE_FRAMES = 32


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """The page's example clips cut to their first EXAMPLE_FRAMES frames, by name."""
    folder = tmp_path_factory.mktemp("examples")
    (folder / "short").mkdir()
    short = {}
    for path in ui.build_example_clips(DATA, folder):
        short[path.stem] = first_frames(path, EXAMPLE_FRAMES, folder / "short" / path.name)
    return short


@pytest.fixture(scope="module")
def engine() -> chat.ChatEngine:
    eng = chat.ChatEngine(chat.EngineConfig(num_frames=8, max_new_tokens=6, answers="model"))
    model, info = eng.model()
    if (models.REPO_ROOT / models.DEFAULT_MODEL / "config.json").is_file():
        assert info.trained is True and info.source.endswith(models.DEFAULT_MODEL)  # the shipped checkpoint
    else:
        assert info.trained is False and "RANDOM weights" in info.note  # no checkpoint: said plainly
    assert model.variant == "ahd+rae"
    return eng


def test_missing_default_checkpoint_falls_back_to_a_labelled_untrained_model(monkeypatch) -> None:
    monkeypatch.setattr(models, "DEFAULT_MODEL", "checkpoints/no-such-model")
    model, info = models.load_model("checkpoints/no-such-model")
    assert info.trained is False and "RANDOM weights" in info.note
    assert model.variant == "ahd+rae"


@needs_data
def test_follow_up_reuses_the_vision_pass(engine, clips):
    model, _ = engine.model()
    session = engine.new_session()
    before = model.vision_passes
    analysis = engine.load_video(session, clips["ped2_test01_bicycle"])
    assert model.vision_passes == before + 1 and session.vision_passes == 1
    assert analysis.frame_scores.shape == (8,) and len(session.history) == 0
    prefix_len = analysis.state.clip_cache.prefix.ids.shape[1]
    first = engine.ask(session, chat.JUDGEMENT_QUESTION)
    # The clip prefix (system, video tokens, anomaly prompts) is cached: only the question is run.
    assert analysis.last_generation.new_tokens_processed < prefix_len / 2
    for q in ui.FOLLOW_UPS_ANOMALY[:2]:
        engine.ask(session, q)
        assert analysis.last_generation.new_tokens_processed < prefix_len / 2
    assert model.vision_passes == before + 1 and session.vision_passes == 1  # counted, not timed
    assert [t["content"] for t in session.history[::2]] == [chat.JUDGEMENT_QUESTION, *ui.FOLLOW_UPS_ANOMALY[:2]]
    assert session.turns[0] == (chat.JUDGEMENT_QUESTION, first)
    # A new clip is a new vision pass and a fresh dialogue.
    engine.load_video(session, clips["ped2_test04_cart"])
    assert model.vision_passes == before + 2 and session.history == []


@needs_data
def test_streamed_chunks_add_up_to_the_answer(engine, clips):
    session = engine.new_session()
    engine.load_video(session, clips["ped2_test01_bicycle"])
    chunks: list[str] = []
    answer = engine.ask(session, chat.JUDGEMENT_QUESTION, stream=chunks.append)
    # Chunks arrive at word boundaries (transformers' TextStreamer); together they are the answer.
    assert chunks and "".join(chunks).strip() == answer
    partials = list(engine.ask_stream(session, ui.FOLLOW_UPS_ANOMALY[0]))
    assert all(b.startswith(a) for a, b in zip(partials, partials[1:], strict=False))
    assert partials[-1].strip() == session.history[-1]["content"].strip()


@needs_data
@pytest.mark.slow
def test_two_sessions_at_once_get_their_own_answers(engine, clips):
    a_clip, b_clip = clips["ped2_test01_bicycle"], clips["avenue_test21"]
    qa, qb = chat.JUDGEMENT_QUESTION, "What does the anomalous target look like?"
    # References, one session at a time.
    ref = {}
    for name, clip, q in (("a", a_clip, qa), ("b", b_clip, qb)):
        s = engine.new_session(num_frames=4)
        engine.load_video(s, clip)
        ref[name] = (engine.ask(s, q), engine.ask(s, "When does it happen?"))
    assert ref["a"] != ref["b"], "the two references coincide: this test could not tell sessions apart"
    sa, sb = engine.new_session(num_frames=4), engine.new_session(num_frames=4)
    results: dict[str, tuple[str, str]] = {}
    errors: list[BaseException] = []

    def user(name, session, clip, q):
        try:
            engine.load_video(session, clip)
            results[name] = (engine.ask(session, q), engine.ask(session, "When does it happen?"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=user, args=("a", sa, a_clip, qa)),
               threading.Thread(target=user, args=("b", sb, b_clip, qb))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert results == ref
    assert sa.analysis.clip.source.name == a_clip.name and sb.analysis.clip.source.name == b_clip.name
    assert [t["content"] for t in sa.history[::2]] == [qa, "When does it happen?"]
    assert [t["content"] for t in sb.history[::2]] == [qb, "When does it happen?"]


def test_engine_lock_serialises_model_calls():
    """Test double: a model that records overlapping calls (the real model cannot tell us)."""

    class Recorder:
        variant = "recorder"
        vision_passes = 0

        def __init__(self):
            self.active = self.most = 0
            self.guard = threading.Lock()

        def _enter(self):
            with self.guard:
                self.active += 1
                self.most = max(self.most, self.active)
            time.sleep(0.02)
            with self.guard:
                self.active -= 1

        def analyze(self, clip, extra_events=(), context=None):
            self._enter()
            self.vision_passes += 1
            return SimpleNamespace(clip=clip, judgement=None)

        def answer(self, analysis, history, question, stream=None, **kw):
            self._enter()
            return f"{analysis.clip.source}:{question}:{len(history)}"

    rec = Recorder()
    eng = chat.ChatEngine(chat.EngineConfig(answers="model"), model=rec)
    sessions = [eng.new_session() for _ in range(4)]
    for i, s in enumerate(sessions):
        s.analysis, s.model = SimpleNamespace(clip=SimpleNamespace(source=f"clip{i}")), rec

    def work(s):
        for k in range(3):
            eng.ask(s, f"q{k}")

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rec.most == 1
    for i, s in enumerate(sessions):
        assert [t["content"] for t in s.history[1::2]] == [f"clip{i}:q{k}:{2 * k}" for k in range(3)]


def test_session_categories_reach_the_model_as_an_argument(tmp_path):
    """Test double: the shared model gets each session's categories with the call, and keeps no state of them."""

    class Model:
        variant = "double"
        vision_passes = 0

        def __init__(self):
            self.calls: list[list[str]] = []

        def analyze(self, clip, extra_events=(), context=None):
            self.calls.append(list(extra_events))
            return SimpleNamespace(clip=clip, judgement=None)

        def answer(self, analysis, history, question, stream=None, max_new_tokens=None):
            return "ok"

    model = Model()
    eng = chat.ChatEngine(chat.EngineConfig(num_frames=4, answers="model"), model=model)
    video = write_video(tmp_path / "clip.mp4", num_frames=8)
    plain, custom = eng.new_session(), eng.new_session(extra_events="bicycle, cart")
    eng.load_video(custom, video)
    eng.load_video(plain, video)
    assert model.calls == [["bicycle", "cart"], []]
    assert vars(model) == {"calls": model.calls}  # nothing else was set on the shared model


@needs_data
def test_broken_upload_then_good_upload(engine, clips, tmp_path):
    session = engine.new_session()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoError):
        engine.load_video(session, broken)
    assert session.analysis is None
    with pytest.raises(ConfigError, match="no clip analysed"):
        engine.ask(session, chat.JUDGEMENT_QUESTION)
    engine.load_video(session, clips["avenue_test21"])
    assert engine.ask(session, chat.JUDGEMENT_QUESTION) == session.history[-1]["content"].strip()
    with pytest.raises(ConfigError, match="empty"):
        engine.ask(session, "   ")


@needs_data
def test_reset_and_new_conversation(engine, clips):
    session = engine.new_session()
    engine.load_video(session, clips["ped2_test04_cart"])
    engine.ask(session, chat.JUDGEMENT_QUESTION)
    session.clear_history()
    assert session.history == [] and session.analysis is not None
    session.reset()
    assert session.analysis is None
    with pytest.raises(ConfigError):
        engine.ask(session, chat.JUDGEMENT_QUESTION)


@needs_data
def test_report_and_overlay_export(engine, clips, tmp_path):
    session = engine.new_session()
    analysis = engine.load_video(session, clips["ped2_test01_bicycle"])
    engine.ask(session, chat.JUDGEMENT_QUESTION)
    exported = json.loads(report.write_report(analysis, tmp_path / "r.json", session.model_info,
                                              session.turns).read_text())
    assert exported["model"]["trained"] is session.model_info.trained  # the report says which model answered
    assert len(exported["frame_scores"]) == len(exported["sampled_timestamps_s"]) == 8
    assert exported["judgement"] == bool(analysis.judgement)
    assert exported["dialogue"][0]["question"] == chat.JUDGEMENT_QUESTION
    assert len(exported["targets"]) == len(analysis.timeline)
    scores = np.asarray(exported["frame_scores"])
    times = np.asarray(exported["sampled_timestamps_s"])
    for a, b in exported["anomaly_intervals_s"]:  # every frame inside a span is above the threshold
        inside = (times >= a) & (times <= b)
        assert inside.any() and (scores[inside] >= report.INTERVAL_THRESHOLD).all()
    outside = np.ones(len(times), bool)
    for a, b in exported["anomaly_intervals_s"]:
        outside &= ~((times >= a) & (times <= b))
    assert (scores[outside] < report.INTERVAL_THRESHOLD).all()

    out = render.write_overlay_video(analysis, tmp_path / "o.mp4")
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    frames = analysis.clip.frames
    assert len(decoded) == len(frames)
    assert decoded[0].shape == (frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2, 3)
    overlay = render.overlay_frames(analysis)
    # Lossy H.264, but close to what we rendered, and the rendering differs from the raw frames.
    assert np.abs(decoded[3].astype(int) - overlay[3, : decoded[3].shape[0], : decoded[3].shape[1]]).mean() < 8
    # ... and it is the evidence renderer's blend of this analysis' heatmaps (boxes drawn on top), whatever
    # the model saw: hot pixels are coloured, so the overlay differs from the frames there.
    from tvad_chat.evidence import render_overlay

    heat = render.display_heatmaps(analysis)
    assert np.abs(overlay.astype(int) - render_overlay(frames, heat, alpha=0.5)).mean() < 3
    hot = heat > 0.2
    if hot.any():  # a model whose maps stay cold everywhere leaves the frames as they are
        assert np.abs(overlay.astype(int) - frames).sum(-1)[hot].mean() > 5


def test_anomaly_intervals_by_hand():
    analysis = SimpleNamespace(frame_scores=np.array([0.1, 0.6, 0.7, 0.2, 0.5, 0.9]),
                               clip=SimpleNamespace(timestamps=np.arange(6) * 0.5))
    assert report.anomaly_intervals(analysis) == [(0.5, 1.0), (2.0, 2.5)]
    assert report.anomaly_intervals(analysis, threshold=0.95) == []
    analysis.frame_scores = None
    assert report.anomaly_intervals(analysis) == []


def test_settings_are_validated_per_session():
    eng = chat.ChatEngine(chat.EngineConfig(answers="model"))
    a, b = eng.new_session(), eng.new_session()
    eng.configure(a, num_frames=24, extra_events="bicycle; cart,  Bicycle\nskate board")
    assert a.num_frames == 24 and a.extra_events == ["bicycle", "cart", "skate board"]
    assert b.num_frames == 16 and b.extra_events == []
    with pytest.raises(ConfigError, match="between"):
        eng.configure(a, num_frames=500)
    with pytest.raises(ConfigError, match="empty"):
        eng.configure(a, model="  ")
    # One validation of anomaly categories (prompts.loader's): up to 80 characters, no braces, 20 at most.
    eng.configure(a, extra_events=["x" * 80])
    assert a.extra_events == ["x" * 80]
    for bad in (["x" * 81], ["a {event} b"], [f"event {i}" for i in range(21)]):
        with pytest.raises(ConfigError):
            eng.configure(a, extra_events=bad)
    assert a.extra_events == ["x" * 80]  # a refused setting leaves the last good one
    assert eng.session(a.id) is a and eng.session("expired") is not a
    eng.close_session(a.id)
    assert eng.session(a.id) is not a


def test_follow_up_suggestions_skip_what_was_asked():
    yes = SimpleNamespace(judgement=True)
    first = ui.suggest_follow_ups(yes)
    assert first[0] == chat.JUDGEMENT_QUESTION and len(first) == 3
    history = [{"role": "user", "content": chat.JUDGEMENT_QUESTION}, {"role": "assistant", "content": "Yes"}]
    assert ui.suggest_follow_ups(yes, history) == list(ui.FOLLOW_UPS_ANOMALY)
    # once the model has answered the judgement, the suggestions follow its answer, not the heatmap judgement
    assert ui.suggest_follow_ups(SimpleNamespace(judgement=False), history) == list(ui.FOLLOW_UPS_ANOMALY)
    said_no = [{"role": "user", "content": chat.JUDGEMENT_QUESTION},
               {"role": "assistant", "content": "No, nothing unusual happens in this video."}]
    assert ui.suggest_follow_ups(yes, said_no) == list(ui.FOLLOW_UPS_NORMAL)
    other = [{"role": "user", "content": "What is in the video?"}, {"role": "assistant", "content": "No idea."}]
    assert ui.suggest_follow_ups(SimpleNamespace(judgement=False), other)[:1] == [chat.JUDGEMENT_QUESTION]
    assert ui.suggest_follow_ups(SimpleNamespace(judgement=False), other)[1:] == list(ui.FOLLOW_UPS_NORMAL)[:2]


@needs_data
@pytest.mark.slow
def test_session_categories_change_the_heatmaps_only_for_that_session(engine, clips):
    model, _ = engine.model()
    prompts_before = model.prompts
    plain, custom = engine.new_session(num_frames=4), engine.new_session(num_frames=4, extra_events="bicycle, cart")
    a = engine.load_video(plain, clips["ped2_test04_cart"])
    b = engine.load_video(custom, clips["ped2_test04_cart"])
    assert model.prompts is prompts_before  # the shared model is left as it was
    assert a.heatmaps.shape == b.heatmaps.shape and not np.allclose(a.heatmaps, b.heatmaps)
    c = engine.load_video(plain, clips["ped2_test04_cart"])
    np.testing.assert_allclose(c.heatmaps, a.heatmaps, atol=1e-6)


@pytest.mark.slow
def test_model_directory_setting_loads_a_saved_checkpoint(engine, tmp_path):
    model, _ = engine.model()
    model.save_pretrained(tmp_path / "ckpt")
    loaded, info = models.load_model(str(tmp_path / "ckpt"))
    assert info.trained is True and info.source == str(tmp_path / "ckpt") and loaded.variant == model.variant
    with pytest.raises(CheckpointError):
        models.load_model(str(tmp_path / "nowhere"))


def test_checkpoint_limitations_are_shown(tmp_path) -> None:
    """A LIMITATIONS.txt inside a checkpoint folder reaches ModelInfo.note (the page and CLI show it)."""
    from tvad_chat.models import LIMITATIONS_FILE, build_untrained_model, load_model

    model = build_untrained_model()
    model.save_pretrained(tmp_path / "ckpt")
    _, info = load_model(str(tmp_path / "ckpt"))
    assert info.trained and info.note == ""
    (tmp_path / "ckpt" / LIMITATIONS_FILE).write_text("Toy model:\n  answers are constant.\n")
    _, info = load_model(str(tmp_path / "ckpt"))
    assert info.note == "Toy model: answers are constant."


@pytest.mark.shared_data("ucsd_ped2")
def test_a_clip_loaded_again_reuses_its_scene_analysis(tmp_path, monkeypatch):
    """Same content under another path (a second upload, another session): one analysis; changed content: a new one."""
    made = []

    def counting(*args, **kwargs):
        made.append(args[0])
        return analyze_clip(*args, **kwargs)

    monkeypatch.setattr(chat, "analyze_clip", counting)
    frames = sorted((DATA / "ucsd_ped2" / "testing" / "frames" / "01").iterdir())[:40]
    first, second = tmp_path / "upload1" / "01", tmp_path / "upload2" / "01"
    for folder in (first, second):
        folder.mkdir(parents=True)
        for frame in frames:
            shutil.copy(frame, folder / frame.name)
    engine = chat.ChatEngine(chat.EngineConfig(answers="grounded", profile="auto", folder_fps=10.0))
    a, b = engine.new_session(), engine.new_session()
    engine.load_video(a, first)
    engine.load_video(b, second)
    assert made == [first] and a.scene is b.scene and a.scene_note == b.scene_note
    assert "ucsd_ped2" in a.scene_note
    engine.set_sensitivity(b, "0.1/min")  # a session's sensitivity does not reach the shared analysis
    assert a.answerer.point != b.answerer.point and a.scene.default_point == "1/min"
    image = cv2.imread(str(second / frames[-1].name))
    cv2.imwrite(str(second / frames[-1].name), 255 - image)
    engine.load_video(b, second)
    assert made == [first, second] and a.scene is not b.scene
    engine.load_video(a, first)
    assert len(made) == 2  # the first content is still cached
