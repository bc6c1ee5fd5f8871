"""Chat sessions over analysed clips: one loaded model serving many users.

A :class:`Session` holds one user's clip :class:`~tvad_chat.pipeline.Analysis` (with the cached model state
that makes follow-ups cheap), the dialogue so far and the settings the user picked. A :class:`ChatEngine`
owns the loaded model(s) and serialises every model call behind one lock, so concurrent users queue for the
model instead of corrupting its shared state, and each session only ever touches its own analysis and history.

The model object needs only ``analyze(clip) -> Analysis`` and
``answer(analysis, history, question, stream=callback) -> str`` (see :class:`ChatModel`); the engine works
with ``tvad_chat.pipeline.TVAD``. Exports (JSON report, heatmap-overlay mp4, score plot, frame strip) are
plain functions on an Analysis so the UI, the CLI and batch scripts share them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tvad_chat.errors import CheckpointError, ConfigError, TVADError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "checkpoints/tvad-tiny"
JUDGEMENT_QUESTION = "Is there an anomaly in this video?"
# Dialogue order of the paper's evaluation: judgement -> appearance -> trajectory/direction -> temporal anchors.
FOLLOW_UPS_ANOMALY = (
    "What does the anomalous target look like?",
    "How does the anomalous target move, and in which direction?",
    "When does the anomaly start and end?",
)
FOLLOW_UPS_NORMAL = (
    "What are the people in the scene doing?",
    "Is anyone moving much faster than the others?",
    "Is there any vehicle in the scene?",
)
INTERVAL_THRESHOLD = 0.5  # frame score at which a frame counts as abnormal for the marked interval
MIN_FRAMES, MAX_FRAMES = 2, 64


class ChatModel(Protocol):
    """What the engine needs from a model (tvad_chat.pipeline.TVAD provides it)."""

    vision_passes: int

    def analyze(self, clip: Any) -> Any: ...

    def answer(self, analysis: Any, history: Sequence[Any], question: str,
               stream: Callable[[str], Any] | None = None) -> str: ...


LIMITATIONS_FILE = "LIMITATIONS.txt"  # optional plain-text caveat shipped inside a checkpoint folder


@dataclass
class ModelInfo:
    """Where the loaded model came from and whether it was trained (the page says so plainly)."""

    source: str
    trained: bool
    variant: str
    note: str = ""


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
    max_sessions: int = 64  # least recently used sessions are dropped beyond this
    max_models: int = 2  # distinct model sources kept loaded at once
    max_file_bytes: int = 200 * 1024**2  # upload size limit
    max_duration_s: float = 30 * 60


# --------------------------------------------------------------------------- model loading


def build_untrained_model(seed: int = 0, max_new_tokens: int = 32) -> Any:
    """The real T-VAD pipeline (tiny Qwen2.5-VL + AHD + RAE) with random weights, built offline.

    Used when no trained checkpoint exists, so the app and CLI still run end to end; its answers are noise
    and every caller must say so (ModelInfo.trained is False).
    """
    import torch

    from tvad_chat.backbone import Backbone
    from tvad_chat.pipeline import TVAD, TVADConfig

    backbone = Backbone.from_tiny(seed=seed)
    ahd = rae = None
    try:
        from heads.ahd import AHDConfig, AnomalyHeatmapDecoder
        from heads.rae import RAEConfig, RegionAwareAnomalyEncoder
    except ImportError:  # heads not built yet: the backbone-only variant still answers
        logger.warning("heads.ahd / heads.rae unavailable: untrained model without heatmaps")
    else:
        depth = backbone.vision_depth
        taps = sorted({max(1, round(depth * k / 4)) for k in (0.25, 1, 2, 4)})
        torch.manual_seed(seed)
        ahd = AnomalyHeatmapDecoder(AHDConfig(vision_dim=backbone.vision_dim, text_dim=backbone.text_dim,
                                              tap_layers=taps))
        rae = RegionAwareAnomalyEncoder(RAEConfig(text_dim=backbone.text_dim))
    return TVAD(backbone, ahd=ahd, rae=rae, config=TVADConfig(max_pixels=224 * 336, max_new_tokens=max_new_tokens))


def load_model(source: str = DEFAULT_MODEL, device: str | None = None, dtype: str | None = None,
               load_in_4bit: bool = False) -> tuple[Any, ModelInfo]:
    """Load T-VAD from a directory or hub id; the missing default checkpoint falls back to an untrained tiny model."""
    from tvad_chat.pipeline import TVAD

    source = (source or DEFAULT_MODEL).strip()
    path = Path(source).expanduser()
    default_path = Path(DEFAULT_MODEL)
    is_default = path == default_path or path.resolve() == (Path(__file__).resolve().parents[1] / DEFAULT_MODEL)
    if is_default and not (path / "config.json").is_file():
        repo_default = Path(__file__).resolve().parents[1] / DEFAULT_MODEL
        if (repo_default / "config.json").is_file():
            path, source = repo_default, str(repo_default)
        else:
            logger.warning("no trained checkpoint at %s: building an untrained tiny model", DEFAULT_MODEL)
            model = build_untrained_model()
            return model, ModelInfo(
                source="tiny (built offline)", trained=False, variant=model.variant,
                note=(f"No trained checkpoint at {DEFAULT_MODEL}: this is the tiny model with RANDOM weights. "
                      "Its answers, heatmaps and scores are noise; train one (`tvad train`) or set a model "
                      "directory in Settings."),
            )
    try:
        model = TVAD.from_pretrained(source, dtype=dtype, device=device, load_in_4bit=load_in_4bit)
    except TVADError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the model {source!r}: {exc}") from exc
    # A checkpoint may carry a short statement of what it cannot do; the page and CLI show it.
    limits_file = Path(source) / LIMITATIONS_FILE
    note = " ".join(limits_file.read_text(encoding="utf-8").split()) if limits_file.is_file() else ""
    return model, ModelInfo(source=source, trained=True, variant=model.variant, note=note)


# --------------------------------------------------------------------------- sessions


@dataclass
class Session:
    """One user's state: the analysed clip, the dialogue and the settings they chose."""

    id: str
    model_source: str = DEFAULT_MODEL
    num_frames: int = 16
    fps: float | None = None
    extra_events: list[str] = field(default_factory=list)
    analysis: Any = None  # tvad_chat.pipeline.Analysis of the current clip
    model: Any = None  # the model that made `analysis` (follow-ups must use the same one)
    model_info: ModelInfo | None = None
    video: Path | None = None
    history: list[dict[str, str]] = field(default_factory=list)  # [{"role", "content"}], answers unstripped
    vision_passes: int = 0  # vision passes run for this session's clips
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def reset(self) -> None:
        """Forget the clip and the dialogue (settings stay)."""
        with self.lock:
            self.analysis = None
            self.model = None
            self.video = None
            self.history = []

    def clear_history(self) -> None:
        """Keep the clip analysis, start the dialogue over."""
        with self.lock:
            self.history = []

    @property
    def turns(self) -> list[tuple[str, str]]:
        """(question, answer) pairs for display, answers stripped."""
        pairs = []
        for i in range(0, len(self.history) - 1, 2):
            pairs.append((self.history[i]["content"], self.history[i + 1]["content"].strip()))
        return pairs


