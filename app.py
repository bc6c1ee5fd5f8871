"""T-VAD Chat web page (Gradio). UI only: every model call goes through tvad_chat.chat.ChatEngine.

Upload a clip (or pick an example), ask "Is there an anomaly?", see where (heatmap overlay, per-frame score
plot, evidence per target) and keep asking: follow-ups reuse the clip's cached analysis.
Host and port come from TVAD_HOST / TVAD_PORT (default 127.0.0.1:7860); TVAD_MODEL picks the model.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from tvad_chat.chat import (
    DEFAULT_MODEL,
    JUDGEMENT_QUESTION,
    MAX_FRAMES,
    MIN_FRAMES,
    ChatEngine,
    EngineConfig,
    anomaly_intervals,
    build_example_clips,
    default_cache_dir,
    frame_strip,
    score_figure,
    suggest_follow_ups,
    target_rows,
    write_overlay_video,
    write_report,
)
from tvad_chat.errors import TVADError

logger = logging.getLogger("tvad_chat.app")

MAX_UPLOAD = os.environ.get("TVAD_MAX_UPLOAD", "200mb")
CONCURRENCY = int(os.environ.get("TVAD_CONCURRENCY", "2"))
NUM_SUGGESTIONS = 3

CSS = """
#status .prose { font-size: 0.95em; }
.warn-untrained { background: #fdecea; border-left: 4px solid #c0392b; padding: 6px 10px; }
.warn-limited { background: #fff6e0; border-left: 4px solid #d68910; padding: 6px 10px; }
"""


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


def _evidence_markdown(analysis: Any) -> str:
    lines = []
    verdict = {True: "**anomaly**", False: "**no anomaly**", None: "no judgement (no heatmap head)"}
    score = getattr(analysis, "score", None)
    lines.append(f"Heatmap judgement: {verdict[getattr(analysis, 'judgement', None)]}"
                 + (f" (score {float(score):.2f})" if score is not None else ""))
    spans = anomaly_intervals(analysis)
    if spans:
        lines.append("Detected interval(s): " + ", ".join(f"{a:.1f}–{b:.1f} s" for a, b in spans))
    rows = target_rows(analysis)
    if not rows:
        lines.append("\nNo tracked target.")
        return "\n".join(lines)

    def fmt(v: Any) -> str:
        if v is None:
            return "–"
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines += ["", "| target | first (s) | last (s) | entry | exit | direction | speed |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        speed = fmt(r["speed"])
        if isinstance(r.get("speed_diag_per_s"), float):
            speed += f" ({r['speed_diag_per_s']:.2f} diag/s)"
        lines.append("| " + " | ".join(fmt(r[k]) for k in ("target", "first_s", "last_s", "entry", "exit",
                                                            "direction")) + f" | {speed} |")
    return "\n".join(lines)


def _suggestion_updates(session) -> list[Any]:
    items = suggest_follow_ups(session.analysis, session.history) if session is not None else [JUDGEMENT_QUESTION]
    items = items + [""] * (NUM_SUGGESTIONS - len(items))
    return [gr.update(value=q, visible=bool(q)) for q in items[:NUM_SUGGESTIONS]]


def _chat_messages(session) -> list[dict[str, str]]:
    out = []
    for q, a in session.turns:
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return out


def build_app(engine: ChatEngine | None = None, examples: list[Path] | None = None) -> gr.Blocks:
    engine = engine or ChatEngine(EngineConfig(model=os.environ.get("TVAD_MODEL", DEFAULT_MODEL)))
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
                text = (f"Analysed **{Path(path).name}**: {len(clip.frames)} frames sampled over "
                        f"{clip.duration_s:.1f} s in {analysis.timings.get('total_s', 0):.1f} s. Ask away.")
                if session.model_info and not session.model_info.trained:
                    text += " ⚠ Untrained model: answers and heatmaps are noise."
                return [session.id, text, [], mp4, score_figure(analysis, session.model_info),
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
                    path = write_report(session, out / "tvad_report.json")
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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    host = os.environ.get("TVAD_HOST", "127.0.0.1")
    port = int(os.environ.get("TVAD_PORT", "7860"))
    engine = ChatEngine(EngineConfig(model=os.environ.get("TVAD_MODEL", DEFAULT_MODEL)))
    try:
        engine.model()  # load once before serving; a failure shows in the page banner instead
    except Exception:  # noqa: BLE001
        logger.exception("the default model did not load")
    demo = build_app(engine)
    demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD, show_error=False,
                allowed_paths=[str(default_cache_dir())], css=CSS, footer_links=[])


if __name__ == "__main__":
    main()
