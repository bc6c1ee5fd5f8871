"""T-VAD Chat web page (Gradio). UI only: every model call goes through tvad_chat.chat.ChatEngine.

Upload a clip (or pick an example), ask "Is there an anomaly?", see where (heatmap overlay, per-frame score
plot, evidence per target) and keep asking: follow-ups reuse the clip's cached analysis.
Host and port come from TVAD_HOST / TVAD_PORT (default 127.0.0.1:7860); TVAD_MODEL picks the model.
`make run` (app.py) and `tvad app` both start :func:`main`.
"""

from __future__ import annotations

import atexit
import html
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder as gradio_upload_folder

from tvad_chat.chat import JUDGEMENT_QUESTION, MAX_FRAMES, MIN_FRAMES, ChatEngine, EngineConfig, Session
from tvad_chat.errors import TVADError
from tvad_chat.eval.text import NO, YES, normalize_yes_no
from tvad_chat.files import atomic_output, atomic_write_text
from tvad_chat.models import DEFAULT_MODEL, allowed_model_source, allowed_models
from tvad_chat.motion import SPEED_UNIT, SPEED_UNIT_TEXT
from tvad_chat.pipeline import Analysis
from tvad_chat.render import (
    browser_playable,
    display_copy,
    frame_strip,
    scene_score_figure,
    score_figure,
    write_overlay_video,
    write_video,
)
from tvad_chat.report import anomaly_intervals, scene_report, target_rows, write_report
from tvad_chat.scene.events import TARGET_RATES
from tvad_chat.video import load_clip

logger = logging.getLogger(__name__)

FOLLOW_UPS_GROUNDED_EVENT = ("When does it happen?", "How does it move?", "What does it look like?",
                             "Why is it unusual?")
FOLLOW_UPS_GROUNDED_NONE = ("How many objects were tracked?", "What happens at 0:05?")
SENSITIVITIES = tuple(name for name, _ in TARGET_RATES)  # a profile's operating points, most sensitive first
EMPTY_VIEWS = (None, None, None, "", None, None)  # overlay, plot, strip, evidence, sensitivity, overlay position
ANSWERS = os.environ.get("TVAD_ANSWERS", "grounded")  # grounded: from the scene analysis; model: the T-VAD model

# Limits and retention (README lists these variables); the page states them above the upload.
MAX_UPLOAD_TEXT = os.environ.get("TVAD_MAX_UPLOAD", "200mb")  # largest upload
MAX_DURATION_MIN = float(os.environ.get("TVAD_MAX_DURATION_MIN", "30"))  # longest clip
RETENTION_S = int(float(os.environ.get("TVAD_RETENTION_MIN", "60")) * 60)  # an unused session's files go after this
CONCURRENCY = int(os.environ.get("TVAD_CONCURRENCY", "2"))  # sessions worked on at once
NUM_SUGGESTIONS = 3
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # the real test footage beside the checkout

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

CSS = """
#status .prose { font-size: 0.95em; }
.warn-untrained { background: #fdecea; border-left: 4px solid #c0392b; padding: 6px 10px; }
.warn-limited { background: #fff6e0; border-left: 4px solid #d68910; padding: 6px 10px; }
"""


# --------------------------------------------------------------------------- follow-up suggestions


def answered_judgement(history: Sequence[dict[str, str]]) -> bool | None:
    """What the model last answered to the judgement question in this conversation (None: not asked, unclear)."""
    verdict = None
    for question, answer in zip(history, history[1:]):
        if (question["role"] == "user" and answer["role"] == "assistant"
                and question["content"].strip().lower() == JUDGEMENT_QUESTION.lower()):
            label = normalize_yes_no(answer["content"])
            verdict = True if label == YES else False if label == NO else verdict
    return verdict