ProgressFn = Callable[[float, str], Any]


class ChatEngine:
    """Many sessions, one model per source, one lock around every model call."""

    def __init__(self, config: EngineConfig | None = None, model: Any = None, model_info: ModelInfo | None = None):
        self.config = config or EngineConfig()
        self._models: OrderedDict[str, tuple[Any, ModelInfo]] = OrderedDict()
        if model is not None:
            info = model_info or ModelInfo(source=self.config.model, trained=True,
                                           variant=str(getattr(model, "variant", "?")))
            self._models[self.config.model] = (model, info)
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._sessions_lock = threading.Lock()
        self._model_lock = threading.Lock()  # generation queue: one model call at a time
        self._load_lock = threading.Lock()
        self._waiting = 0

    # ---------------------------------------------------------------- models
    def model(self, source: str | None = None) -> tuple[Any, ModelInfo]:
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
        self._waiting += 1
        try:
            with self._model_lock:
                self._waiting -= 1
                yield
        except BaseException:
            raise

    # ---------------------------------------------------------------- sessions
    def new_session(self, **settings: Any) -> Session:
        session = Session(id=uuid.uuid4().hex, model_source=self.config.model, num_frames=self.config.num_frames,
                          fps=self.config.fps, extra_events=list(self.config.extra_events))
        self.configure(session, **settings)
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
                found.last_used = time.time()
                return found
        return self.new_session()

    def close_session(self, session_id: str | None) -> None:
        with self._sessions_lock:
            self._sessions.pop(session_id or "", None)

    @property
    def num_sessions(self) -> int:
        return len(self._sessions)

    def configure(self, session: Session, model: str | None = None, num_frames: int | None = None,
                  fps: float | None = None, extra_events: Sequence[str] | str | None = None) -> None:
        """Validate and store a session's settings (they apply to the next clip loaded)."""
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

    # ---------------------------------------------------------------- clips
    def load_video(self, session: Session, video: str | Path, progress: ProgressFn | None = None) -> Any:
        """Decode, sample and analyse a clip for ``session`` (replaces its previous clip and dialogue)."""
        from tvad_chat.video import VideoLimits, load_clip

        if video is None or not str(video).strip():
            raise ConfigError("no video given: upload a clip or pick an example")
        progress = progress or (lambda _f, _d: None)
        with session.lock:
            # Decode first: a bad upload is refused before any model work.
            progress(0.05, "decoding and sampling frames")
            limits = VideoLimits(max_file_bytes=self.config.max_file_bytes, max_duration_s=self.config.max_duration_s)
            num = None if session.fps else session.num_frames
            clip = load_clip(video, num_frames=num, fps=session.fps, limits=limits)
            if len(clip.frames) == 0:
                raise ConfigError("the clip has no frames to analyse")
            progress(0.25, "loading the model")
            model, info = self.model(session.model_source)
            progress(0.35, "waiting for the model" if self._model_lock.locked() else "analysing the clip")
            with self._model_turn():
                progress(0.4, "analysing: vision pass, heatmaps, anomaly prompts")
                before = model.vision_passes
                with _events(model, session.extra_events):
                    analysis = model.analyze(clip)
                session.vision_passes += model.vision_passes - before
            session.analysis, session.model, session.model_info = analysis, model, info
            session.video = Path(video)
            session.history = []
            progress(1.0, "done")
            return analysis

    # ---------------------------------------------------------------- questions
    def ask(self, session: Session, question: str, stream: Callable[[str], Any] | None = None,
            max_new_tokens: int | None = None) -> str:
        """Answer ``question`` about the session's clip; ``stream`` receives text chunks as they arrive."""
        question = (question or "").strip()
        if not question:
            raise ConfigError("the question is empty: type a question about the clip")
        with session.lock:
            if session.analysis is None or session.model is None:
                raise ConfigError("no clip analysed yet: upload a video (or pick an example) first")
            kwargs: dict[str, Any] = {}
            limit = max_new_tokens or self.config.max_new_tokens
            if limit:
                kwargs["max_new_tokens"] = int(limit)
            with self._model_turn():
                before = session.model.vision_passes
                text = session.model.answer(session.analysis, list(session.history), question, stream=stream,
                                            **kwargs)
                session.vision_passes += session.model.vision_passes - before
            session.history += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
            session.last_used = time.time()
            return text.strip()

    def ask_stream(self, session: Session, question: str, max_new_tokens: int | None = None) -> Iterator[str]:
        """Yield the growing answer text while the model generates (runs the model in a worker thread)."""
        chunks: queue.Queue = queue.Queue()
        done = object()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["text"] = self.ask(session, question, stream=chunks.put, max_new_tokens=max_new_tokens)
            except BaseException as exc:  # re-raised in the consumer's thread
                outcome["error"] = exc
            finally:
                chunks.put(done)

        worker = threading.Thread(target=work, name=f"tvad-answer-{session.id[:8]}", daemon=True)
        worker.start()
        text = ""
        while True:
            item = chunks.get()
            if item is done:
                break
            text += str(item)
            yield text
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        final = outcome.get("text", text.strip())
        if final != text:
            yield final

    def reset(self, session: Session) -> None:
        session.reset()


