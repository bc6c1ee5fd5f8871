"""Chat sessions over analysed clips: one loaded model serving many users.

A :class:`Session` holds one user's clip analyses, the dialogue so far and the settings the user picked.
Every clip gets its scene analysis (tvad_chat.scene: every frame against the camera's profile), the single
source of truth for the page, the report and the default answers, which are composed from it
(tvad_chat.grounded: ``answers="grounded"``). With ``answers="model"`` the T-VAD model's
:class:`~tvad_chat.pipeline.Analysis` is made too (with the cached model state that makes follow-ups cheap),
the model answers with the scene evidence given as text, and a yes/no that disagrees with the scene
judgement is shown with both verdicts. A :class:`ChatEngine`
owns the loaded model(s) and serialises every model call behind one lock, so concurrent users queue for the
model, and each session only ever touches its own analysis and history. A session's settings reach the model
as arguments of its calls (``analyze(clip, extra_events=...)``); the shared model is never modified.

Exports and pictures of an analysis live in tvad_chat.report and tvad_chat.render; the page in tvad_chat.ui.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from prompts.loader import clean_events
from tvad_chat.errors import ConfigError, ProfileError
from tvad_chat.files import content_digest
from tvad_chat.grounded import Focus, GroundedAnswerer, QuestionReader
from tvad_chat.models import DEFAULT_MODEL, ModelInfo, load_model
from tvad_chat.pipeline import Analysis
from tvad_chat.render import SceneOverlayWriter
from tvad_chat.scene.analyze import Event, SceneAnalysis
from tvad_chat.scene.run import ProfileChoice, analyze_clip
from tvad_chat.stages.run import (
    StageResults,
    Stages,
    StageSettings,
    describe_categories,
    load_categories,
    load_stages,
    run_stages,
)
from tvad_chat.video import Clip, VideoLimits, load_clip

logger = logging.getLogger(__name__)

JUDGEMENT_QUESTION = "Is there an anomaly in this video?"  # the first question of every dialogue
MIN_FRAMES, MAX_FRAMES = 2, 64
MAX_EVENTS = 20  # anomaly categories one session may add
ANSWER_MODES = ("grounded", "model")

ProgressFn = Callable[[float, str], None]
StreamFn = Callable[[str], None]


class ChatModel(Protocol):
    """What the engine needs from a model: tvad_chat.pipeline.TVAD provides it (tests use a double)."""

    @property
    def variant(self) -> str: ...

    @property
    def vision_passes(self) -> int: ...

    def analyze(self, clip: Clip, extra_events: Sequence[str] = (), context: str | None = None) -> Analysis: ...

    def answer(self, analysis: Analysis, history: Sequence[dict[str, str]], question: str,
               stream: StreamFn | None = None, max_new_tokens: int | None = None) -> str: ...


@dataclass
class SceneResult:
    """What one clip's scene analysis made: shared by every session that loads the same content."""

    analysis: SceneAnalysis
    choice: ProfileChoice
    overlay: Path | None
    strip: np.ndarray | None
    # the overlay again with SAM2's masks as the heat's outline, per stage settings (made when first asked for)
    masked: dict[StageSettings, tuple[Path | None, np.ndarray | None]] = field(default_factory=dict)

    def files(self) -> list[Path]:
        return [p for p in (self.overlay, *(m[0] for m in self.masked.values())) if p is not None]


@dataclass
class EngineConfig:
    """Engine settings (CLI flags and the app's settings accordion map onto these)."""

    model: str = DEFAULT_MODEL  # model directory or hub id
    num_frames: int = 16  # frames sampled uniformly per clip
    fps: float | None = None  # alternatively: frames per second (overrides num_frames)
    extra_events: list[str] = field(default_factory=list)  # anomaly categories to look for
    max_new_tokens: int | None = None  # None: the model's own default
    device: str | None = None
    dtype: str | None = None
    load_in_4bit: bool = False
    answers: str = "grounded"  # grounded: composed from the scene analysis; model: the T-VAD model answers
    profile: str = "auto"  # scene profile: a folder, auto (matched by background) or none (uncalibrated)
    sensitivity: str | None = None  # operating point of the profile (None: its default)
    folder_fps: float | None = None  # frame rate of frame folders
    stages: StageSettings = field(default_factory=StageSettings.from_env)  # SAM2 / CLIP weights (tvad_chat.stages)
    max_sessions: int = 64  # least recently used sessions are dropped beyond this
    max_models: int = 2  # distinct model sources kept loaded at once
    max_scenes: int = 16  # scene analyses kept for clips loaded again (by content, profile setting and fps)
    max_file_bytes: int = 200 * 1024**2  # upload size limit
    max_duration_s: float = 30 * 60


