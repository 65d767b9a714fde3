"""GRN's statistics in one blocked, widened pass, and GRN written as a per-channel scale.

GRN(x) = gamma * (x * Nx) + beta + x = x * s + beta with s = 1 + gamma * Nx per sample and channel,
so the fused kernels compute s (from the spatial L2 norms Gx) and fold it, and beta, into pwconv2.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable



# Bytes of squares per block: blocks of 256 KiB to 4 MiB ran equally fast on tensors of 5-93 MB
# (docs/performance.md); below that the per-block overhead (two ops) dominates, above it the
# squares no longer stay in cache.
SQUARES_BLOCK_BYTES = 4 << 20


def block_rows(n: int, rows: int, c: int, itemsize: int) -> int:
    """Rows of an (n, rows, c) tensor per block of :data:`SQUARES_BLOCK_BYTES` of squares."""
    return max(1, min(rows, SQUARES_BLOCK_BYTES // (max(n, 1) * c * itemsize)))


class SpatialL2Norm(torch.autograd.Function):
    """L2 norm over H and W of an NHWC tensor, per sample and channel, accumulated in ``dtype``.

    ``torch.linalg.vector_norm`` reduces over outer dimensions slowly on CPU (5-15x slower than
    a pass over memory); summing the squares of cache-sized row blocks gives the same value.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, dtype: torch.dtype) -> Tensor:
        n, h, w, c = x.shape
        rows = x.reshape(n, h * w, c)
        block = block_rows(n, h * w, c, torch.finfo(dtype).bits // 8)
        parts = rows.split(block, dim=1)
        squares = torch.empty((n, block, c), dtype=dtype, device=x.device)
        sums = torch.zeros((len(parts), n, c), dtype=dtype, device=x.device)
        for part, partial_sum in zip(parts, sums):
            square = squares[:, :part.shape[1]]
            if part.dtype == dtype:
                torch.mul(part, part, out=square)
            else:  # widen first: exact squares (mixed-dtype kernels are 40x slower than these two)
                square.copy_(part).mul_(square)
            torch.sum(square, dim=1, out=partial_sum)
        norm = sums.sum(dim=0).sqrt_()
        ctx.save_for_backward(x, norm)
        return norm

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        x, norm = ctx.saved_tensors
        # d|x|/dx = x / |x|, taken as 0 where the norm is 0 (as torch.linalg.vector_norm does).
        scale = torch.where(norm > 0, grad / norm, torch.zeros_like(norm))
        return x * scale[:, None, None, :].to(x.dtype), None


def statistics_dtype(dtype: torch.dtype) -> torch.dtype:
    """GRN's statistics run in fp32 or wider: squares of fp16 activations above 256 overflow fp16."""
    return torch.promote_types(dtype, torch.float32)


def spatial_norm(x: Tensor) -> Tensor:
    """Gx of NHWC ``x``: (N, C) in fp32 or wider; blocked on CPU, ``vector_norm`` elsewhere."""
    dtype = statistics_dtype(x.dtype)
    if x.device.type == "cpu":
        return SpatialL2Norm.apply(x, dtype)
    return torch.linalg.vector_norm(x, ord=2, dim=(1, 2), dtype=dtype)


def response_scale(grn: nn.Module, x: Tensor) -> Tensor:
    """s = 1 + gamma * Nx per sample and channel, (N, C) in fp32 or wider: GRN(x) = x * s + beta."""
    gx = spatial_norm(x)
    nx = gx / (gx.mean(dim=-1, keepdim=True) + grn.eps)
    return torch.addcmul(torch.ones_like(nx), grn.gamma.to(nx.dtype), nx)


def scaled_response_norm(x: Tensor, eps: float) -> Tensor:
    """GRN's Nx = Gx / (mean_c Gx + eps) of NHWC ``x``, (N, 1, 1, C), with no intermediate above sqrt(H * W).

    Gx_c = m_c * ||x_c / m_c|| with m_c = max |x_c| over H, W, and both Gx and eps are divided by the largest
    m_c of the sample: the same quotient, but the squares are at most 1, so a graph of this form stays finite in
    fp16 for maps of up to 65504 positions (the plain sum of squares overflows once an activation exceeds 256).
    An all-zero channel is scaled by 1 (its norm stays 0).
    """
    x = x.to(statistics_dtype(x.dtype))
    peak = x.abs().amax(dim=(1, 2), keepdim=True)
    peak = torch.where(peak > 0, peak, torch.ones_like(peak))
    top = peak.amax(dim=-1, keepdim=True)
    gx = torch.linalg.vector_norm(x / peak, ord=2, dim=(1, 2), keepdim=True) * (peak / top)  # Gx / top
    return gx / (gx.mean(dim=-1, keepdim=True) + eps / top)
