"""`cvx2 classify IMAGE --weights SRC`: top-5 ImageNet classes from a classification checkpoint.

A quick check that weights loaded right: the checkpoint's own head (final LayerNorm and Linear
over globally pooled stage-4 features) is kept. Images are prepared as the published ConvNeXt
preprocessor configs of Hugging Face's ``ConvNextImageProcessor`` say: bicubic resize; below 384 px
the short side goes to size / crop_pct and the centre size x size is cropped; from 384 px on the
image is resized to size x size; then ImageNet mean/std.
"""
from __future__ import annotations

import argparse

UNTRAINED_TOP1 = 2.0  # a top-1 probability under twice the uniform 1/classes: no class stands out

HELP = "top-5 ImageNet classes of images with a classification checkpoint (checks that weights load right)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
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


def classifier_input(image, size: int, crop_pct: float):
    """One image of any kind the extractor accepts -> normalised (3, size, size) tensor (see module docstring)."""
    import torch
    import torch.nn.functional as F
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from ..extractor import shortest_edge_size, to_rgb_tensor

    pixels = to_rgb_tensor(image)
    h, w = pixels.shape[-2:]
    target = (size, size) if size >= 384 else shortest_edge_size(h, w, int(size / crop_pct))
    pixels = F.interpolate(pixels[None], size=target, mode="bicubic", align_corners=False, antialias=True)[0]
    top, left = (pixels.shape[1] - size) // 2, (pixels.shape[2] - size) // 2
    pixels = pixels[:, top:top + size, left:left + size].clamp(0, 1)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    return (pixels - mean) / std


class Classifier:
    """Backbone + the checkpoint's head: LayerNorm and Linear over the globally averaged last stage."""

    def __init__(self, weights: str, allow_partial: bool = False) -> None:
        from torch import nn

        from ..weights import CheckpointError, read_checkpoint

        checkpoint = read_checkpoint(weights)
        state = checkpoint.state_dict
        if "head.weight" not in state or "norm.weight" not in state:
            raise CheckpointError(f"{weights} holds no classification head (norm.*, head.*): it is a backbone, "
                                  "FCMAE pre-training or detector checkpoint; use an ImageNet fine-tuned one, e.g. "
                                  "timm/convnextv2_atto.fcmae_ft_in1k")
        self.backbone = checkpoint.backbone_class(out_features=["stage4"], out_norm=False, **checkpoint.arch_kwargs)
        self.report = checkpoint.load_into(self.backbone, source=weights, log=False, allow_partial=allow_partial)
        self.arch = checkpoint.arch
        width, classes = state["head.weight"].shape[1], state["head.weight"].shape[0]
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, classes)
        self.norm.load_state_dict({"weight": state["norm.weight"], "bias": state["norm.bias"]})
        self.head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
        self.num_classes = classes
        self.modules = nn.ModuleList([self.backbone, self.norm, self.head]).eval()

    def to(self, device) -> "Classifier":
        self.modules.to(device)
        return self

    def __call__(self, pixels):
        """Normalised (N, 3, H, W) pixels -> class probabilities (N, num_classes)."""
        (last,) = self.backbone(pixels)
        return self.head(self.norm(last.mean(dim=(-2, -1)))).softmax(dim=-1)


def class_names(num_classes: int) -> list[str] | None:
    """ImageNet class descriptions for a head of this size (1k, 12k, 21k/22k variants), from timm; None if unknown."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_classes})
    return ImageNetInfo(subset).label_descriptions() if subset else None


def run(args: argparse.Namespace) -> int:
    import torch

    from ..extractor import ImageReadError
    from ..usage import UsageError, require_device

    if args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k}: give at least 1 (the number of classes shown per image)")
    if args.image_size < 32:
        raise UsageError(f"--image-size {args.image_size} is below the network's total stride 32; use 224 (or 384 "
                         "for *_384 models)")
    if not 0 < args.crop_pct <= 1:
        raise UsageError(f"--crop-pct {args.crop_pct} is not a fraction in (0, 1]; e.g. 0.875 (Hugging Face's "
                         "default) or 1 for no crop")
    device = require_device(args.device)
    classifier = Classifier(args.weights, allow_partial=args.allow_partial).to(device)
    names = class_names(classifier.num_classes)
    print(f"{classifier.arch.describe()} with a {classifier.num_classes}-class head from {args.weights}"
          + ("" if names else " (class names unknown for this head size: printing indices)"))
    if not classifier.report.complete:
        print(f"partial load (--allow-partial): {classifier.report.summary()}")
    failed = 0
    for path in args.images:
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