@contextlib.contextmanager
def _events(model: Any, extra_events: Sequence[str]) -> Iterator[None]:
    """Analyse with the session's extra anomaly categories (the caller holds the model lock)."""
    events = list(extra_events or [])
    current = list(getattr(getattr(model, "config", None), "extra_events", []) or [])
    if not events or events == current or not hasattr(model, "prompts"):
        yield
        return
    from prompts.loader import load_prompts

    saved = model.prompts
    model.prompts = load_prompts(extra_events=current + [e for e in events if e not in current])
    try:
        yield
    finally:
        model.prompts = saved


def parse_events(value: Sequence[str] | str) -> list[str]:
    """'bicycle, car; skateboard' -> ['bicycle', 'car', 'skateboard'] (deduplicated, order kept)."""
    items = value.replace(";", ",").replace("\n", ",").split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        text = " ".join(str(item).split())
        if not text:
            continue
        if len(text) > 60:
            raise ConfigError(f"anomaly category {text[:30]!r}... is too long: use a few words per category")
        if text.lower() not in (o.lower() for o in out):
            out.append(text)
    if len(out) > 20:
        raise ConfigError(f"{len(out)} anomaly categories given: 20 at most")
    return out


# --------------------------------------------------------------------------- what the UI shows


def answered_judgement(history: Sequence[dict[str, str]]) -> bool | None:
    """What the model last answered to the judgement question in this conversation (None: not asked, unclear)."""
    from tvad_chat.eval.text import NO, YES, normalize_yes_no

    verdict = None
    for question, answer in zip(history, history[1:]):
        if (question.get("role") == "user" and answer.get("role") == "assistant"
                and question["content"].strip().lower() == JUDGEMENT_QUESTION.lower()):
            label = normalize_yes_no(answer["content"])
            verdict = True if label == YES else False if label == NO else verdict
    return verdict


