"""T-VAD Chat web page (Gradio). UI only: the engine lives in tvad_chat.

Until the chat engine lands this serves a page that says what is coming.
Host and port come from TVAD_HOST / TVAD_PORT (default 127.0.0.1:7860).
"""

from __future__ import annotations

import os

import gradio as gr


def build_app() -> gr.Blocks:
    with gr.Blocks(title="T-VAD Chat") as demo:
        gr.Markdown(
            "# T-VAD Chat\n"
            "Upload a surveillance clip and ask *Is there an anomaly?* — the chat, the pixel-level "
            "heatmap and the tracked anomalous object arrive with the chat engine. "
            "Video ingest is available now: `tvad info VIDEO`."
        )
    return demo


def main() -> None:
    host = os.environ.get("TVAD_HOST", "127.0.0.1")
    port = int(os.environ.get("TVAD_PORT", "7860"))
    build_app().launch(server_name=host, server_port=port, show_error=True)


if __name__ == "__main__":
    main()
