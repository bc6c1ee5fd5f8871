"""Answer decoding speed: the hand-written decode loop vs transformers' ``generate`` from the same cached prefix.

Run:  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python benchmarks/bench_decode.py [--repeats 5]
      [--new-tokens 48] [--threads 2] [--device cpu]

Two models, each analysed once (one vision pass, the per-clip prefix cache) on the same synthetic 16-frame clip:
  * tvad-tiny: the shipped checkpoint (checkpoints/tvad-tiny, loaded by TVAD.from_pretrained, its heads and frame
    budget);
  * wide-4L: a random-weight Qwen2.5-VL with Qwen2.5-VL-3B's text layer width (hidden 2048, 16 heads, 2 KV heads,
    head dim 128, MLP 11008) and 4 text layers, a small vision tower (hidden 64, depth 4) and the tiny
    tokenizer's vocabulary (a small lm_head, which costs the same on every path, so the ratios here are the
    most favourable the hand loop can get at this width); backbone only.
Each repeat answers the same question from a copy of the prefix cache, greedy, exactly --new-tokens tokens
(min_new_tokens = max_new_tokens), the paths interleaved so that other load hits them alike:
  * hand loop: Backbone.generate's own loop (lean one-token step, in-place cache appends);
  * generate: transformers' model.generate from the same copied cache (tvad_chat.kv_cache's preallocated copy);
  * generate + DynamicCache: transformers' generate from a copy into transformers' own DynamicCache.
Every path must give the same tokens (checked on every repeat). Times cover the whole answer from the cached
prefix (cache copy, the question's tokens, every decode step); tokens/s = new tokens / time. Ratios are taken
within each repeat, then the median over repeats is printed.
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


def dynamic_copy(cache, n_tokens: int):
    """transformers' own DynamicCache holding a copy of the first ``n_tokens`` of ``cache``."""
    from transformers import DynamicCache

    other = DynamicCache()
    for i, layer in enumerate(cache.layers):
        other.update(layer.keys[..., :n_tokens, :].clone(), layer.values[..., :n_tokens, :].clone(), i)
    return other


def hand_loop(tvad, inputs, clip_cache, n: int) -> list[int]:
    clip_cache.latest = None
    return tvad.backbone.generate(inputs, clip_cache=clip_cache, max_new_tokens=n, min_new_tokens=n).token_ids


def transformers_generate(tvad, inputs, clip_cache, n: int, dynamic: bool) -> list[int]:
    """transformers' generate from a copy of the clip's prefix cache, the decode options Backbone.generate uses."""
    bb = tvad.backbone
    clip_cache.latest = None
    opts = bb.decode_options(n, min_new_tokens=n)
    with torch.inference_mode():
        cache, n_cached, rope_deltas = clip_cache.best(inputs.input_ids)
        if dynamic:
            cache = dynamic_copy(clip_cache.prefix.cache, n_cached)
        bb.model.model.rope_deltas = rope_deltas
        out = bb.model.generate(past_key_values=cache, **inputs.model_kwargs(), max_new_tokens=opts.max_new_tokens,
                                min_new_tokens=opts.min_new_tokens, do_sample=False,
                                repetition_penalty=opts.repetition_penalty,
                                suppress_tokens=list(bb.anomaly_token_ids), return_dict_in_generate=True)
    return out.sequences[0, inputs.input_ids.shape[1]:].tolist()


def timed(fn) -> tuple[float, float, list[int]]:
    """(wall seconds, this process's CPU seconds, result): CPU time counts only this process's work, so it is
    less disturbed than wall time when other processes share the cores."""
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, tokens


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
        paths = {
            "hand": lambda: hand_loop(tvad, inputs, clip_cache, n),
            "generate": lambda: transformers_generate(tvad, inputs, clip_cache, n, dynamic=False),
            "dynamic": lambda: transformers_generate(tvad, inputs, clip_cache, n, dynamic=True),
        }
        reference = paths["hand"]()  # warm-up of every path, and the tokens they must all give
        for key, path in paths.items():
            tokens = path()
            if tokens != reference or len(tokens) != n:
                raise SystemExit(f"{name}: the {key} path gave different tokens: {tokens} vs {reference}")
        times: dict[str, list[float]] = {key: [] for key in paths}
        cpu: dict[str, list[float]] = {key: [] for key in paths}
        keys = list(paths)
        for r in range(args.repeats):
            for key in keys[r % 3:] + keys[: r % 3]:  # the order rotates, so no path always runs after another
                seconds, cpu_seconds, tokens = timed(paths[key])
                if tokens != reference:
                    raise SystemExit(f"{name}: the {key} path gave different tokens on a repeat")
                times[key].append(seconds)
                cpu[key].append(cpu_seconds)
        if bb.vision_passes != passes + 1:
            raise SystemExit(f"{name}: an answer re-ran the vision pass")
        ratio = statistics.median(g / h for g, h in zip(times["generate"], times["hand"]))
        ratio_cpu = statistics.median(g / h for g, h in zip(cpu["generate"], cpu["hand"]))
        ratio_dynamic = statistics.median(d / g for d, g in zip(times["dynamic"], times["generate"]))
        rows.append((name, bb.text_dim, clip_cache.prefix.ids.shape[1], inputs.input_ids.shape[1],
                     *(n / statistics.median(times[key]) for key in paths), ratio, ratio_cpu, ratio_dynamic))
        del analysis, clip_cache, tvad, bb
    header = ("model", "hidden", "prefix", "prompt", "hand tok/s", "generate tok/s", "gen+Dynamic tok/s",
              "hand speed-up", "(CPU time)", "prealloc speed-up")
    widths = (20, 6, 6, 6, 10, 14, 17, 13, 10, 17)
    print()
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        cells = [row[0], str(row[1]), str(row[2]), str(row[3]), *(f"{x:.1f}" for x in row[4:7]),
                 *(f"{x:.3f}x" for x in row[7:])]
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    print("\ntok/s: medians over repeats. hand speed-up = median over repeats of time(generate, same cache) / "
          "time(hand loop), wall clock; (CPU time) = the same on this process's CPU time; prealloc speed-up = median of "
          "time(generate + DynamicCache) / time(generate + preallocated copy). Identical tokens on every path and "
          "repeat; one vision pass per model.")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    keep = all(row[7] >= 1.2 for row in rows)
    print(f"hand loop >= 20 % faster on every model: {keep}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    sys.exit(main(parser.parse_args()))
