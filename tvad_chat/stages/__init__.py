"""Optional stages on top of the scene analysis, for users who bring their own weights.

Each stage sits behind a small interface beside a weight-free default:

- masks (tvad_chat.stages.masks): the heat-threshold outline (default) or SAM2 video masks prompted with TAO's
  robust-filtered boxes (tvad_chat.stages.tao) and propagated forward and backward;
- categories (tvad_chat.stages.categories): none (default) or an open_clip model ranking open-vocabulary
  categories (prompts/categories.yaml and the user's own) for each anomalous track.

tvad_chat.stages.loading finds the weights (a hub id in the local cache, or a local file or folder) and says what is
missing and how to provide it; tvad_chat.stages.run runs the configured stages after the analysis and keeps their
results, times and notes for the report, the answers and the page. Without weights the analysis goes on without
the stage.
"""
