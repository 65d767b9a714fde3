"""The ``--model``/``--weights``/``--fpn`` options of the commands that run a backbone (extract, export).

A preset and optional weights, or weights alone (their architecture is read from them: backbone,
classifier or detector/segmentor checkpoints), optionally with an FPN neck (a detector's trained FPN
when its width is given).
"""
from __future__ import annotations

import argparse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="preset such as convnextv2_atto or convnext_tiny; default: inferred from --weights, "
                             "or convnextv2_atto")
    parser.add_argument("--weights", default=None,
                        help="checkpoint: file, folder, http(s) URL, hf://repo or timm/model.tag "
                             "(default: random init)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="load weights even if some backbone tensors are missing or unexpected (they are listed; "
                             "without this flag that is an error)")
    parser.add_argument("--out-features", default=None,
                        help="comma-separated outputs among stem,stage1..stage4 (default: all four stages)")
    parser.add_argument("--fpn", type=int, default=0, metavar="CHANNELS",
                        help="add an FPN neck with this many channels (outputs p2..p6); 0: none. With a detector "
                             "checkpoint as --weights, give its FPN width: the trained FPN is loaded")


def check_model_arguments(args: argparse.Namespace) -> None:
    if args.fpn < 0:
        raise ValueError(f"--fpn takes a channel count (0 for no FPN), got {args.fpn}")


def build_extractor(args: argparse.Namespace, **kwargs):
    """The ``FeatureExtractor`` the options describe (call inside ``usage.user_input()``)."""
    from ..extractor import FeatureExtractor

    check_model_arguments(args)
    model = args.model or (None if args.weights else "convnextv2_atto")
    out_features = args.out_features.split(",") if args.out_features else None
    return FeatureExtractor(model, args.weights, out_features=out_features, fpn=args.fpn or False,
                            allow_partial=args.allow_partial, **kwargs)