def parse_events(value: Sequence[str] | str) -> list[str]:
    """'bicycle, car; skateboard' -> ['bicycle', 'car', 'skateboard'], validated by prompts.loader.clean_events."""
    events = clean_events(re.split(r"[,;\n]", value) if isinstance(value, str) else list(value))
    if len(events) > MAX_EVENTS:
        raise ConfigError(f"{len(events)} anomaly categories given: {MAX_EVENTS} at most")
    return events


@dataclass
class Session:
    """One user's state: the analysed clip, the dialogue and the settings they chose."""

    id: str
    model_source: str = DEFAULT_MODEL
    num_frames: int = 16
    fps: float | None = None
    extra_events: list[str] = field(default_factory=list)
    answers: str = "grounded"
    profile: str = "auto"
    sensitivity: str | None = None
    scene: SceneAnalysis | None = None  # the current clip's scene analysis (None when it could not be made)
    scene_note: str = ""  # which profile decided, or why there is no scene analysis
    clip_name: str = ""  # the clip's file name as the user gave it (never a server path)
    scene_overlay: Path | None = None  # the scene analysis's overlay mp4 (shared by sessions: copy it to serve it)
    scene_strip: np.ndarray | None = None  # its hottest moments side by side (RGB)
    show_time: float | None = None  # seconds: where the last answer asked the overlay to go ("show me")
    answerer: GroundedAnswerer | None = None
    focus: Focus = field(default_factory=Focus)  # the event "it" refers to in follow-ups
    analysis: Analysis | None = None  # the model's analysis of the current clip (answers="model" only)
    model: ChatModel | None = None  # the model that made `analysis` (follow-ups must use the same one)
    model_info: ModelInfo | None = None
    history: list[dict[str, str]] = field(default_factory=list)  # [{"role", "content"}], answers unstripped
    vision_passes: int = 0  # vision passes run for this session's clips
    stage_settings: StageSettings = field(default_factory=StageSettings)  # the stages' weights for its clips
    stages: StageResults | None = None  # what the stages found in the current clip (None: no stage asked for)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def reset(self) -> None:
        """Forget the clip and the dialogue (settings stay)."""
        with self.lock:
            self.analysis = None
            self.model = None
            self.scene = None
            self.scene_overlay = self.scene_strip = self.show_time = None
            self.answerer = None
            self.history = []
            self.focus = Focus()
            self.stages = None

    def clear_history(self) -> None:
        """Keep the clip analysis, start the dialogue over."""
        with self.lock:
            self.history = []
            self.focus = Focus()

    @property
    def loaded(self) -> bool:
        return self.scene_note != "" or self.analysis is not None

    @property
    def turns(self) -> list[tuple[str, str]]:
        """(question, answer) pairs for display, answers stripped."""
        return [(self.history[i]["content"], self.history[i + 1]["content"].strip())
                for i in range(0, len(self.history) - 1, 2)]


