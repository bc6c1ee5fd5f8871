"""T-VAD Chat web page (Gradio). UI only: every model call goes through tvad_chat.chat.ChatEngine.

Upload a clip (or pick an example), ask "Is there an anomaly?", see where (heatmap overlay, per-frame score
plot, evidence per target) and keep asking: follow-ups reuse the clip's cached analysis.
Host and port come from TVAD_HOST / TVAD_PORT (default 127.0.0.1:7860); TVAD_MODEL picks the model.
`make run` (app.py) and `tvad app` both start :func:`main`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from tvad_chat.chat import JUDGEMENT_QUESTION, MAX_FRAMES, MIN_FRAMES, ChatEngine, EngineConfig, Session
from tvad_chat.errors import TVADError
from tvad_chat.eval.text import NO, YES, normalize_yes_no
from tvad_chat.files import atomic_output
from tvad_chat.models import DEFAULT_MODEL
from tvad_chat.motion import SPEED_UNIT, SPEED_UNIT_TEXT
from tvad_chat.pipeline import Analysis
from tvad_chat.render import frame_strip, score_figure, write_overlay_video, write_video
from tvad_chat.report import anomaly_intervals, target_rows, write_report
from tvad_chat.video import load_clip

logger = logging.getLogger(__name__)

MAX_UPLOAD = os.environ.get("TVAD_MAX_UPLOAD", "200mb")
CONCURRENCY = int(os.environ.get("TVAD_CONCURRENCY", "2"))
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


def _model_banner(engine: ChatEngine, source: str | None = None) -> str:
    try:
        _, info = engine.model(source)
    except Exception as exc:  # noqa: BLE001 - shown as text, the page stays up
        return _message(exc, "load the model")
    if not info.trained:
        return f"<div class='warn-untrained'>⚠ <b>Untrained model.</b> {info.note}</div>"
    if info.note:
        return f"<div class='warn-limited'>⚠ <b>Model `{info.source}` ({info.variant}):</b> {info.note}</div>"
    return f"Model: `{info.source}` ({info.variant})"


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


def _suggestion_updates(session: Session | None) -> list[Any]:
    items = suggest_follow_ups(session.analysis, session.history) if session is not None else [JUDGEMENT_QUESTION]
    items = items + [""] * (NUM_SUGGESTIONS - len(items))
    return [gr.update(value=q, visible=bool(q)) for q in items[:NUM_SUGGESTIONS]]


def _chat_messages(session: Session) -> list[dict[str, str]]:
    out = []
    for q, a in session.turns:
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return out


def build_app(engine: ChatEngine, examples: list[Path] | None = None) -> gr.Blocks:
    """The page, serving ``engine``; ``examples`` default to :func:`build_example_clips`."""
    work = Path(tempfile.mkdtemp(prefix="tvad_chat_app_"))
    if examples is None:
        try:
            examples = build_example_clips()
        except Exception:  # noqa: BLE001 - examples are optional
            logger.exception("could not prepare the example clips")
            examples = []

    with gr.Blocks(title="T-VAD Chat") as demo:
        sid = gr.State(None, delete_callback=engine.close_session)
        gr.Markdown("# T-VAD Chat\nUpload a surveillance clip and ask *Is there an anomaly?* — see where it is "
                    "(heatmap, score over time, tracked targets) and keep asking follow-ups.")
        banner = gr.Markdown(lambda: _model_banner(engine), elem_id="model-banner")
        with gr.Row():
            with gr.Column(scale=5):
                video = gr.Video(label="Clip", sources=["upload"], include_audio=True, height=300,
                                 elem_id="upload")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[video], label="Example clips (real test data)")
                status = gr.Markdown("Upload a clip to start.", elem_id="status")
                with gr.Accordion("Settings", open=False):
                    model_box = gr.Textbox(value=engine.config.model, label="Model directory or hub id",
                                           elem_id="model-source")
                    frames = gr.Slider(MIN_FRAMES, MAX_FRAMES, value=engine.config.num_frames, step=2,
                                       label="Frames sampled per clip")
                    events = gr.Textbox(value=", ".join(engine.config.extra_events), label="Anomaly categories "
                                        "to look for (comma separated, added to the built-in ones)",
                                        placeholder="e.g. bicycle, skateboard, cart")
                    apply = gr.Button("Apply (re-analyses the current clip)")
            with gr.Column(scale=6):
                chat = gr.Chatbot(label="Chat", height=360, elem_id="chat")
                with gr.Row():
                    question = gr.Textbox(value=JUDGEMENT_QUESTION, show_label=False, scale=5,
                                          placeholder="Ask about the clip", elem_id="question")
                    send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                with gr.Row():
                    suggestions = [gr.Button(visible=False, size="sm", elem_classes=["suggestion"])
                                   for _ in range(NUM_SUGGESTIONS)]
                reset = gr.Button("New conversation", size="sm")
        with gr.Row():
            overlay = gr.Video(label="Heatmap overlay", interactive=False, height=260, elem_id="overlay")
            plot = gr.Plot(label="Per-frame anomaly score", show_label=False, elem_id="score-plot")
        strip = gr.Image(label="Frames with heatmap", interactive=False, elem_id="strip", height=150)
        evidence = gr.Markdown(elem_id="evidence")
        with gr.Row():
            export_json = gr.Button("Export JSON report")
            export_mp4 = gr.Button("Export overlay mp4")
            export_file = gr.File(label="Export", interactive=False, height=80, elem_id="export-file")

        # ------------------------------------------------------------ handlers
        def analyse(path, session_id, progress=gr.Progress()):
            session = engine.session(session_id)
            empty = [session.id, None, [], None, None, None, ""]
            if not path:
                return [*empty[:1], "Upload a clip to start.", *empty[2:], *_suggestion_updates(None)]
            try:
                analysis = engine.load_video(session, path, progress=lambda f, d: progress(f, desc=d))
                progress(0.9, desc="rendering the overlay")
                out = work / session.id
                out.mkdir(parents=True, exist_ok=True)
                stamp = len(list(out.glob("overlay_*.mp4")))
                mp4 = write_overlay_video(analysis, out / f"overlay_{stamp}.mp4")
                clip = analysis.clip
                trained = session.model_info is None or session.model_info.trained
                text = (f"Analysed **{Path(path).name}**: {len(clip.frames)} frames sampled over "
                        f"{clip.duration_s:.1f} s in {analysis.timings.get('total_s', 0):.1f} s. Ask away.")
                if not trained:
                    text += " ⚠ Untrained model: answers and heatmaps are noise."
                return [session.id, text, [], mp4, score_figure(analysis, trained=trained),
                        frame_strip(analysis), _evidence_markdown(analysis), *_suggestion_updates(session)]
            except Exception as exc:  # noqa: BLE001 - every failure becomes a message; the page keeps working
                session.reset()
                return [session.id, "⚠ " + _message(exc, "analyse this clip"), *empty[2:],
                        *_suggestion_updates(None)]

        def ask(text, session_id):
            session = engine.session(session_id)
            history = _chat_messages(session)
            text = (text or "").strip()
            if engine.waiting:
                yield [session.id, history, gr.update(), f"Waiting for {engine.waiting} other request(s)…",
                       *_suggestion_updates(session)]
            try:
                shown = history + [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
                for partial in engine.ask_stream(session, text):
                    shown[-1]["content"] = partial
                    yield [session.id, shown, "", "Answering…", *[gr.update()] * NUM_SUGGESTIONS]
                yield [session.id, _chat_messages(session), "", "Ready for the next question.",
                       *_suggestion_updates(session)]
            except Exception as exc:  # noqa: BLE001
                yield [session.id, history, gr.update(), "⚠ " + _message(exc, "answer"),
                       *_suggestion_updates(session)]

        def apply_settings(model_source, n_frames, categories, session_id, progress=gr.Progress()):
            session = engine.session(session_id)
            try:
                engine.configure(session, model=model_source, num_frames=int(n_frames), extra_events=categories)
                banner_text = _model_banner(engine, session.model_source)
            except Exception as exc:  # noqa: BLE001
                return [session.id, "⚠ " + _message(exc, "apply the settings"), gr.update()]
            return [session.id, "Settings applied: they take effect on the next clip analysed.", banner_text]

        def new_conversation(session_id):
            session = engine.session(session_id)
            session.clear_history()
            return [session.id, [], "New conversation on the same clip.", *_suggestion_updates(session)]

        def export(kind, session_id):
            session = engine.session(session_id)
            try:
                if session.analysis is None:
                    raise TVADError("nothing to export yet: analyse a clip first")
                out = work / session.id
                if kind == "json":
                    path = write_report(session.analysis, out / "tvad_report.json", session.model_info,
                                        session.turns)
                else:
                    path = write_overlay_video(session.analysis, out / "tvad_overlay.mp4")
                return [session.id, str(path), f"Exported {path.name}."]
            except Exception as exc:  # noqa: BLE001
                return [session.id, None, "⚠ " + _message(exc, "export")]

        analysed = [sid, status, chat, overlay, plot, strip, evidence, *suggestions]
        video.change(analyse, [video, sid], analysed, concurrency_limit=CONCURRENCY)
        asked = [sid, chat, question, status, *suggestions]
        send.click(ask, [question, sid], asked, concurrency_limit=CONCURRENCY)
        question.submit(ask, [question, sid], asked, concurrency_limit=CONCURRENCY)
        for button in suggestions:
            button.click(ask, [button, sid], asked, concurrency_limit=CONCURRENCY)
        reset.click(new_conversation, [sid], [sid, chat, status, *suggestions])
        apply.click(apply_settings, [model_box, frames, events, sid], [sid, status, banner]).then(
            analyse, [video, sid], analysed, concurrency_limit=CONCURRENCY)
        export_json.click(lambda s: export("json", s), [sid], [sid, export_file, status])
        export_mp4.click(lambda s: export("mp4", s), [sid], [sid, export_file, status])
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    return demo


def main(host: str | None = None, port: int | None = None, model: str | None = None) -> None:
    """Serve the page; unset arguments come from TVAD_HOST, TVAD_PORT and TVAD_MODEL."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    host = host or os.environ.get("TVAD_HOST", "127.0.0.1")
    port = port or int(os.environ.get("TVAD_PORT", "7860"))
    engine = ChatEngine(EngineConfig(model=model or os.environ.get("TVAD_MODEL", DEFAULT_MODEL)))
    try:
        engine.model()  # load once before serving; a failure shows in the page banner instead
    except Exception:  # noqa: BLE001
        logger.exception("the default model did not load")
    demo = build_app(engine)
    demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD, show_error=False,
                allowed_paths=[str(default_cache_dir())], css=CSS, footer_links=[])