def suggest_follow_ups(analysis: Any, history: Sequence[dict[str, str]] = ()) -> list[str]:
    """Follow-up questions worth asking next (appearance, trajectory, when), minus those already asked.

    They follow the model's own answer to the judgement question once it has given one (a "No" is not followed
    by questions about "the anomalous target"), else the heatmap judgement.
    """
    asked = {t["content"].strip().lower() for t in history if t.get("role") == "user"}
    if analysis is None:
        return [JUDGEMENT_QUESTION]
    anomalous = answered_judgement(history)
    if anomalous is None:
        anomalous = getattr(analysis, "judgement", None)
    pool = ([JUDGEMENT_QUESTION] + list(FOLLOW_UPS_NORMAL if anomalous is False else FOLLOW_UPS_ANOMALY))
    return [q for q in pool if q.lower() not in asked][:3]


def _as_dict(item: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    if isinstance(item, dict):
        return dict(item)
    return {k: v for k, v in vars(item).items() if not k.startswith("_")} if hasattr(item, "__dict__") else {
        "value": item}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return round(v, 6) if np.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    return value


def frame_times(analysis: Any) -> np.ndarray:
    """Seconds of each sampled frame."""
    return np.asarray(analysis.clip.timestamps, dtype=np.float64)


def anomaly_intervals(analysis: Any, threshold: float = INTERVAL_THRESHOLD) -> list[tuple[float, float]]:
    """Time spans (seconds) where the per-frame anomaly score is at or above ``threshold``."""
    scores = getattr(analysis, "frame_scores", None)
    if scores is None:
        return []
    scores = np.asarray(scores, dtype=np.float64)
    times = frame_times(analysis)
    spans: list[tuple[float, float]] = []
    start = None
    for i, s in enumerate(scores):
        if s >= threshold and start is None:
            start = i
        if (s < threshold or i == len(scores) - 1) and start is not None:
            end = i if s >= threshold else i - 1
            spans.append((float(times[start]), float(times[end])))
            start = None
    return spans


def target_rows(analysis: Any) -> list[dict[str, Any]]:
    """One row per tracked target: first/last time, entry, exit, direction, speed (from the evidence timeline)."""
    rows = []
    for i, entry in enumerate(getattr(analysis, "timeline", None) or []):
        d = _as_dict(entry)
        rows.append({
            "target": d.get("target_id", d.get("track_id", d.get("id", i + 1))),
            "first_s": d.get("first_time", d.get("first_s", d.get("start_s"))),
            "last_s": d.get("last_time", d.get("last_s", d.get("end_s"))),
            "entry": d.get("entry", d.get("entry_side")),
            "exit": d.get("exit", d.get("exit_side")),
            "direction": d.get("direction"),
            "speed": d.get("speed_class", d.get("speed")),  # slow | normal | fast | stationary
            "speed_diag_per_s": d.get("speed") if "speed_class" in d else None,  # frame diagonals per second
            "summary": d.get("summary"),
            "raw": d,
        })
    return rows


def build_report(session_or_analysis: Any, model_info: ModelInfo | None = None) -> dict[str, Any]:
    """The analysis as a JSON-able dict (what `tvad analyze --out` writes and the app exports)."""
    if isinstance(session_or_analysis, Session):
        session = session_or_analysis
        analysis, model_info = session.analysis, model_info or session.model_info
        dialogue = [{"question": q, "answer": a} for q, a in session.turns]
    else:
        analysis, dialogue = session_or_analysis, []
    if analysis is None:
        raise ConfigError("nothing to export yet: analyse a clip first")
    clip = analysis.clip
    scores = getattr(analysis, "frame_scores", None)
    heat = getattr(analysis, "heatmaps", None)
    return _jsonable({
        "source": str(getattr(clip, "source", "")),
        "duration_s": getattr(clip, "duration_s", None),
        "source_fps": getattr(clip, "source_fps", None),
        "source_size": list(getattr(clip, "source_size", ()) or ()),
        "sampled_frame_indices": np.asarray(clip.frame_indices).tolist(),
        "sampled_timestamps_s": frame_times(analysis).tolist(),
        "model": dataclasses.asdict(model_info) if model_info else None,
        "judgement": getattr(analysis, "judgement", None),
        "score": getattr(analysis, "score", None),
        "frame_scores": None if scores is None else np.asarray(scores).tolist(),
        "anomaly_intervals_s": [list(s) for s in anomaly_intervals(analysis)],
        "interval_threshold": INTERVAL_THRESHOLD,
        "heatmap_shape": None if heat is None else list(np.asarray(heat).shape),
        "heatmap_max": None if heat is None else float(np.asarray(heat).max()),
        "targets": [{k: v for k, v in r.items() if k != "raw"} for r in target_rows(analysis)],
        "tracks": [_as_dict(t) for t in getattr(analysis, "tracks", None) or []],
        "timeline": [_as_dict(t) for t in getattr(analysis, "timeline", None) or []],
        "timings_s": dict(getattr(analysis, "timings", {}) or {}),
        "dialogue": dialogue,
    })


def write_report(session_or_analysis: Any, path: str | Path, model_info: ModelInfo | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_report(session_or_analysis, model_info), indent=2))
    return path