def suggest_follow_ups(analysis: Analysis | None, history: Sequence[dict[str, str]] = ()) -> list[str]:
    """Follow-up questions worth asking next (appearance, trajectory, when), minus those already asked.

    They follow the model's own answer to the judgement question once it has given one (a "No" is not followed
    by questions about "the anomalous target"), else the heatmap judgement.
    """
    if analysis is None:
        return [JUDGEMENT_QUESTION]
    asked = {t["content"].strip().lower() for t in history if t["role"] == "user"}
    anomalous = answered_judgement(history)
    if anomalous is None:
        anomalous = analysis.judgement
    pool = [JUDGEMENT_QUESTION, *(FOLLOW_UPS_NORMAL if anomalous is False else FOLLOW_UPS_ANOMALY)]
    return [q for q in pool if q.lower() not in asked][:3]


# --------------------------------------------------------------------------- example clips


def default_cache_dir() -> Path:
    """Where the page keeps files it makes once (TVAD_CACHE, default ~/.cache/tvad_chat)."""
    return Path(os.environ.get("TVAD_CACHE", Path.home() / ".cache" / "tvad_chat")).expanduser()


def build_example_clips(data_dir: str | Path = SHARED_DATA, cache_dir: str | Path | None = None) -> list[Path]:
    """Encode the real test clips found under ``data_dir`` to small browser-playable mp4s (once, cached).

    Returns [] when the data folder is absent, so the page simply shows no examples.
    """
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
                with atomic_output(target) as tmp:
                    write_video(clip.frames, tmp, fps=fps or clip.source_fps)
            except (TVADError, OSError) as exc:
                logger.warning("example %s skipped: %s", source, exc)
                continue
        clips.append(target)
    return clips


# --------------------------------------------------------------------------- page pieces


def _message(exc: BaseException, doing: str) -> str:
    """A plain message for the page: ours verbatim, anything else without internals (logged in full)."""
    if isinstance(exc, TVADError):
        return f"**Could not {doing}:** {exc}"
    logger.exception("unexpected error while trying to %s", doing)
    return (f"**Could not {doing}:** an internal error occurred ({type(exc).__name__}). "
            "The page still works: try another clip or question.")


def _html(text: str) -> str:
    """Plain text (with `code` spans and **bold**, as our messages write them) as HTML."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def _model_banner(engine: ChatEngine, source: str | None = None, answers: str | None = None) -> str:
    """The model in use, as HTML: a red box for an untrained model, an amber one for a stated caveat; in
    grounded mode, what the answers come from (no model is loaded)."""
    if (answers or engine.config.answers) == "grounded":
        return ("<div>Answers are composed from the scene analysis of every frame: the camera's scene profile "
                "(matched by the clip's background) or, with no profile of that camera, the clip compared with "
                "itself (uncalibrated). Every fact shown comes from that analysis.</div>")
    try:
        _, info = engine.model(source)
    except Exception as exc:  # noqa: BLE001 - shown as text, the page stays up
        return f"<div class='warn-untrained'>⚠ {_html(_message(exc, 'load the model'))}</div>"
    if not info.trained:
        return f"<div class='warn-untrained'>⚠ <b>Untrained model.</b> {_html(info.note)}</div>"
    name = f"<code>{html.escape(info.source)}</code> ({html.escape(info.variant)})"
    if info.note:
        return f"<div class='warn-limited'>⚠ <b>Model {name}:</b> {_html(info.note)}</div>"
    return f"<div>Model: {name}</div>"


def _evidence_markdown(analysis: Analysis) -> str:
    """The verdict, the detected intervals and the target table, as paragraphs of Markdown."""
    verdict = {True: "**anomaly**", False: "**no anomaly**", None: "no judgement (no heatmap head)"}
    parts = [f"Heatmap judgement: {verdict[analysis.judgement]}"
             + (f" (score {analysis.score:.2f})" if analysis.score is not None else "")]
    spans = anomaly_intervals(analysis)
    if spans:
        parts.append("Detected interval(s): " + ", ".join(f"{a:.1f}–{b:.1f} s" for a, b in spans))
    rows = target_rows(analysis)
    if not rows:
        return "\n\n".join([*parts, "No tracked target."])
    table = ["| target | first (s) | last (s) | entry | exit | direction | speed |", "|---|---|---|---|---|---|---|"]
    table += [f"| {r.target} | {r.first_s:.1f} | {r.last_s:.1f} | {r.entry} | {r.exit} | {r.direction} "
              f"| {r.speed} ({r.speed_value:.2f} {SPEED_UNIT}) |" for r in rows]
    return "\n\n".join([*parts, "\n".join(table), f"Speed in {SPEED_UNIT_TEXT}"])


def grounded_follow_ups(session: Session) -> list[str]:
    """Follow-ups the grounded answerer can answer for this clip: about the event when there is one."""
    asked = {t["content"].strip().lower() for t in session.history if t["role"] == "user"}
    pool = [JUDGEMENT_QUESTION, *(FOLLOW_UPS_GROUNDED_EVENT if session.answerer and session.answerer.events
                                  else FOLLOW_UPS_GROUNDED_NONE)]
    return [q for q in pool if q.lower() not in asked][:3]


def _suggestion_updates(session: Session | None) -> list[Any]:
    if session is None:
        items = [JUDGEMENT_QUESTION]
    elif session.analysis is None and session.answerer is not None:
        items = grounded_follow_ups(session)
    else:
        items = suggest_follow_ups(session.analysis, session.history)
    items = items + [""] * (NUM_SUGGESTIONS - len(items))
    return [gr.update(value=q, visible=bool(q)) for q in items[:NUM_SUGGESTIONS]]


def _chat_messages(session: Session) -> list[dict[str, str]]:
    out = []
    for q, a in session.turns:
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return out


@dataclass
class _Jobs:
    """One page session's work, done in order by one worker at a time: clips to analyse, questions to answer."""

    pending: deque[tuple[str, str]] = field(default_factory=deque)  # ("clip", path) | ("question", text)
    running: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    files: set[Path] = field(default_factory=set)  # the user's uploads, deleted with the session
    preview: str | None = None  # what the clip preview shows

    def questions(self) -> list[str]:
        with self.lock:
            return [value for kind, value in self.pending if kind == "question"]


