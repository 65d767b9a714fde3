"""The backbone run on a patch mask with the semantics of the official sparse encoder, in dense tensors.

The official FCMAE encoder (MinkowskiEngine) keeps only visible sites: the dense stem's output is
zeroed on hidden patches, every depthwise conv is submanifold (outputs at visible sites only,
from visible inputs only), LayerNorm and the MLP act per site, GRN takes its statistics over the
visible sites, and the 2x2 downsampling sees whole windows because the mask lives on the coarsest
(32-pixel) grid. Here the same function is computed on dense tensors by zeroing hidden sites after
the stem, after every depthwise conv and at the end of every residual branch, and by excluding
them from GRN's norm. These are functions over the backbone's public submodules
(``downsample_layers.i``, ``stages.i.j.{dwconv,norm,pwconv1,act,grn,pwconv2,gamma,drop_path}``),
so the backbone's own blocks and fast paths stay untouched.

Two implementations compute the same values (tests/fcmae/test_encoder.py checks both against a
brute-force sparse reference):

* ``dense``: every layer on the full map, hidden sites re-zeroed (the plainest form);
* ``gather``: the per-site layers (LayerNorm, MLP, GRN) run on the visible sites only, gathered
  into an (M, C) matrix and added back into the residual stream; at the paper's mask ratio 0.6
  that skips 60% of the network's matrix products.

GRN statistics are per image by default (``grn_stats='image'``, what the dense model computes on
a whole image); ``'batch'`` reproduces the official ``MinkowskiGRN``, whose norm runs over the
active sites of the whole batch at once (official issue #86).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from cvx2_backbone.fcmae.masking import upsample_mask

if TYPE_CHECKING:
    from cvx2_backbone.models.convnext import ConvNeXt

GRN_STATS = ("image", "batch")
MASKED_IMPLS = ("gather", "dense")


def check_options(grn_stats: str, impl: str) -> None:
    """ValueErrors for unknown ``grn_stats`` / ``impl`` names."""
    if grn_stats not in GRN_STATS:
        raise ValueError(f"grn_stats must be one of {GRN_STATS} ('image': per-image statistics over visible sites; "
                         f"'batch': the official MinkowskiGRN, over the whole batch), got {grn_stats!r}")
    if impl not in MASKED_IMPLS:
        raise ValueError(f"impl must be one of {MASKED_IMPLS}, got {impl!r}")


@dataclass(frozen=True)
class Sites:
    """The visible sites of one stage: a (N, 1, H, W) 0/1 map and their flat indices into N*H*W rows."""

    keep: Tensor
    index: Tensor  # (M,) row indices of visible sites in the (N*H*W, C) view of an NHWC map
    image: Tensor  # (M,) image of each visible site

    @classmethod
    def of(cls, visible: Tensor, dtype: torch.dtype) -> "Sites":
        n, h, w = visible.shape
        index = visible.reshape(-1).nonzero().squeeze(1)
        return cls(visible[:, None].to(dtype), index, torch.div(index, h * w, rounding_mode="floor"))


def check_mask(backbone: "ConvNeXt", x: Tensor, mask: Tensor) -> tuple[int, int]:
    """The patch grid (h, w) of input ``x``; errors if ``x`` or ``mask`` do not fit it."""
    patch = backbone.min_input_size  # the total stride: one mask cell per patch of this many pixels
    height, width = x.shape[-2:]
    if height % patch or width % patch:
        raise ValueError(f"a masked forward needs an input whose sides are multiples of the {patch}-pixel patch "
                         f"(the network's total stride), got {height}x{width}; crop or resize the images, e.g. to "
                         f"{max(patch, height // patch * patch)}x{max(patch, width // patch * patch)}")
    grid = (height // patch, width // patch)
    if mask.dim() != 3 or tuple(mask.shape) != (x.shape[0], *grid):
        raise ValueError(f"mask must be (N, H/{patch}, W/{patch}) = {(x.shape[0], *grid)} with True on hidden "
                         f"patches, got {tuple(mask.shape)}")
    if mask.reshape(mask.shape[0], -1).all(dim=1).any():
        raise ValueError("every image needs at least one visible patch; the mask hides all patches of an image")
    return grid


def stage_sites(mask: Tensor, num_stages: int, dtype: torch.dtype) -> list[Sites]:
    """Visible sites of each stage, from a (N, h, w) patch mask (True = hidden) on the last stage's grid."""
    visible = ~mask.bool()
    return [Sites.of(upsample_mask(visible, 2 ** (num_stages - 1 - i)), dtype) for i in range(num_stages)]


def _grn_params(grn: nn.Module) -> tuple[Tensor, Tensor, float]:
    return grn.gamma.reshape(-1), grn.beta.reshape(-1), grn.eps