class ChatEngine:
    """Many sessions, one model per source, one lock around every model call."""

    def __init__(self, config: EngineConfig | None = None, model: ChatModel | None = None,
                 model_info: ModelInfo | None = None):
        self.config = config or EngineConfig()
        self._models: OrderedDict[str, tuple[ChatModel, ModelInfo]] = OrderedDict()
        if model is not None:  # an already loaded model serves the configured source
            info = model_info or ModelInfo(source=self.config.model, trained=True, variant=model.variant)
            self._models[self.config.model] = (model, info)
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._sessions_lock = threading.Lock()
        self._model_lock = threading.Lock()  # generation queue: one model call at a time
        self._load_lock = threading.Lock()
        self._waiting = 0
        self._stages: OrderedDict[StageSettings, Stages] = OrderedDict()  # loaded once per weights asked for
        # Loading the same clip again (another session, a new upload of it, other settings) reuses its scene
        # analysis: it depends only on the clip's content, the profile setting and the folder fps. Analyses
        # are never modified after they are made, so sessions share them.
        self._scenes: OrderedDict[tuple[str, str, float | None], SceneResult] = OrderedDict()
        self._scenes_lock = threading.Lock()
        self._scene_media = tempfile.TemporaryDirectory(prefix="tvad_scenes_")  # the cached analyses' overlays

    # ---------------------------------------------------------------- models
    def model(self, source: str | None = None) -> tuple[ChatModel, ModelInfo]:
        """The loaded model for ``source`` (loaded on first use; least recently used ones are dropped)."""
        key = (source or self.config.model).strip() or self.config.model
        with self._load_lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loaded = load_model(key, device=self.config.device, dtype=self.config.dtype,
                                load_in_4bit=self.config.load_in_4bit)
            self._models[key] = loaded
            while len(self._models) > max(1, self.config.max_models):
                dropped, _ = self._models.popitem(last=False)
                logger.info("unloaded model %s (sessions using it keep their reference)", dropped)
            return loaded

    @property
    def waiting(self) -> int:
        """Requests queued for the model right now."""
        return self._waiting

    @contextlib.contextmanager
    def _model_turn(self) -> Iterator[None]:
        """Hold the model for one call; ``waiting`` counts the callers queued meanwhile."""
        self._waiting += 1
        try:
            self._model_lock.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._model_lock.release()

    # ---------------------------------------------------------------- sessions
    def new_session(self, model: str | None = None, num_frames: int | None = None, fps: float | None = None,
                    extra_events: Sequence[str] | str | None = None) -> Session:
        """A session with the engine's settings, overridden by the ones given (validated as in ``configure``)."""
        session = Session(id=uuid.uuid4().hex, model_source=self.config.model, num_frames=self.config.num_frames,
                          fps=self.config.fps, extra_events=list(self.config.extra_events),
                          answers=self.config.answers, profile=self.config.profile,
                          sensitivity=self.config.sensitivity, stage_settings=self.config.stages)
        self.configure(session, model=model, num_frames=num_frames, fps=fps, extra_events=extra_events)
        with self._sessions_lock:
            self._sessions[session.id] = session
            while len(self._sessions) > max(1, self.config.max_sessions):
                self._sessions.popitem(last=False)
        return session

    def session(self, session_id: str | None) -> Session:
        """The session with this id, or a new one (ids from an old page load may have expired)."""
        with self._sessions_lock:
            found = self._sessions.get(session_id) if session_id else None
            if found is not None:
                self._sessions.move_to_end(found.id)
                return found
        return self.new_session()

    def close_session(self, session_id: str | None) -> None:
        with self._sessions_lock:
            self._sessions.pop(session_id or "", None)

    def configure(self, session: Session, model: str | None = None, num_frames: int | None = None,
                  fps: float | None = None, extra_events: Sequence[str] | str | None = None,
                  answers: str | None = None, profile: str | None = None, sam2: str | None = None,
                  clip: str | None = None) -> None:
        """Validate and store a session's settings (they apply to the next clip loaded); ``sam2`` and ``clip`` are the
        stages' weights (tvad_chat.stages; "" turns a stage off)."""
        if answers is not None:
            if answers not in ANSWER_MODES:
                raise ConfigError(f"answers must be one of {', '.join(ANSWER_MODES)}, got {answers!r}")
            session.answers = answers
        if profile is not None:
            session.profile = str(profile).strip() or "auto"
        if model is not None:
            model = str(model).strip()
            if not model:
                raise ConfigError("the model setting is empty: give a model directory or a hub id")
            session.model_source = model
        if num_frames is not None:
            n = int(num_frames)
            if not MIN_FRAMES <= n <= MAX_FRAMES:
                raise ConfigError(f"frames sampled must be between {MIN_FRAMES} and {MAX_FRAMES}, got {n}")
            session.num_frames = n
        if fps is not None:
            if not fps > 0:
                raise ConfigError(f"fps must be positive, got {fps}")
            session.fps = float(fps)
        if extra_events is not None:
            session.extra_events = parse_events(extra_events)
        if sam2 is not None or clip is not None:
            current = session.stage_settings
            session.stage_settings = StageSettings(
                current.sam2 if sam2 is None else sam2.strip() or None,
                current.clip if clip is None else clip.strip() or None, current.device)

    # ---------------------------------------------------------------- clips
    def set_sensitivity(self, session: Session, point: str) -> None:
        """Move the session to another operating point: events and answers are re-decided, nothing re-analysed."""
        with session.lock:
            if session.answerer is not None:
                session.answerer.set_point(point)
            elif session.scene is not None:
                session.scene.threshold(point)
            session.sensitivity = point

    def load_video(self, session: Session, video: str | Path, progress: ProgressFn | None = None) -> Analysis | None:
        """Analyse a clip for ``session`` (replaces its previous clip and dialogue): its scene analysis always,
        the model's analysis too with ``answers="model"`` (returned; None in grounded mode)."""
        if video is None or not str(video).strip():
            raise ConfigError("no video given: upload a clip or pick an example")
        progress = progress or (lambda _f, _d: None)
        with session.lock:
            # Decode first: a bad upload is refused before any model work.
            progress(0.05, "decoding and sampling frames")
            limits = VideoLimits(max_file_bytes=self.config.max_file_bytes, max_duration_s=self.config.max_duration_s)
            num = None if session.fps else session.num_frames
            clip = load_clip(video, num_frames=num, fps=session.fps, limits=limits,
                             folder_fps=self.config.folder_fps)
            if len(clip.frames) == 0:
                raise ConfigError("the clip has no frames to analyse")
            session.reset()
            session.clip_name = Path(video).name
            self._analyse_scene(session, video, clip.duration_s, progress)
            if session.answers == "grounded":
                progress(1.0, "done")
                return None
            progress(0.25, "loading the model")
            model, info = self.model(session.model_source)
            progress(0.35, "waiting for the model" if self._model_lock.locked() else "analysing the clip")
            with self._model_turn():
                progress(0.4, "analysing: vision pass, heatmaps, anomaly prompts")
                before = model.vision_passes
                context = None if session.answerer is None else session.answerer.evidence_text()
                analysis = model.analyze(clip, extra_events=session.extra_events, context=context)
                session.vision_passes += model.vision_passes - before
            session.analysis, session.model, session.model_info = analysis, model, info
            session.history = []
            progress(1.0, "done")
            return analysis

    def _scene_of(self, video: str | Path, profile: str, duration_s: float, overlay: bool) -> SceneResult:
        """The clip's scene analysis, made once per content; with ``overlay`` (grounded mode: the model mode shows
        the model's overlay) also its overlay mp4 and strip of hottest moments."""
        profile_key = content_digest(profile) if Path(profile).is_dir() else str(profile)  # a refitted profile
        key = (content_digest(video), profile_key, self.config.folder_fps)
        with self._scenes_lock:
            cached = self._scenes.get(key)
            if cached is not None and (cached.overlay is not None or not overlay):
                self._scenes.move_to_end(key)
                return cached
        writer = SceneOverlayWriter(Path(self._scene_media.name) / f"{uuid.uuid4().hex}.mp4") if overlay else None
        try:
            scene, choice = analyze_clip(video, profile, folder_fps=self.config.folder_fps, frame_sink=writer)
        finally:
            path = writer.close(duration_s) if writer is not None else None
        made = SceneResult(scene, choice, path, writer.strip() if writer is not None else None)
        with self._scenes_lock:
            self._scenes[key] = made
            while len(self._scenes) > max(0, self.config.max_scenes):
                _, dropped = self._scenes.popitem(last=False)
                for path in dropped.files():  # sessions showing them have their own copies
                    path.unlink(missing_ok=True)
        return made

    def _analyse_scene(self, session: Session, video: str | Path, duration_s: float, progress: ProgressFn) -> None:
        """The scene analysis of every frame; a clip too short to judge without a profile keeps the reason."""
        progress(0.1, "analysing every frame against the camera's scene profile")
        try:
            made = self._scene_of(video, session.profile, duration_s, overlay=session.answers == "grounded")
        except ProfileError as exc:
            session.scene_note = str(exc)
            return
        scene, choice = made.analysis, made.choice
        session.scene, session.scene_note = scene, choice.note
        session.scene_overlay, session.scene_strip = made.overlay, made.strip
        point = session.sensitivity if session.sensitivity in scene.thresholds else None

        def read_frame(index: int):
            return load_clip(video, frame_indices=[index], num_frames=None, folder_fps=self.config.folder_fps).frames[0]

        if session.stage_settings.enabled:
            session.stages = self._run_stages(session, video, scene, progress)
            if session.stages.mask_source == "SAM2" and made.overlay is not None:
                session.scene_overlay, session.scene_strip = self._masked_overlay(made, video, session, duration_s)
        stages = session.stages

        def looks_like(event: Event) -> str:
            return describe_categories(stages.event_categories(scene, event)) if stages is not None else ""

        session.answerer = GroundedAnswerer(scene, choice.note, point, read_frame, self._reader, looks_like)

    def _masked_overlay(self, made: SceneResult, video: str | Path, session: Session,
                        duration_s: float) -> tuple[Path | None, np.ndarray | None]:
        """The overlay with SAM2's masks as the heat's outline: the clip analysed again (the same analysis: it
        is deterministic; the heat is never kept), each frame's heat refined by the masks before it is drawn.
        Only with SAM2, whose own cost dwarfs a second pass."""
        settings, results = session.stage_settings, session.stages
        if settings not in made.masked:
            writer = SceneOverlayWriter(Path(self._scene_media.name) / f"{uuid.uuid4().hex}.mp4")

            def refined(index: int, time: float, frame: np.ndarray, heat: np.ndarray) -> None:
                writer(index, time, frame, results.heat(index, heat))

            try:
                analyze_clip(video, session.profile, folder_fps=self.config.folder_fps, frame_sink=refined)
            finally:
                path = writer.close(duration_s)
            made.masked[settings] = (path, writer.strip())
        return made.masked[settings]

    def stages(self, settings: StageSettings) -> Stages:
        """The stages of ``settings``, loaded on first use (weights that are missing become notes)."""
        with self._load_lock:
            if settings not in self._stages:
                self._stages[settings] = load_stages(settings)
                for note in self._stages[settings].notes:
                    logger.warning("%s", note)
            self._stages.move_to_end(settings)
            while len(self._stages) > max(1, self.config.max_models):
                self._stages.popitem(last=False)
            return self._stages[settings]

    def _run_stages(self, session: Session, video: str | Path, scene: SceneAnalysis,
                    progress: ProgressFn) -> StageResults:
        """SAM2 masks and CLIP categories of the clip's anomalous tracks (the heat is the outline without SAM2)."""
        def step(stage: str, done: int, total: int, seconds: float) -> None:
            progress(0.2, f"{stage}: {done}/{total} ({seconds:.1f} s)")

        with self._model_turn():  # the stages' models queue with the chat model
            return run_stages(scene, video, self.stages(session.stage_settings), None,
                              load_categories(session.extra_events), self.config.folder_fps, step)

    @property
    def _reader(self) -> QuestionReader:
        if not hasattr(self, "_question_reader"):
            self._question_reader = QuestionReader()
        return self._question_reader

    # ---------------------------------------------------------------- questions
    def ask(self, session: Session, question: str, stream: StreamFn | None = None,
            max_new_tokens: int | None = None) -> str:
        """Answer ``question`` about the session's clip; ``stream`` receives text chunks as they arrive."""
        question = (question or "").strip()
        if not question:
            raise ConfigError("the question is empty: type a question about the clip")
        with session.lock:
            if not session.loaded:
                raise ConfigError("no clip analysed yet: upload a video (or pick an example) first")
            if session.answers == "grounded":
                text = self._grounded_answer(session, question)
                if stream is not None:
                    stream(text)
            else:
                text = self._model_answer(session, question, stream, max_new_tokens)
            session.history += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
            return text.strip()

    def _grounded_answer(self, session: Session, question: str) -> str:
        if session.answerer is None:
            return f"I can't judge this clip: {session.scene_note}"
        answer = session.answerer.answer(question, session.focus)
        session.show_time = answer.show_time
        return answer.text

    def _model_answer(self, session: Session, question: str, stream: StreamFn | None,
                      max_new_tokens: int | None) -> str:
        """The model's answer (it read the scene evidence with its system prompt when the clip was analysed);
        a yes/no against the scene judgement says so."""
        if session.analysis is None or session.model is None:
            raise ConfigError("no clip analysed yet: upload a video (or pick an example) first")
        with self._model_turn():
            before = session.model.vision_passes
            text = session.model.answer(session.analysis, list(session.history), question, stream=stream,
                                        max_new_tokens=max_new_tokens or self.config.max_new_tokens)
            session.vision_passes += session.model.vision_passes - before
        if session.answerer is not None:
            disagreement = session.answerer.check_judgement(question, text)
            if disagreement:
                text = f"{text.rstrip()}\n\n{disagreement}"
                if stream is not None:
                    stream(f"\n\n{disagreement}")
        return text

    def ask_stream(self, session: Session, question: str, max_new_tokens: int | None = None) -> Iterator[str]:
        """Yield the growing answer text while the model generates (runs the model in a worker thread)."""
        chunks: queue.Queue[str | None] = queue.Queue()  # None: the worker is done
        answers: list[str] = []
        errors: list[BaseException] = []

        def work() -> None:
            try:
                answers.append(self.ask(session, question, stream=chunks.put, max_new_tokens=max_new_tokens))
            except BaseException as exc:  # re-raised in the consumer's thread
                errors.append(exc)
            finally:
                chunks.put(None)

        worker = threading.Thread(target=work, name=f"tvad-answer-{session.id[:8]}", daemon=True)
        worker.start()
        text = ""
        while (item := chunks.get()) is not None:
            text += item
            yield text
        worker.join()
        if errors:
            raise errors[0]
        if answers[0] != text:
            yield answers[0]