def _chat_view(session: Session, jobs: _Jobs, streaming: tuple[str, str] | None = None) -> list[dict[str, str]]:
    """The dialogue so far, the answer streaming now and the questions waiting their turn (in order)."""
    shown = _chat_messages(session)
    if streaming is not None:
        shown += [{"role": "user", "content": streaming[0]}, {"role": "assistant", "content": streaming[1]}]
    return shown + [{"role": "user", "content": q} for q in jobs.questions()]


def limits_text(config: EngineConfig) -> str:
    """What the page accepts and keeps, stated before the upload."""
    return (f"Clips up to **{config.max_duration_s / 60:g} min** and **{MAX_UPLOAD_TEXT}** (mp4, avi, mkv, mov, "
            f"webm... anything FFmpeg reads). Your uploads and results are deleted when you close the page, or "
            f"after {RETENTION_S / 60:g} min.")


def build_app(engine: ChatEngine, examples: list[Path] | None = None) -> gr.Blocks:
    """The page, serving ``engine``; ``examples`` default to :func:`build_example_clips`.

    Each page session has one worker at a time that takes its jobs in order (a clip to analyse, questions to
    answer), so questions sent in quick succession or during an analysis are answered in order, after it. Files
    the page makes for a session live in one folder inside Gradio's file cache (served from there, no copies)
    and are deleted, with the session's uploads, when the session ends (page closed, or RETENTION_S unused).
    """
    work = Path(tempfile.mkdtemp(prefix="tvad_chat_app_", dir=_cache_root()))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    if examples is None:
        try:
            examples = build_example_clips()
        except Exception:  # noqa: BLE001 - examples are optional
            logger.exception("could not prepare the example clips")
            examples = []
    example_names = {p.name for p in examples}
    jobs_by_session: dict[str, _Jobs] = {}
    browser_sessions: dict[str, str] = {}  # Gradio's session hash -> our session id
    registry = threading.Lock()

    def jobs_of(session_id: str) -> _Jobs:
        with registry:
            return jobs_by_session.setdefault(session_id, _Jobs())

    def session_of(session_id: str | None, request: gr.Request | None) -> Session:
        session = engine.session(session_id)
        if request is not None and request.session_hash:
            with registry:
                browser_sessions[request.session_hash] = session.id
        return session

    def end_session(session_id: str | None) -> None:
        """The session's clip and arrays released, its files and uploads deleted (nothing stays downloadable)."""
        if not session_id:
            return
        with registry:
            jobs = jobs_by_session.pop(session_id, None)
        engine.session(session_id).reset()
        engine.close_session(session_id)
        shutil.rmtree(work / session_id, ignore_errors=True)
        for upload in jobs.files if jobs is not None else ():
            upload.unlink(missing_ok=True)
        logger.info("session %s ended: its files are deleted", session_id[:8])

    def on_unload(request: gr.Request) -> None:
        with registry:
            session_id = browser_sessions.pop(request.session_hash, None)
        end_session(session_id)

    with gr.Blocks(title="T-VAD Chat", delete_cache=(min(600, RETENTION_S), RETENTION_S)) as demo:
        sid = gr.State(None, time_to_live=RETENTION_S, delete_callback=end_session)
        gr.Markdown("# T-VAD Chat\nUpload a surveillance clip and ask *Is there an anomaly?* — see where it is "
                    "(heatmap, score over time, tracked targets) and keep asking follow-ups.")
        banner = gr.HTML(lambda: _model_banner(engine), elem_id="model-banner")
        with gr.Row():
            with gr.Column(scale=5):
                gr.Markdown(limits_text(engine.config), elem_id="limits")
                upload = gr.File(label="Clip (video file)", file_count="single", type="filepath", height=110,
                                 elem_id="upload")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[upload], label="Example clips (real test data)",
                                example_labels=[_example_label(p) for p in examples])
                preview = gr.Video(label="Clip preview", interactive=False, height=260, elem_id="preview")
                status = gr.Markdown("Upload a clip to start.", elem_id="status")
                with gr.Accordion("Settings", open=False):
                    model_box = gr.Textbox(value=engine.config.model, label="Model (one of: "
                                           + ", ".join(allowed_models(engine.config.model)) + ")",
                                           elem_id="model-source")
                    frames = gr.Slider(MIN_FRAMES, MAX_FRAMES, value=engine.config.num_frames, step=2,
                                       label="Frames sampled per clip")
                    events = gr.Textbox(value=", ".join(engine.config.extra_events), label="Anomaly categories "
                                        "to look for (comma separated, added to the built-in ones)",
                                        placeholder="e.g. bicycle, skateboard, cart")
                    answers_mode = gr.Radio(["grounded", "model"], value=engine.config.answers,
                                            label="Answers: grounded (composed from the scene analysis) or "
                                                  "model (the T-VAD model above answers, given the evidence)")
                    # The stages' weights are the server's (`tvad app --sam2/--clip`): the page only turns them on or
                    # off, as it offers only allowed models (no server path can be typed in).
                    offered = engine.config.stages
                    use_sam2 = gr.Checkbox(value=bool(offered.sam2), visible=bool(offered.sam2),
                                           label=f"SAM2 object masks ({_weights_name(offered.sam2)})")
                    use_clip = gr.Checkbox(value=bool(offered.clip), visible=bool(offered.clip),
                                           label=f"Name the anomaly with CLIP ({_weights_name(offered.clip)})")
                    apply = gr.Button("Apply (re-analyses the current clip)")
            with gr.Column(scale=6):
                chat = gr.Chatbot(label="Chat", height=360, elem_id="chat")
                with gr.Row():
                    question = gr.Textbox(value=JUDGEMENT_QUESTION, show_label=False, scale=5,
                                          placeholder="Ask about the clip", elem_id="question")
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                    sent = gr.Textbox(visible=False)  # the question just sent, on its way to add_question
                with gr.Row():
                    suggestions = [gr.Button(visible=False, size="sm", elem_classes=["suggestion"])
                                   for _ in range(NUM_SUGGESTIONS)]
                reset = gr.Button("New conversation", size="sm")
        with gr.Row():
            overlay = gr.Video(label="Heatmap overlay (the clip's timeline)", interactive=False, height=260,
                               elem_id="overlay")
            plot = gr.Plot(label="Per-frame anomaly score", show_label=False, elem_id="score-plot")
            sensitivity = gr.Radio(list(SENSITIVITIES), value=None, elem_id="sensitivity",
                                   label="Sensitivity: false alarms per minute of normal footage (the camera's, "
                                         "or the clip's own when uncalibrated); events and answers are re-decided, "
                                         "the clip is not re-analysed")
        with gr.Row():
            strip = gr.Image(label="Frames with heatmap", show_label=False, interactive=False, elem_id="strip",
                             height=150, scale=6)
            # "show me" answers set it, and so can the user: the overlay jumps there
            show_at = gr.Number(label="Overlay at (s)", value=None, minimum=0, elem_id="show-at", scale=1)
        evidence = gr.Markdown(elem_id="evidence")
        with gr.Row():
            export_json = gr.Button("Export JSON report")
            export_mp4 = gr.Button("Export overlay mp4")
            export_file = gr.File(label="Export", interactive=False, height=80, elem_id="export-file")

        views = [overlay, plot, strip, evidence, sensitivity, show_at]  # show_at last: answers move it alone
        worked = [sid, status, chat, preview, *views, *suggestions]
        keep = [gr.update()] * len(views)

        # ------------------------------------------------------------ handlers
        def add_clip(path, session_id, request: gr.Request):
            """The upload (or example, or clearing) queued for the session's worker; answers immediately."""
            session = session_of(session_id, request)
            jobs = jobs_of(session.id)
            with jobs.lock:
                jobs.pending = deque(job for job in jobs.pending if job[0] != "clip")  # the newest clip wins
                jobs.pending.append(("clip", path or ""))
                if path and Path(path).name not in example_names:
                    jobs.files.add(Path(path))
            text = "Upload a clip to start." if not path else f"**{Path(path).name}** queued for analysis…"
            return [session.id, text]

        def add_question(text, session_id, request: gr.Request):
            """The question queued for the session's worker."""
            session = session_of(session_id, request)
            jobs = jobs_of(session.id)
            text = (text or "").strip()
            if not text:
                return [session.id, gr.update(), "Type a question first."]
            with jobs.lock:
                jobs.pending.append(("question", text))
                analysing = any(kind == "clip" for kind, _ in jobs.pending) or jobs.running
            note = ("Your question will be answered when the clip's analysis is done." if analysing
                    else "Question queued.")
            return [session.id, _chat_view(session, jobs), note]

        def work_jobs(session_id, progress=gr.Progress()):
            """The session's worker: every queued job in order (returns at once if another worker runs)."""
            session = engine.session(session_id)
            jobs = jobs_of(session.id)
            with jobs.lock:
                if jobs.running:
                    yield [session.id, *[gr.update()] * (len(worked) - 1)]
                    return
                jobs.running = True
            try:
                while True:
                    with jobs.lock:
                        if not jobs.pending:
                            jobs.running = False
                            break
                        kind, value = jobs.pending.popleft()
                    if kind == "clip":
                        yield from analyse(session, jobs, value, progress)
                    else:
                        yield from answer(session, jobs, value)
            finally:
                with jobs.lock:
                    jobs.running = False
            yield [session.id, gr.update(), _chat_view(session, jobs), gr.update(), *keep,
                   *_suggestion_updates(session)]

        def analyse(session: Session, jobs: _Jobs, path: str, progress):
            if not path:
                session.reset()
                jobs.preview = None
                yield [session.id, "Upload a clip to start.", [], None, *EMPTY_VIEWS, *_suggestion_updates(None)]
                return
            name = Path(path).name
            waiting = len(jobs.questions())
            note = f" ({waiting} question(s) will be answered after it)" if waiting else ""
            yield [session.id, f"Analysing **{name}**…{note}", _chat_view(session, jobs), gr.update(), *keep,
                   *[gr.update()] * NUM_SUGGESTIONS]
            out = work / session.id
            try:
                out.mkdir(parents=True, exist_ok=True)
                jobs.preview = path if browser_playable(path) else str(
                    display_copy(path, out / f"preview_{len(list(out.glob('preview_*.mp4')))}.mp4"))
                yield [session.id, f"Analysing **{name}**…{note}", gr.update(), jobs.preview, *keep,
                       *[gr.update()] * NUM_SUGGESTIONS]
                analysis = engine.load_video(session, path, progress=lambda f, d: progress(f, desc=d))
            except Exception as exc:  # noqa: BLE001 - every failure becomes a message; the page keeps working
                session.reset()
                jobs.preview = None
                yield [session.id, "⚠ " + _message(exc, "analyse this clip"), _chat_view(session, jobs), None,
                       *EMPTY_VIEWS, *_suggestion_updates(None)]
                return
            yield [session.id, _analysed_text(session, analysis, name), _chat_view(session, jobs), gr.update(),
                   *_views(analysis, session, out), *[gr.update()] * NUM_SUGGESTIONS]

        def answer(session: Session, jobs: _Jobs, text: str):
            if engine.waiting:
                yield [session.id, f"Waiting for {engine.waiting} other request(s)…",
                       _chat_view(session, jobs, (text, "")), gr.update(), *keep, *[gr.update()] * NUM_SUGGESTIONS]
            try:
                for partial in engine.ask_stream(session, text):
                    yield [session.id, "Answering…", _chat_view(session, jobs, (text, partial)), gr.update(),
                           *keep, *[gr.update()] * NUM_SUGGESTIONS]
                moved = [*keep[:-1], session.show_time if session.show_time is not None else gr.update()]
                yield [session.id, "Ready for the next question.", _chat_view(session, jobs), gr.update(), *moved,
                       *[gr.update()] * NUM_SUGGESTIONS]
            except Exception as exc:  # noqa: BLE001
                yield [session.id, "⚠ " + _message(exc, "answer"), _chat_view(session, jobs), gr.update(), *keep,
                       *[gr.update()] * NUM_SUGGESTIONS]

        def apply_settings(model_choice, n_frames, categories, mode, sam2_on, clip_on, session_id,
                           request: gr.Request):
            session = session_of(session_id, request)
            try:
                source = allowed_model_source(model_choice, engine.config.model)
                offered = engine.config.stages
                engine.configure(session, model=source, num_frames=int(n_frames), extra_events=categories,
                                 answers=mode, sam2=(offered.sam2 or "") if sam2_on else "",
                                 clip=(offered.clip or "") if clip_on else "")
                banner_text = _model_banner(engine, session.model_source, session.answers)
            except Exception as exc:  # noqa: BLE001
                return [session.id, "⚠ " + _message(exc, "apply the settings"), gr.update()]
            jobs = jobs_of(session.id)
            with jobs.lock:
                if not any(kind == "clip" for kind, _ in jobs.pending) and session.loaded and jobs.preview:
                    jobs.pending.appendleft(("clip", jobs.preview))
            return [session.id, "Settings applied: the clip is analysed again with them.", banner_text]

        def clear_chat(session_id, request: gr.Request):
            session = session_of(session_id, request)
            session.clear_history()
            return [session.id, [], "New conversation on the same clip.", *_suggestion_updates(session)]

        def export(kind, session_id, request: gr.Request):
            session = session_of(session_id, request)
            try:
                out = work / session.id
                if session.analysis is None:  # grounded: the scene analysis at the session's sensitivity
                    if session.scene is None or session.answerer is None:
                        raise TVADError("nothing to export yet: analyse a clip first")
                    if kind == "json":
                        path = out / "tvad_report.json"
                        report = scene_report(session.scene, session.clip_name, session.scene_note,
                                              session.answerer.point)
                        atomic_write_text(path, json.dumps(report))
                    elif session.scene_overlay is None:
                        raise TVADError("this clip has no overlay to export")
                    else:
                        path = Path(shutil.copyfile(session.scene_overlay, out / "tvad_overlay.mp4"))
                elif kind == "json":
                    name = Path(session.analysis.clip.source).name
                    path = write_report(session.analysis, out / "tvad_report.json", session.model_info,
                                        session.turns, source_name=name)
                else:
                    path = write_overlay_video(session.analysis, out / "tvad_overlay.mp4")
                return [session.id, str(path), f"Exported {path.name}."]
            except Exception as exc:  # noqa: BLE001
                return [session.id, None, "⚠ " + _message(exc, "export")]

        # Queueing is done by add_clip/add_question (instant, unqueued) and one worker per session (queued):
        # "multiple" lets a second question or a new clip through while the first is being worked on.
        # The worker's own trigger is "multiple" too: one still finishing must not swallow the next one's start.
        fast = dict(queue=False, trigger_mode="multiple")
        worker = dict(concurrency_limit=CONCURRENCY, trigger_mode="multiple")
        upload.change(add_clip, [upload, sid], [sid, status], **fast).then(work_jobs, [sid], worked, **worker)
        # The box is emptied in the browser the moment a question is sent (no round trip that could erase what
        # the user types next), the question handed on through a hidden box.
        asked = [sid, chat, status]
        for trigger in (send.click, question.submit):
            trigger(None, [question], [question, sent], js="(text) => ['', text]", **fast).then(
                add_question, [sent, sid], asked, **fast).then(
                work_jobs, [sid], worked, show_progress="minimal", **worker)
        for button in suggestions:
            button.click(add_question, [button, sid], asked, **fast).then(
                work_jobs, [sid], worked, show_progress="minimal", **worker)
        cleared = [sid, chat, status, *suggestions]
        reset.click(clear_chat, [sid], cleared, queue=False)
        chat.clear(clear_chat, [sid], cleared, queue=False)
        apply.click(apply_settings, [model_box, frames, events, answers_mode, use_sam2, use_clip, sid],
                    [sid, status, banner]).then(
            work_jobs, [sid], worked, **worker)

        def change_sensitivity(point, session_id, request: gr.Request):
            session = session_of(session_id, request)
            if not point or session.scene is None:
                return [session.id, gr.update(), gr.update(), gr.update()]
            try:
                engine.set_sensitivity(session, point)
            except Exception as exc:  # noqa: BLE001
                return [session.id, "⚠ " + _message(exc, "change the sensitivity"), gr.update(), gr.update()]
            return [session.id, f"Sensitivity {point}: events and answers re-decided.",
                    scene_score_figure(session.scene, point), scene_panel_markdown(session)]

        # input, not change: an analysis sets the radio to its point, which must not re-decide it again
        sensitivity.input(change_sensitivity, [sensitivity, sid], [sid, status, plot, evidence], queue=False)
        show_at.change(None, [show_at], None, js=SEEK_OVERLAY_JS, queue=False)
        def export_json_report(session_id, request: gr.Request):
            return export("json", session_id, request)

        def export_overlay(session_id, request: gr.Request):
            return export("mp4", session_id, request)

        export_json.click(export_json_report, [sid], [sid, export_file, status])
        export_mp4.click(export_overlay, [sid], [sid, export_file, status])
        demo.unload(on_unload)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    return demo