def _normalized(gx: Tensor, eps: float) -> Tensor:
    return gx / (gx.mean(dim=-1, keepdim=True) + eps)


def grn_dense(grn: nn.Module, x: Tensor, keep: Tensor, grn_stats: str) -> Tensor:
    """GRN on an NHWC map with its L2 norm over visible sites only (``keep``: (N, H, W, 1))."""
    gamma, beta, eps = _grn_params(grn)
    dims = (1, 2) if grn_stats == "image" else (0, 1, 2)
    dtype = torch.promote_types(x.dtype, torch.float32)
    gx = torch.linalg.vector_norm(x * keep, ord=2, dim=dims, keepdim=True, dtype=dtype)
    nx = _normalized(gx, eps).to(x.dtype)
    return gamma * (x * nx) + beta + x


def grn_rows(grn: nn.Module, rows: Tensor, sites: Sites, batch: int, grn_stats: str) -> Tensor:
    """GRN on the (M, C) rows of visible sites; the norm per image (segment sums) or over all rows."""
    gamma, beta, eps = _grn_params(grn)
    dtype = torch.promote_types(rows.dtype, torch.float32)
    squares = rows.to(dtype).square()
    if grn_stats == "image":
        sums = squares.new_zeros(batch, rows.shape[1]).index_add_(0, sites.image, squares)
        nx = _normalized(_norm_of_sums(sums), eps).to(rows.dtype)[sites.image]
    else:
        nx = _normalized(_norm_of_sums(squares.sum(dim=0, keepdim=True)), eps).to(rows.dtype)
    return gamma * (rows * nx) + beta + rows


def _norm_of_sums(sums: Tensor) -> Tensor:
    """sqrt of sums of squares, with gradient 0 where a sum is 0 (as torch's norms), not sqrt's infinite one."""
    positive = sums > 0
    return torch.where(positive, sums, torch.ones_like(sums)).sqrt() * positive


def _branch_tail(block: nn.Module, x: Tensor) -> Tensor:
    x = block.pwconv2(x)
    return x if block.gamma is None else block.gamma * x


def block_dense(block: nn.Module, x: Tensor, sites: Sites, grn_stats: str) -> Tensor:
    """One block on an NCHW map that is zero on hidden sites; the output is zero there too."""
    keep = sites.keep
    y = (block.dwconv(x) * keep).permute(0, 2, 3, 1)  # submanifold conv: outputs at visible sites only
    y = block.act(block.pwconv1(block.norm(y)))
    if block.grn is not None:
        y = grn_dense(block.grn, y, keep.permute(0, 2, 3, 1), grn_stats)
    y = _branch_tail(block, y).permute(0, 3, 1, 2) * keep
    return x + block.drop_path(y)


def block_gather(block: nn.Module, x: Tensor, sites: Sites, grn_stats: str) -> Tensor:
    """:func:`block_dense`'s result with LayerNorm, MLP and GRN run on the visible sites only."""
    n, c, h, w = x.shape
    rows = block.dwconv(x).permute(0, 2, 3, 1).reshape(n * h * w, c).index_select(0, sites.index)
    rows = block.act(block.pwconv1(block.norm(rows)))
    if block.grn is not None:
        rows = grn_rows(block.grn, rows, sites, n, grn_stats)
    rows = _branch_tail(block, rows)
    if not isinstance(block.drop_path, nn.Identity):  # per image, as the dense DropPath: its factors, per site
        rows = rows * block.drop_path(rows.new_ones(n, 1))[sites.image]
    stream = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    return stream.index_add(0, sites.index, rows.to(stream.dtype)).view(n, h, w, c).permute(0, 3, 1, 2)


_BLOCKS = {"dense": block_dense, "gather": block_gather}


def masked_forward(backbone: "ConvNeXt", x: Tensor, mask: Tensor, grn_stats: str = "image",
                   impl: str = "gather") -> tuple[Tensor, ...]:
    """Every stage's output of ``backbone`` on images ``x`` with patches ``mask`` (True = hidden) removed.

    Returns NCHW maps (before any output norm), zero on hidden sites. The stem runs densely on the
    whole image, as in the official code; hidden patches cannot leak into visible ones because
    every later layer is confined to visible sites and windows.
    """
    check_options(grn_stats, impl)
    backbone._check_input(x)
    check_mask(backbone, x, mask)
    run_block = _BLOCKS[impl]
    x = x.contiguous(memory_format=torch.channels_last)
    all_sites = stage_sites(mask.to(x.device), backbone.num_stages, x.dtype)
    outputs = []
    for i, sites in enumerate(all_sites):
        x = backbone.downsample_layers[i](x) * sites.keep
        for block in backbone.stages[i]:
            x = run_block(block, x, sites, grn_stats)
        outputs.append(x)
    return tuple(outputs)
