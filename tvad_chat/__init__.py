"""T-VAD Chat: the engine (video ingest, backbone, heads pipeline, evidence, chat, eval, train)."""

__version__ = "0.1.0"