# The overlay video jumps to the "Overlay at (s)" box's time and pauses there (a "show me" answer sets the box).
SEEK_OVERLAY_JS = """(t) => {
  const video = document.querySelector('#overlay video');
  if (video && t !== null && t !== undefined && isFinite(t)) {
    video.pause();
    video.currentTime = Math.min(Number(t), isFinite(video.duration) ? video.duration : Number(t));
  }
  return [];
}"""


def _cache_root() -> Path:
    """Gradio's file cache: what the page writes there is served as it is (not copied) and deleted with it."""
    root = Path(gradio_upload_folder())
    root.mkdir(parents=True, exist_ok=True)
    return root


def _example_label(path: Path) -> str:
    """'ped2_test01_bicycle.mp4' -> 'Ped2 test01 bicycle'."""
    return path.stem.replace("_", " ").capitalize()


def _weights_name(source: str | None) -> str:
    """A stage's weights as the page names them: the hub id, or a local file's or folder's name (no server path)."""
    if not source:
        return "not configured"
    return source if not Path(source).exists() else Path(source).name


def _stages_text(session: Session) -> str:
    """The optional stages' times and what is missing, for the status line ("" when none was asked for)."""
    if session.stages is None:
        return ""
    timing = session.stages.timing_text()
    parts = [f"Stages: {timing}."] if timing else []
    return " ".join([*parts, *(f"⚠ {note}" for note in session.stages.notes)])


