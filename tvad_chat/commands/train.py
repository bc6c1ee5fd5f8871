"""`tvad train stage0|stage1|stage2 [key=value ...]`: the training stages, settings overridable nanoGPT-style.

    tvad train stage0 corpus=data/synth_corpus out_dir=runs/stage0 max_steps=600
    tvad train stage1 backbone=runs/stage0/model corpus=data/synth_corpus out_dir=runs/stage1
    tvad train stage2 backbone=runs/stage0/model ahd=runs/stage1/ahd out_dir=runs/stage2
    tvad train stage1 --show-config          # every setting with its default

Runs resume from out_dir/latest after a crash; `accelerate launch -m tvad_chat.cli train ...` uses several GPUs.
"""

from __future__ import annotations

import argparse
import json

STAGES = {
    "stage0": ("tvad_chat.train.stage0", "Stage0Config", "train a tiny Qwen2.5-VL from scratch on a corpus"),
    "stage1": ("tvad_chat.train.stage1", "Stage1Config", "train the AHD on the frozen backbone (patch-grid masks)"),
    "stage2": ("tvad_chat.train.stage2", "Stage2Config", "train RAE + LoRA + anomaly-token rows (phases A and B)"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a stage (stage0: tiny backbone, stage1: AHD, stage2: RAE+LoRA)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name, (_, _, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("overrides", nargs="*", metavar="key=value", help="settings to change (see --show-config)")
        p.add_argument("--show-config", action="store_true", help="print the resolved settings and exit")
        p.set_defaults(handler=_run, stage=name)
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])


def _run(args: argparse.Namespace) -> int:
    import importlib

    from tvad_chat.train.common import apply_overrides, config_to_dict

    module_name, cls_name, _ = STAGES[args.stage]
    module = importlib.import_module(module_name)
    cfg = apply_overrides(getattr(module, cls_name)(), args.overrides)
    if args.show_config:
        print(json.dumps(config_to_dict(cfg), indent=2))
        return 0
    cfg.validate()
    result = module.run(cfg)
    print(f"{args.stage}: {result}")
    return 0
