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
    """The ``FeatureExtractor`` the options describe (call inside ``usage.user_input()``).

    Weights of another architecture than ``--model`` are refused in the command's own terms (``--model``, not the
    config keys a backbone config would change); without ``--weights`` the terminal says the weights are random.
    """
    from cvx2_backbone.extraction.extractor import FeatureExtractor
    from cvx2_backbone.weights import ArchMismatchError

    check_model_arguments(args)
    model = args.model or (None if args.weights else "convnextv2_atto")
    out_features = args.out_features.split(",") if args.out_features else None
    try:
        extractor = FeatureExtractor(model, args.weights, out_features=out_features, fpn=args.fpn or False,
                                     allow_partial=args.allow_partial, **kwargs)
    except ArchMismatchError as err:
        if not args.model:
            raise
        raise ArchMismatchError(f"--weights {args.weights} do not fit --model {args.model}: "
                                f"{_arch_hint(args.weights)}") from err
    if args.weights is None:
        print(f"note: no --weights: {extractor.name} has random weights, so its features only test the pipeline; "
              "pass --weights (e.g. timm/convnextv2_atto.fcmae_ft_in1k) for meaningful ones")
    return extractor


def _arch_hint(weights: str) -> str:
    """What the weights are and the flags that fit them."""
    from cvx2_backbone.weights import read_checkpoint

    arch = read_checkpoint(weights).arch
    preset = f"{'convnextv2' if arch.use_grn else 'convnext'}_{arch.preset}" if arch.preset else None
    return (f"they are {arch.describe()} weights; leave --model out (it is read from the weights)"
            + (f" or pass --model {preset}" if preset else ""))
