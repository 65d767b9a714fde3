"""The fused ConvNeXt block kernels: the plain block's function, with GRN and the layer scale folded.

GRN(h) = h * s + beta (:mod:`.grn`). Either h is rewritten as h * s + beta in one pass, or, for
a single image whose hidden tensor is larger than pwconv2's weight, s goes into the weight and
beta into the bias: pwconv2(GRN(h)) = h @ (W * s)^T + (W @ beta + b). The layer scale gamma
scales W's rows and b where the weight is smaller than pwconv2's output, and the output
otherwise. Folds are computed in the parameters' dtype (fp32) and cast once. The layer scale is
folded only into weights of a dtype with fp32's exponent range (fp32, bf16): the default V1
scale 1e-6 times a weight of 1e-2 is below fp16's smallest value (6e-8), so in fp16 it is
applied after the matrix product, as the plain block does.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cvx2_backbone.ops import linear
from cvx2_backbone.ops.casts import cast_once
from cvx2_backbone.ops.dispatch import (BLAS_INFERENCE, FOLDED_AUTOGRAD, ONEDNN_INFERENCE, inference_dtype,
                                        select_block_kernel)
from cvx2_backbone.ops.grn import response_scale

BlockKernel = Callable[[nn.Module, Tensor], Tensor]
Linears = type[linear.OneDnnLinears] | type[linear.BlasLinears]


def has_fp32_range(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` holds every fp32 magnitude (bf16 does, fp16 does not)."""
    return torch.finfo(dtype).max >= torch.finfo(torch.float32).max


def matmul_dtype(x: Tensor) -> torch.dtype:
    """The dtype a linear on ``x`` computes in: autocast's where autocast is on, else ``x``'s."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def branch_dtype(block: nn.Module, dtype: torch.dtype) -> torch.dtype:
    """The residual branch's dtype in the plain block: its layer scale (``gamma * x``) promotes it to fp32."""
    return dtype if block.gamma is None else torch.promote_types(dtype, block.gamma.dtype)


def fold_scale_into_weight(h: Tensor, weight: Tensor) -> bool:
    """Fold GRN's per-image scale into pwconv2's weight rather than rescale the hidden tensor ``h``:
    for a single image, when the weight has fewer values (H * W > C)."""
    return h.shape[0] == 1 and weight.numel() < h.numel()


def fold_layer_scale_into_weight(h: Tensor, weight: Tensor) -> bool:
    """Fold the layer scale into pwconv2's weight (C x 4C) rather than scale its output (N x H x W x C):
    when there are more output pixels than hidden channels, the weight is the smaller tensor."""
    return h.numel() // h.shape[-1] > weight.shape[1]


