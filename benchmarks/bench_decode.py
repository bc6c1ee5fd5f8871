"""Answer decoding speed: Backbone.generate (transformers' ``generate``) continuing a copy of the clip's cached prefix.

Run:  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/bench_decode.py [--repeats 5]
      [--new-tokens 48] [--threads 2] [--device cpu]

Two models, each analysed once (one vision pass, the per-clip prefix cache) on the same synthetic 16-frame clip:
  * tvad-tiny: the shipped checkpoint (checkpoints/tvad-tiny, loaded by TVAD.from_pretrained, its heads and frame
    budget);
  * wide-4L: a random-weight Qwen2.5-VL with Qwen2.5-VL-3B's text layer width (hidden 2048, 16 heads, 2 KV heads,
    head dim 128, MLP 11008) and 4 text layers, a small vision tower (hidden 64, depth 4) and the tiny
    tokenizer's vocabulary; backbone only.
Each repeat answers the same question from the clip's cache, greedy, exactly --new-tokens tokens
(min_new_tokens = max_new_tokens); every repeat must give the same tokens and no answer may re-run the vision
pass. Times cover the whole answer (cache copy, the question's tokens, every decode step); tokens/s = new tokens
/ time, median over repeats, with this process's CPU time beside the wall clock (less disturbed when other
processes share the cores).

Why transformers' generate: until f885773 answers came from a hand-written decode loop (a lean one-token
step over the model's own modules, and a cache that appended in place). This benchmark, at that commit, compared
it with transformers' generate from the same copied cache, same prompt, same greedy settings, identical tokens
(2 threads, 48 new tokens, 7 repeats, medians of per-repeat ratios, wall clock / CPU time):
  model               hidden  prefix  hand tok/s  generate tok/s  gen+DynamicCache tok/s  hand speed-up  prealloc
  tvad-tiny              128     369        15.5            12.4                    12.3  1.103x/1.084x    0.944x
  wide-4L (3B width)    2048    1077         2.6             2.5                     1.9  1.021x/0.987x    1.231x
(a shared 2-core machine at load average 7; earlier runs there, at loads 1 to 10: tiny 1.75x, 1.00x, 1.30x/1.27x;
wide 1.08x, 1.22x, 1.10x/1.00x; the in-place cache 1.00x, 1.41x, 0.92x on tiny and 1.60x, 1.24x, 1.19x on wide).
The loop was kept only if >= 20 % faster on both models; at a real model's layer width the decode step is the
layers' matrix products and the loop's saving (a few milliseconds of Python per token) disappears, so it went.
By the same rule the in-place cache went too: its gain over transformers' DynamicCache (last column) stays
below 20 % on the tiny model (it reached 19-60 % on the wide one, where each step copies a longer cache).
Reproduce:  git worktree add /tmp/bench-decode f885773 && cd /tmp/bench-decode && ln -s "$OLDPWD/.venv" .venv
            && HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/bench_decode.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTION = "Is there an anomaly in this video?"
WIDE = dict(text_hidden=2048, text_layers=4, text_heads=16, text_kv_heads=2, text_intermediate=11008,
            vision_hidden=64, vision_depth=4, vision_heads=4, vision_intermediate=128)


def synthetic_clip(n_frames: int = 16, height: int = 240, width: int = 360):
    from tvad_chat.video import Clip

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n_frames, height, width, 3), dtype=np.uint8)
    return Clip(frames=frames, timestamps=np.arange(n_frames) / 10.0, frame_indices=np.arange(n_frames),
                source=Path("synthetic"), source_fps=10.0, source_size=(width, height), num_source_frames=n_frames,
                duration_s=n_frames / 10.0)


def load_models(device: str):
    """[(name, TVAD)]: the shipped tiny checkpoint and the wide random model."""
    from tvad_chat.backbone import Backbone
    from tvad_chat.pipeline import TVAD
    from tvad_chat.tiny import TinyModelConfig, build_tiny

    tiny = TVAD.from_pretrained(ROOT / "checkpoints" / "tvad-tiny", device=device, dtype="float32")
    model, processor = build_tiny(TinyModelConfig(**WIDE), seed=0)
    wide = TVAD(Backbone(model.to(device), processor))
    return [("tvad-tiny", tiny), ("wide-4L (3B width)", wide)]


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    clip = synthetic_clip()
    n = args.new_tokens
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; clip: synthetic "
          f"{len(clip.frames)} frames 360x240; {n} new tokens per answer (greedy, forced length); "
          f"{args.repeats} repeats; load average {os.getloadavg()[0]:.2f}")
    rows = []
    for name, tvad in load_models(args.device):
        bb = tvad.backbone
        passes = bb.vision_passes
        analysis = tvad.analyze(clip)
        clip_cache = analysis.state.clip_cache
        inputs = bb.build_inputs(analysis.state.vision, tvad.dialogue([], QUESTION), analysis.state.num_prompt_tokens,
                                 system_prompt=tvad._system_prompt())

        def answer(bb=bb, inputs=inputs, clip_cache=clip_cache) -> list[int]:  # this model's, bound now
            clip_cache.latest = None
            return bb.generate(inputs, clip_cache=clip_cache, max_new_tokens=n, min_new_tokens=n).token_ids

        reference = answer()  # warm-up, and the tokens every repeat must give
        wall, cpu = [], []
        for _ in range(args.repeats):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            if answer() != reference:
                raise SystemExit(f"{name}: a repeat gave different tokens")
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
        if bb.vision_passes != passes + 1:
            raise SystemExit(f"{name}: an answer re-ran the vision pass")
        rows.append((name, bb.text_dim, clip_cache.prefix.ids.shape[1], inputs.input_ids.shape[1],
                     n / statistics.median(wall), n / statistics.median(cpu)))
    header = ("model", "hidden", "prefix", "prompt", "tok/s (wall)", "tok/s (CPU time)")
    widths = (20, 6, 6, 6, 12, 16)
    print()
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        cells = [row[0], str(row[1]), str(row[2]), str(row[3]), f"{row[4]:.1f}", f"{row[5]:.1f}"]
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    print(f"\nmedians over repeats; load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    sys.exit(main(parser.parse_args()))