def _analysed_text(session: Session, analysis: Analysis | None, name: str) -> str:
    stages = _stages_text(session)
    if analysis is None:
        return f"Analysed **{name}**. {session.scene_note} {stages + ' ' if stages else ''}Ask away."
    clip = analysis.clip
    count = len(clip.frames)
    text = (f"Analysed **{name}**: {count} frame{'s' if count != 1 else ''} sampled over {clip.duration_s:.1f} s "
            f"in {analysis.timings.get('total_s', 0):.1f} s. Ask away.")
    for warning in clip.warnings:
        text += f"\n\n⚠ {warning}"
    if session.model_info is not None and not session.model_info.trained:
        text += " ⚠ Untrained model: answers and heatmaps are noise."
    return text


def scene_panel_markdown(session: Session) -> str:
    """The scene analysis's verdict, operating point and events: what every grounded answer rests on."""
    if session.answerer is None:
        return session.scene_note
    facts = session.answerer.summary()
    point = facts["operating_point"]
    verdict = {"yes": "anomaly", "no": "no anomaly", "not judged": "not judged (no object was compared)"}
    parts = [f"Scene judgement: **{verdict[facts['judgement']]}** "
             f"(peak score {facts['peak_score']:.2f}, threshold {point['threshold']:.2f}); decided by "
             f"{facts['decided_by']}", f"Sensitivity {point['name']}: {point['false_alarms']}"]
    events = facts["events"]
    if not events:
        return "\n\n".join(parts if facts["judgement"] == "not judged" else
                             [*parts, "No unusual event at this sensitivity."])
    table = ["| event | start (s) | end (s) | why |", "|---|---|---|---|"]
    table += [f"| {e['number']} | {e['start']:.1f} | {e['end']:.1f} | {e['why']} |" for e in events]
    return "\n\n".join([*parts, "\n".join(table)])