def apply_grn(block: nn.Module, h: Tensor, inplace: bool,
              weight_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """GRN folded into pwconv2 as far as that touches less memory: (h', weight, bias) with
    pwconv2(GRN(h)) = h' @ weight^T + bias (in the parameters' dtype; a folded weight is rounded once to
    ``weight_dtype`` where one is given: the product in fp32 written straight into it, the same values as
    ``(weight * s).to(weight_dtype)`` in one pass over the weight instead of two)."""
    weight, bias = block.pwconv2.weight, block.pwconv2.bias
    if block.grn is None:
        return h, weight, bias
    scale = response_scale(block.grn, h)
    if fold_scale_into_weight(h, weight):
        out = None if weight_dtype is None else torch.empty(weight.shape, dtype=weight_dtype, device=weight.device)
        return h, torch.mul(weight, scale[0], out=out), torch.addmv(bias, weight, block.grn.beta)
    # Autograd: in the dtype the plain GRN's parameters promote h to (fp32 under autocast), so that the
    # gradients of s and beta sum in it; in place (inference): in h's dtype.
    dtype = h.dtype if inplace else torch.promote_types(h.dtype, block.grn.beta.dtype)
    beta, scale = block.grn.beta.to(dtype), scale[:, None, None, :].to(dtype)
    return torch.addcmul(beta, h, scale, out=h if inplace else None), weight, bias


def _conv_backend_is_onednn(x: Tensor, weight: Tensor, dtype: torch.dtype) -> bool:
    """Whether torch runs a 1x1 convolution of NHWC ``x`` (as NCHW) with ``weight`` on oneDNN, in ``dtype``."""
    probe = torch.empty((), dtype=dtype).expand(x.shape[0], x.shape[3], x.shape[1], x.shape[2])
    kernel = torch.empty((), dtype=dtype).expand(weight.shape[0], weight.shape[1], 1, 1)
    backend = torch._C._select_conv_backend(probe, kernel, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    return backend == torch._C._ConvBackend.Mkldnn


def pointwise(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``F.linear`` on NHWC ``x``; as a 1x1 convolution of the NCHW view (oneDNN's GEMMs, backward included)
    where oneDNN is the preferred GEMM (:func:`.linear.preferred`) and torch runs that convolution on it."""
    if (x.device.type == "cpu" and linear.preferred() is linear.OneDnnLinears
            and _conv_backend_is_onednn(x, weight, matmul_dtype(x))):
        return F.conv2d(x.permute(0, 3, 1, 2), weight[:, :, None, None], bias).permute(0, 2, 3, 1)
    return F.linear(x, weight, bias)


def folded_autograd(block: nn.Module, x: Tensor) -> Tensor:
    """The block on standard differentiable ops, channels-last, with the folds (training, CUDA, fp16)."""
    shortcut = x
    h = block.dwconv(x).permute(0, 2, 3, 1)  # NHWC view; contiguous for channels-last input
    h = block.act(pointwise(block.norm(h), block.pwconv1.weight, block.pwconv1.bias))
    h, weight, bias = apply_grn(block, h, inplace=False)
    fold_gamma = (block.gamma is not None and has_fp32_range(matmul_dtype(h))
                  and fold_layer_scale_into_weight(h, weight))
    if fold_gamma:
        weight, bias = weight * block.gamma[:, None], bias * block.gamma
    out = pointwise(h, weight.to(h.dtype), bias.to(h.dtype))
    if block.gamma is not None and not fold_gamma:
        out = block.gamma * out
    out = out.to(branch_dtype(block, out.dtype))
    return shortcut + block.drop_path(out.permute(0, 3, 1, 2))


def fused_inference(block: nn.Module, x: Tensor, linears: Linears) -> Tensor:
    """The block for CPU inference: bias and activation fused into pwconv1, bias and residual into
    pwconv2, GRN applied in place (or folded into pwconv2), every product on ``linears``."""
    dtype = inference_dtype(block, x)
    shortcut = x.permute(0, 2, 3, 1)
    y = block.norm(block.dwconv(x).permute(0, 2, 3, 1)).to(dtype)
    h = linears.linear_act(y, cast_once(block.pwconv1.weight, dtype), cast_once(block.pwconv1.bias, dtype), block.act)
    h, weight, bias = apply_grn(block, h, inplace=True, weight_dtype=dtype if block.gamma is None else None)
    scale_output = block.gamma is not None and not fold_layer_scale_into_weight(h, weight)
    if block.gamma is not None and not scale_output:
        weight, bias = weight * block.gamma[:, None], bias * block.gamma
    weight, bias = cast_once(weight, dtype), cast_once(bias, dtype)  # the parameters themselves where nothing folded
    if scale_output:
        out = torch.addcmul(shortcut, linears.linear(h, weight, bias), block.gamma)
    elif shortcut.dtype == dtype == branch_dtype(block, dtype):
        out = linears.linear_add(h, shortcut, weight, bias)
    else:
        out = shortcut + linears.linear(h, weight, bias).to(branch_dtype(block, dtype))
    return out.permute(0, 3, 1, 2)


def onednn_inference(block: nn.Module, x: Tensor) -> Tensor:
    """:func:`fused_inference` on oneDNN's fused linears."""
    return fused_inference(block, x, linear.OneDnnLinears)


def blas_inference(block: nn.Module, x: Tensor) -> Tensor:
    """:func:`fused_inference` on torch's BLAS GEMMs."""
    return fused_inference(block, x, linear.BlasLinears)


_KERNELS: dict[str, BlockKernel] = {ONEDNN_INFERENCE: onednn_inference, BLAS_INFERENCE: blas_inference,
                                     FOLDED_AUTOGRAD: folded_autograd}


def fused_block_kernel(block: nn.Module, x: Tensor) -> BlockKernel | None:
    """The fused kernel to run ``block`` on ``x`` with, or None where the plain ops run (see :mod:`.dispatch`)."""
    return _KERNELS.get(select_block_kernel(block, x))
