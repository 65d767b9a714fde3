"""How much padding an image changes its features, with and without treating the padding as hidden patches.

A detector pads every image of a batch to a common size. Plain ConvNeXt V2 features inside the
image then depend on the padding: GRN's statistics pool over the whole map, padding included,
and convolutions near the image's edge see padded values instead of zeros. Running the backbone
with the padding as a hidden-patch mask (:func:`~.encoder.masked_forward`) removes both when the
image sides are multiples of 32: the padded region is zero after the stem and stays out of every
statistic. ``visible-grn`` masks only GRN's statistics, to tell the two effects apart.
Used by tools/fcmae_padding.py; see docs/fcmae.md for the numbers.
"""
from __future__ import annotations

import argparse
from typing import Sequence

import torch
from torch import Tensor, nn

from cvx2_backbone.benchmark.models import randomize_
from cvx2_backbone.models.convnext import ConvNeXt, ConvNeXtV2
from cvx2_backbone.fcmae.encoder import grn_dense, masked_forward, stage_sites
from cvx2_backbone.fcmae.model import IMAGENET_MEAN, IMAGENET_STD
from cvx2_backbone.fcmae.pictures import load_square, sample_photos

MODES = ("plain", "visible-grn", "masked")


def _visible_grn_forward(backbone: ConvNeXt, x: Tensor, mask: Tensor) -> tuple[Tensor, ...]:
    """The plain backbone, except that GRN's norm skips the hidden (padded) sites."""
    outputs = []
    for i, sites in enumerate(stage_sites(mask, backbone.num_stages, x.dtype)):
        x = backbone.downsample_layers[i](x)
        for block in backbone.stages[i]:
            y = block.act(block.pwconv1(block.norm(block.dwconv(x).permute(0, 2, 3, 1))))
            if block.grn is not None:
                y = grn_dense(block.grn, y, sites.keep.permute(0, 2, 3, 1), "image")
            y = block.pwconv2(y)
            y = y if block.gamma is None else block.gamma * y
            x = x + y.permute(0, 3, 1, 2)
        outputs.append(x)
    return tuple(outputs)


def features(backbone: ConvNeXt, x: Tensor, mask: Tensor, mode: str) -> tuple[Tensor, ...]:
    """Stage outputs of ``x`` in one of ``MODES`` (``mask``: True on padded patches)."""
    if mode == "plain":
        return backbone(x)
    if mode == "visible-grn":
        return _visible_grn_forward(backbone, x, mask)
    return masked_forward(backbone, x, mask)


@torch.no_grad()
def padding_change(backbone: ConvNeXt, image: Tensor, padded_width: int, mode: str,
                   border: int = 64) -> list[float]:
    """Relative change per stage of the features inside ``image`` (1, 3, H, W) when zero-padded on the right.

    The change is ||f_padded - f|| / ||f|| over the image's own region, leaving out a strip of
    ``border`` pixels at the padded edge (where even a V1 backbone must differ: its convolutions
    see the padding).
    """
    _, _, height, width = image.shape
    patch = backbone.min_input_size
    padded = nn.functional.pad(image, (0, padded_width - width))
    nothing_hidden = torch.zeros(1, height // patch, width // patch, dtype=torch.bool)
    pad_hidden = torch.zeros(1, height // patch, padded_width // patch, dtype=torch.bool)
    pad_hidden[:, :, width // patch:] = True
    own = features(backbone, image, nothing_hidden, mode)
    with_pad = features(backbone, padded, pad_hidden, mode)
    changes = []
    for stride, a, b in zip(backbone.out_strides, own, with_pad):
        keep = max(1, (width - border) // stride)
        a, b = a[..., :keep], b[..., :a.shape[-2], :keep]
        changes.append(float((b - a).norm() / a.norm()))
    return changes


def random_backbone(version: str, arch: str = "atto", seed: int = 0) -> ConvNeXt:
    """V1 or V2 with random weights (GRN gamma ~ N(0, 0.5), as in the design notes' measurement), no output norms."""
    cls = ConvNeXtV2 if version == "V2" else ConvNeXt
    return randomize_(cls(arch=arch, out_norm=False), seed).eval()


def photo(size: int) -> Tensor:
    """matplotlib's sample photo, resized to size x size, ImageNet-normalised, (1, 3, size, size)."""
    pixels = torch.from_numpy(load_square(sample_photos()[0], size).copy()).permute(2, 0, 1)[None].float()
    return (pixels - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="padding dependence of ConvNeXt features, with and without masking")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--padded-width", type=int, default=640)
    parser.add_argument("--border", type=int, default=64)
    args = parser.parse_args(argv)
    image = photo(args.size)
    print("| backbone | mode | " + " | ".join(f"stage{i + 1}" for i in range(4)) + " |")
    print("| --- | --- |" + " ---: |" * 4)
    for version in ("V2", "V1"):
        backbone = random_backbone(version)
        for mode in MODES:
            changes = padding_change(backbone, image, args.padded_width, mode, args.border)
            print(f"| {version}-atto | {mode} | " + " | ".join(f"{100 * c:.2g}%" for c in changes) + " |")
    return 0