def _views(analysis: Analysis | None, session: Session, out: Path) -> list[Any]:
    """Overlay video, score plot, frame strip, evidence, the sensitivity in use and the overlay's position: the
    scene analysis's in grounded mode, the model's otherwise."""
    name = f"overlay_{len(list(out.glob('overlay_*.mp4')))}.mp4"
    point = session.answerer.point if session.answerer is not None else None
    if analysis is None:
        if session.scene is None:
            return [None, None, None, session.scene_note, None, None]
        overlay = None
        if session.scene_overlay is not None:  # the engine's copy is shared; the session's is deleted with it
            overlay = str(shutil.copyfile(session.scene_overlay, out / name))
        return [overlay, scene_score_figure(session.scene, point), session.scene_strip,
                scene_panel_markdown(session), point, 0]
    trained = session.model_info is None or session.model_info.trained
    mp4 = write_overlay_video(analysis, out / name)
    return [str(mp4), score_figure(analysis, trained=trained), frame_strip(analysis), _evidence_markdown(analysis),
            point, 0]


def _size_bytes(text: str) -> int:
    """'200mb' -> 209715200 (kb, mb, gb; as Gradio's max_file_size reads it)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?b)\s*", text.lower())
    if not match:
        raise ValueError(f"TVAD_MAX_UPLOAD must look like 200mb or 1gb, got {text!r}")
    return int(float(match.group(1)) * {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}[match.group(2)])


def main(host: str | None = None, port: int | None = None, model: str | None = None) -> None:
    """Serve the page; unset arguments come from TVAD_HOST, TVAD_PORT and TVAD_MODEL (limits: README)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    host = host or os.environ.get("TVAD_HOST", "127.0.0.1")
    port = port or int(os.environ.get("TVAD_PORT", "7860"))
    engine = ChatEngine(EngineConfig(model=model or os.environ.get("TVAD_MODEL", DEFAULT_MODEL),
                                     max_file_bytes=_size_bytes(MAX_UPLOAD_TEXT),
                                     max_duration_s=MAX_DURATION_MIN * 60, answers=ANSWERS))
    if ANSWERS == "model":
        try:
            engine.model()  # load once before serving; a failure shows in the page banner instead
        except Exception:  # noqa: BLE001
            logger.exception("the default model did not load")
    demo = build_app(engine)
    demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD_TEXT, show_error=False,
                allowed_paths=[str(default_cache_dir())], css=CSS, footer_links=[])
