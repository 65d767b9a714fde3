"""A classification checkpoint's own head over the backbone: what ``cvx2 classify`` runs to check that weights loaded.

The checkpoint's own head (final LayerNorm and Linear
over globally pooled stage-4 features) is kept. Images are prepared as the published ConvNeXt
preprocessor configs of Hugging Face's ``ConvNextImageProcessor`` say: bicubic resize; below 384 px
the short side goes to size / crop_pct and the centre size x size is cropped; from 384 px on the
image is resized to size x size; then ImageNet mean/std.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.data import ImageNetInfo, infer_imagenet_subset
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from cvx2_backbone.extraction.images import shortest_edge_size, to_rgb_tensor
from cvx2_backbone.weights import CheckpointError, read_checkpoint


def classifier_input(image, size: int, crop_pct: float):
    """One image of any kind the extractor accepts -> normalised (3, size, size) tensor (see module docstring)."""
    pixels = to_rgb_tensor(image)
    h, w = pixels.shape[-2:]
    target = (size, size) if size >= 384 else shortest_edge_size(h, w, int(size / crop_pct))
    pixels = F.interpolate(pixels[None], size=target, mode="bicubic", align_corners=False, antialias=True)[0]
    top, left = (pixels.shape[1] - size) // 2, (pixels.shape[2] - size) // 2
    pixels = pixels[:, top:top + size, left:left + size].clamp(0, 1)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    return (pixels - mean) / std


def untrained_head_reason(state: dict) -> str | None:
    """Why the checkpoint's head (``norm.*``, ``head.*``) is one nobody trained, read from the tensors themselves (None
    when it looks trained): a model saved before fine-tuning (e.g. ``timm.create_model('convnextv2_atto')`` with a
    pre-trained backbone) has the head's freshly initialised values, which no training leaves exactly."""
    if not bool(state["head.bias"].float().abs().max() > 0):
        return "its bias is all zeros, as a freshly initialised head's"
    if bool((state["norm.weight"].float() == 1).all()) and not bool(state["norm.bias"].float().abs().max() > 0):
        return "its LayerNorm still has its initial values (weight 1, bias 0)"
    return None


class Classifier:
    """Backbone + the checkpoint's head: LayerNorm and Linear over the globally averaged last stage."""

    def __init__(self, weights: str, allow_partial: bool = False) -> None:
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
        self.untrained_head = untrained_head_reason(state)
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
    subset = infer_imagenet_subset({"num_classes": num_classes})
    return ImageNetInfo(subset).label_descriptions() if subset else None
