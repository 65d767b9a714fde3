"""`cvx2 demo`: train and evaluate Mask R-CNN with ConvNeXt V2 atto on synthetic shapes, on the CPU.

No arguments, no download. Writes to work_dirs/demo (``--quick``: work_dirs/demo-quick); a folder
holding an earlier run is kept and the run goes to the next free ``<folder>-N`` unless ``--overwrite``.
Exit status: 0 when the detector learned (box AP above --min-ap), 1 when it did not, 2 for bad
arguments or when mmdet is missing.
"""
from __future__ import annotations

import argparse

HELP = "train + evaluate Mask R-CNN with ConvNeXt V2 atto on a synthetic COCO set, on the CPU (no download)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default=None,
                        help="folder for data, model, metrics, pictures (default: work_dirs/demo, with --quick "
                             "work_dirs/demo-quick); if it holds an earlier run, the next free <folder>-2, -3, ...")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier demo run in the output folder instead of writing beside it")
    parser.add_argument("--quick", action="store_true", help="a shorter run (fewer images and iterations)")
    parser.add_argument("--iters", type=int, default=None, help="training iterations (overrides the preset)")
    parser.add_argument("--image-size", type=int, default=None, help="image side in pixels (overrides the preset)")
    parser.add_argument("--num-train", type=int, default=None, help="training images (overrides the preset)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the data and the training (default: 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: half the cores; more threads help little and hurt on busy cores)")
    parser.add_argument("--min-ap", type=float, default=0.05,
                        help="box AP the run must exceed to count as learned (exit status 1 otherwise)")


def run(args: argparse.Namespace) -> int:
    import warnings
    from dataclasses import replace

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # mmengine/mmcv imports say it

    from cvx2_backbone.utils.usage import UsageError

    try:
        import mmdet  # noqa: F401  (the demo is an mmdet detector)
        import pycocotools  # noqa: F401
    except ImportError as err:
        raise UsageError(f"{err.name} is not installed; install the detection extra: pip install -e '.[det]' "
                         "(or run `make demo`, which sets everything up)") from err
    from cvx2_backbone.cli.demo_job import DEFAULT_OUTPUT, QUICK, QUICK_OUTPUT, DemoSettings, run_demo

    settings = QUICK if args.quick else DemoSettings()
    overrides = {"iters": args.iters, "image_size": args.image_size, "num_train": args.num_train, "seed": args.seed,
                 "threads": args.threads}
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    for flag, value in (("--iters", settings.iters), ("--num-train", settings.num_train),
                        ("--threads", settings.threads)):
        if value < 1:
            raise UsageError(f"{flag} {value}: give 1 or more")
    if not 0 <= args.min_ap < 1:
        raise UsageError(f"--min-ap {args.min_ap}: COCO AP is a fraction in [0, 1], so the run could never pass; "
                         "give a value below 1, e.g. 0.05 (the default)")
    if settings.image_size < 64:
        raise UsageError(f"--image-size {settings.image_size} is too small for the demo's shapes; use 64 or more")
    output = args.output or (QUICK_OUTPUT if args.quick else DEFAULT_OUTPUT)
    result = run_demo(output, settings, overwrite=args.overwrite)
    metrics = result.metrics
    print(f"\nCOCO box AP {100 * result.bbox_ap:.1f}  mask AP {100 * result.segm_ap:.1f}  (AP50 box "
          f"{100 * metrics['coco/bbox_mAP_50']:.1f}, mask {100 * metrics['coco/segm_mAP_50']:.1f})")
    print(f"trained in {result.train_seconds / 60:.1f} min, {result.total_seconds / 60:.1f} min in all")
    for name, path in result.files.items():
        print(f"  {name:16s} {path}")
    if result.bbox_ap <= args.min_ap:
        print(f"box AP {result.bbox_ap:.3f} is not above {args.min_ap}: the detector did not learn enough; "
              "train longer (--iters) or check the set-up")
        return 1
    return 0
