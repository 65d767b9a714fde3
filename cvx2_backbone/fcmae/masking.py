"""Patch masks and patch (un)folding for FCMAE.

A mask is a bool tensor (N, h, w) on the encoder's coarsest grid (one cell per 32x32-pixel patch
for the standard 4-stage ConvNeXt), True where a patch is hidden, as in the official code's
``1 is remove``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def check_mask_ratio(ratio: float) -> float:
    """The ratio as a float, or a ValueError unless 0 < ratio < 1."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) < 1.0:
        raise ValueError(f"mask_ratio must be strictly between 0 and 1 (the share of hidden patches; the paper "
                         f"uses 0.6), got {ratio!r}")
    return float(ratio)


def num_visible(num_patches: int, ratio: float) -> int:
    """Patches left visible per image: int(L * (1 - ratio)) as in the official code, checked to be 1..L-1."""
    keep = int(num_patches * (1.0 - ratio))
    if not 0 < keep < num_patches:
        raise ValueError(f"mask_ratio {ratio} leaves {keep} of {num_patches} patches visible; an image needs at "
                         "least one visible and one hidden patch: use larger images or another mask_ratio")
    return keep


def random_patch_mask(batch: int, grid: tuple[int, int], ratio: float, *, device: torch.device | str | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
    """A random mask per image hiding the same number of patches in each, (N, h, w) bool, True = hidden."""
    h, w = grid
    keep = num_visible(h * w, check_mask_ratio(ratio))
    noise = torch.rand(batch, h * w, device=device, generator=generator)
    order = noise.argsort(dim=1)
    mask = torch.ones(batch, h * w, dtype=torch.bool, device=device)
    mask.scatter_(1, order[:, :keep], False)
    return mask.view(batch, h, w)


def upsample_mask(mask: Tensor, scale: int) -> Tensor:
    """Each cell of an (N, h, w) mask repeated into a scale x scale block: (N, h*scale, w*scale)."""
    return mask.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)


def patchify(images: Tensor, patch: int) -> Tensor:
    """(N, C, H, W) -> (N, L, patch*patch*C); a patch's pixels ordered (row, column, channel), as officially."""
    n, c, h, w = images.shape
    x = images.reshape(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: Tensor, patch: int, grid: tuple[int, int], channels: int) -> Tensor:
    """The inverse of :func:`patchify`: (N, L, patch*patch*C) -> (N, C, h*patch, w*patch)."""
    n = patches.shape[0]
    h, w = grid
    x = patches.reshape(n, h, w, patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(n, channels, h * patch, w * patch)
