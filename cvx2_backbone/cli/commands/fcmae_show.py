"""`cvx2 fcmae-show`: pictures of what an FCMAE model reconstructs, and its loss curve.

Without ``--checkpoint`` it first pre-trains briefly on the images (the small CPU recipe, through
the same engine as tools/train.py). Usage errors (no usable image, a bad mask ratio, a missing
config or checkpoint) exit 2 in the package's error style (``cvx2_backbone.utils.usage``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "FCMAE reconstructions (original | masked input | reconstruction) and the loss curve, on your images"
DEFAULT_CONFIG = "configs/fcmae/fcmae_convnextv2-atto_1xb8-cosine-1k_image-folder-cpu.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", help="image files or folders (default: the photos shipped with "
                                                  "matplotlib and scikit-image)")
    parser.add_argument("-o", "--output", default="work_dirs/fcmae_show", help="folder for the pictures")
    parser.add_argument("--checkpoint", help="an FCMAE checkpoint (tools/train.py's .pth or a saved state dict); "
                                             "without it a short pre-training runs first")
    parser.add_argument("--config", default=None, help=f"FCMAE config (default: {DEFAULT_CONFIG})")
    parser.add_argument("--iters", type=int, default=None, help="training iterations without --checkpoint "
                                                                "(default: the config's)")
    parser.add_argument("--mask-ratio", type=float, default=None, help="share of hidden patches (default: the "
                                                                        "config's, 0.6)")
    parser.add_argument("--size", type=int, default=224, help="side of the square crop shown, in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the masks shown")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")


def run(args: argparse.Namespace) -> int:
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    from cvx2_backbone.fcmae.showcase import fcmae_show
    from cvx2_backbone.utils.usage import user_input

    with user_input():  # ShowError is a ValueError: a usage problem with its fix
        result = fcmae_show(args.images, args.output, checkpoint=args.checkpoint, config=args.config,
                            iters=args.iters, mask_ratio=args.mask_ratio, size=args.size, seed=args.seed,
                            threads=args.threads)
    scores = result.scores
    verdict = "better than" if scores.beats_mean_fill else "NOT better than"
    print(f"hidden-patch MSE {scores.model_mse:.3f} vs {scores.mean_fill_mse:.3f} for a mean-colour fill: the "
          f"model is {verdict} the blind guess")
    for path in result.files:
        print(f"  {Path(path)}")
    return 0
