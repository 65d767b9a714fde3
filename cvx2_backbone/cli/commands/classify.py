"""`cvx2 classify IMAGE --weights SRC`: top-5 ImageNet classes from a classification checkpoint, a quick check that
weights loaded right (the classifier and its preprocessing: :mod:`cvx2_backbone.extraction.classifier`)."""
from __future__ import annotations

import argparse

UNTRAINED_TOP1 = 2.0  # a top-1 probability under twice the uniform 1/classes: no class stands out

HELP = "top-5 ImageNet classes of images with a classification checkpoint (checks that weights load right)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files, or folders (their images, searched recursively)")
    parser.add_argument("--weights", required=True,
                        help="classification checkpoint: file, folder, http(s) URL, hf://repo or timm/model.tag")
    parser.add_argument("--image-size", type=int, default=224, help="network input size (use 384 for *_384 models)")
    parser.add_argument("--crop-pct", type=float, default=224 / 256,
                        help="centre-crop fraction for sizes below 384 (Hugging Face's default)")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="load weights even if some backbone tensors are missing or unexpected (they are listed; "
                             "without this flag that is an error)")


def run(args: argparse.Namespace) -> int:
    import torch

    from cvx2_backbone.extraction.classifier import Classifier, class_names, classifier_input
    from cvx2_backbone.extraction.images import ImageReadError
    from cvx2_backbone.utils.usage import UsageError, require_device, user_input

    if args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k}: give at least 1 (the number of classes shown per image)")
    if args.image_size < 32:
        raise UsageError(f"--image-size {args.image_size} is below the network's total stride 32; use 224 (or 384 "
                         "for *_384 models)")
    if not 0 < args.crop_pct <= 1:
        raise UsageError(f"--crop-pct {args.crop_pct} is not a fraction in (0, 1]; e.g. 0.875 (Hugging Face's "
                         "default) or 1 for no crop")
    from cvx2_backbone.extraction.feature_files import find_images

    with user_input():
        images = [path for path, _ in find_images(args.images)]  # a folder: its images, searched recursively
    if not images:
        raise UsageError(f"no images in {' '.join(args.images)} (looked for {', '.join(_suffixes())}); pass image "
                         "files or folders that hold them")
    device = require_device(args.device)
    classifier = Classifier(args.weights, allow_partial=args.allow_partial).to(device)
    names = class_names(classifier.num_classes)
    print(f"{classifier.arch.describe()} with a {classifier.num_classes}-class head from {args.weights}"
          + ("" if names else " (class names unknown for this head size: printing indices)"))
    if not classifier.report.complete:
        print(f"partial load (--allow-partial): {classifier.report.summary()}")
    if classifier.untrained_head:
        print(f"note: the classification head in {args.weights} is untrained ({classifier.untrained_head}): the "
              "classes below are not predictions; use an ImageNet fine-tuned checkpoint, e.g. "
              "timm/convnextv2_atto.fcmae_ft_in1k")
    failed = 0
    for path in images:
        try:
            pixels = classifier_input(path, args.image_size, args.crop_pct)[None].to(device)
        except ImageReadError as err:
            print(f"\n{path}: skipped: {err}")
            failed += 1
            continue
        with torch.inference_mode():
            probs = classifier(pixels)[0].float().cpu()
        values, indices = probs.topk(min(args.top_k, classifier.num_classes))
        print(f"\n{path}")
        for rank, (p, i) in enumerate(zip(values.tolist(), indices.tolist()), start=1):
            print(f"  {rank}. {100 * p:6.2f}%  {i:5d}  {names[i] if names else ''}")
        if float(values[0]) < UNTRAINED_TOP1 / classifier.num_classes:
            print(f"  note: the top class has {100 * float(values[0]):.2f}%, close to 1/{classifier.num_classes}: "
                  "the head looks untrained (random or pre-training-only weights); use an ImageNet fine-tuned "
                  "checkpoint, e.g. timm/convnextv2_atto.fcmae_ft_in1k")
    return 1 if failed else 0


def _suffixes() -> list[str]:
    from cvx2_backbone.extraction.feature_files import IMAGE_SUFFIXES

    return sorted(IMAGE_SUFFIXES)