# --------------------------------------------------------------------------- rendering


def frame_heatmaps(analysis: Any) -> np.ndarray | None:
    """(T, H, W) float heatmap for every sampled frame at display size (tvad_chat.evidence conventions)."""
    from tvad_chat.evidence import upsample_heatmaps

    heat = getattr(analysis, "heatmaps", None)
    if heat is None:
        return None
    frames = analysis.clip.frames
    return upsample_heatmaps(np.asarray(heat), len(frames), (int(frames.shape[2]), int(frames.shape[1])))


def overlay_frames(analysis: Any, alpha: float = 0.5) -> np.ndarray:
    """Sampled frames with the anomaly heatmap blended in and tracked boxes drawn; uint8 (T, H, W, 3)."""
    import cv2

    from tvad_chat.evidence import render_overlay

    frames = np.asarray(analysis.clip.frames)
    heat = frame_heatmaps(analysis)
    if heat is None:
        return frames.copy()
    out = np.ascontiguousarray(render_overlay(frames, heat, alpha=alpha))
    for track in getattr(analysis, "tracks", None) or []:
        for frame, box in zip(getattr(track, "frames", []), getattr(track, "boxes", []), strict=False):
            if not 0 <= int(frame) < len(out):
                continue
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out[int(frame)], (x0, y0), (x1, y1), (255, 255, 255), 1)
            cv2.putText(out[int(frame)], str(track.id), (x0 + 2, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_video(frames: np.ndarray, path: str | Path, fps: float = 10.0) -> Path:
    """Encode RGB frames as H.264 mp4 (yuv420p, browser-playable) with PyAV."""
    import av

    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or len(frames) == 0:
        raise ConfigError("no frames to encode")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # yuv420p needs even sides
    from fractions import Fraction

    rate = Fraction(max(1.0, float(fps))).limit_denominator(1000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast", "movflags": "+faststart"}
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def playback_fps(analysis: Any) -> float:
    """Frame rate that plays the sampled frames at the clip's real pace (at least 2 fps so it is watchable)."""
    times = frame_times(analysis)
    if len(times) >= 2:
        step = float(np.median(np.diff(times)))
        if step > 0:
            return float(min(30.0, max(2.0, 1.0 / step)))
    return 2.0


def write_overlay_video(analysis: Any, path: str | Path) -> Path:
    return write_video(overlay_frames(analysis), path, fps=playback_fps(analysis))


def frame_strip(analysis: Any, count: int = 8, height: int = 120) -> np.ndarray:
    """A row of overlay frames (evenly spaced, the most anomalous one included) with their times; uint8 RGB."""
    import cv2

    frames = overlay_frames(analysis)
    t = len(frames)
    picks = set(np.linspace(0, t - 1, num=min(count, t)).round().astype(int).tolist())
    scores = getattr(analysis, "frame_scores", None)
    if scores is not None and len(scores) == t:
        peak = int(np.argmax(scores))
        if peak not in picks:
            picks.discard(min(picks, key=lambda p: abs(p - peak)))
            picks.add(peak)
    times = frame_times(analysis)
    tiles = []
    for i in sorted(picks):
        f = frames[i]
        w = max(1, int(round(f.shape[1] * height / f.shape[0])))
        tile = cv2.resize(f, (w, height), interpolation=cv2.INTER_AREA).copy()
        label = f"{times[i]:.1f}s" + (f"  {float(scores[i]):.2f}" if scores is not None and len(scores) == t else "")
        cv2.rectangle(tile, (0, 0), (min(w, 6 + 7 * len(label)), 18), (0, 0, 0), -1)
        cv2.putText(tile, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
        tiles.append(np.full((height, 3, 3), 255, dtype=np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def score_figure(analysis: Any, model_info: ModelInfo | None = None):
    """Matplotlib figure: per-frame anomaly score over time, detected interval(s) shaded."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 2.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    times = frame_times(analysis)
    scores = getattr(analysis, "frame_scores", None)
    if scores is None:
        ax.text(0.5, 0.5, "this model has no heatmap head: no per-frame scores", ha="center", va="center",
                transform=ax.transAxes)
    else:
        scores = np.asarray(scores, dtype=np.float64)
        ax.plot(times, scores, marker="o", ms=3, lw=1.5, color="#c0392b", label="anomaly score")
        ax.axhline(INTERVAL_THRESHOLD, color="grey", lw=0.8, ls="--")
        for k, (a, b) in enumerate(anomaly_intervals(analysis)):
            pad = 0.5 / playback_fps(analysis)
            ax.axvspan(a - pad, b + pad, color="#f5b041", alpha=0.35, label="detected" if k == 0 else None)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    title = "Per-frame anomaly score"
    if model_info is not None and not model_info.trained:
        title += " (UNTRAINED model: noise)"
    ax.set_title(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------- example clips

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def default_cache_dir() -> Path:
    import os

    return Path(os.environ.get("TVAD_CACHE", Path.home() / ".cache" / "tvad_chat")).expanduser()


def build_example_clips(data_dir: str | Path = SHARED_DATA, cache_dir: str | Path | None = None) -> list[Path]:
    """Encode the real test clips found under ``data_dir`` to small browser-playable mp4s (once, cached).

    Returns [] when the data folder is absent, so the app simply shows no examples.
    """
    from tvad_chat.video import load_clip

    data_dir = Path(data_dir)
    out_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "examples"
    wanted = [  # (source, folder fps, output name); Ped2 is filmed at 10 fps
        (data_dir / "ucsd_ped2" / "testing" / "frames" / "01", 10.0, "ped2_test01_bicycle.mp4"),
        (data_dir / "ucsd_ped2" / "testing" / "frames" / "04", 10.0, "ped2_test04_cart.mp4"),
        (data_dir / "cuhk_avenue" / "testing_videos" / "21.avi", None, "avenue_test21.mp4"),
    ]
    clips = []
    for source, fps, name in wanted:
        target = out_dir / name
        if not source.exists():
            continue
        if not target.is_file():
            try:
                clip = load_clip(source, num_frames=None, folder_fps=fps)
                tmp = target.with_suffix(".part.mp4")
                write_video(clip.frames, tmp, fps=fps or clip.source_fps)
                tmp.replace(target)
            except (TVADError, OSError) as exc:
                logger.warning("example %s skipped: %s", source, exc)
                continue
        clips.append(target)
    return clips
