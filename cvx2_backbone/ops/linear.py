"""The three matrix products of the CPU inference kernels, on oneDNN's fused linear or on torch's BLAS GEMM.

* oneDNN: ``torch.ops.mkldnn._linear_pointwise`` (the kernel ``torch.compile`` emits for a linear
  followed by an activation or an addition) fuses the bias with the activation into pwconv1 and
  the bias with the residual addition into pwconv2. No autograd formula: inference only.
* BLAS: ``addmm``, with the residual as its accumulator (C = residual + x @ W^T) and the
  activation applied in place.

Which one runs (:func:`preferred`): oneDNN where torch's CPU kernels use AVX-512, BLAS on other
CPUs. Measured (docs/performance.md): on AVX-512 CPUs oneDNN's GEMMs ran about 2x MKL's (which
runs its AVX2 code on AMD CPUs); on AVX2 CPUs MKL matched or beat oneDNN (up to 1.3x at
ConvNeXt's shapes) and oneDNN's fused erf-GELU cost more than torch's GELU afterwards.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from timm.layers import activations as timm_activations
from torch import Tensor, nn


def _find_linear_pointwise() -> Any:
    """The op, or None where this torch lacks it (or oneDNN)."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        op.default, op.binary  # noqa: B018 - both overloads must exist
    except (AttributeError, RuntimeError):
        return None
    return op if torch.backends.mkldnn.is_available() else None


def native_cpu_dtypes() -> tuple[torch.dtype, ...]:
    """fp32, plus bf16 and fp16 where oneDNN runs them natively on this CPU (AVX512-BF16, AVX512-FP16, AMX)."""
    dtypes = [torch.float32]
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        dtypes.append(torch.bfloat16)
    if torch.ops.mkldnn._is_mkldnn_fp16_supported():
        dtypes.append(torch.float16)
    return tuple(dtypes)


LINEAR_POINTWISE = _find_linear_pointwise()
# The dtypes the CPU inference kernels run in: oneDNN's native ones (BLAS GEMMs of bf16/fp16 go through oneDNN too).
INFERENCE_DTYPES = native_cpu_dtypes() if LINEAR_POINTWISE is not None else ()
# Activations oneDNN fuses into a linear: module type -> (post-op, scalars, algorithm); nn.GELU is read.
_POST_OPS: dict[type, tuple[str, list, str]] = {
    timm_activations.GELU: ("gelu", [None], "none"), timm_activations.GELUTanh: ("gelu", [None], "tanh"),
    nn.ReLU: ("relu", [], ""), nn.SiLU: ("swish", [], ""),
}
_GELUS = {nn.GELU: None, timm_activations.GELU: "none", timm_activations.GELUTanh: "tanh"}
_INPLACE_ACTS: dict[type, Callable[[Tensor], Tensor]] = {nn.ReLU: torch.relu_,
                                                         nn.SiLU: lambda t: F.silu(t, inplace=True)}


def activation_post_op(act: nn.Module) -> tuple[str, list, str] | None:
    """``act`` as a oneDNN post-op (name, scalars, algorithm), or None if oneDNN cannot fuse it."""
    if type(act) is nn.GELU:
        return "gelu", [None], act.approximate
    return _POST_OPS.get(type(act))


def activation_(act: nn.Module, x: Tensor) -> Tensor:
    """``act(x)``, in place where torch has an in-place version of it."""
    if type(act) in _GELUS:
        approximate = _GELUS[type(act)] or act.approximate
        return torch.ops.aten.gelu_(x, approximate=approximate)
    inplace = _INPLACE_ACTS.get(type(act))
    return inplace(x) if inplace is not None else act(x)


class OneDnnLinears:
    """oneDNN's fused linears."""

    name = "onednn"

    @staticmethod
    def linear_act(x: Tensor, weight: Tensor, bias: Tensor, act: nn.Module) -> Tensor:
        """``act(x @ weight.T + bias)`` with the bias and (where oneDNN can) the activation fused."""
        post_op = activation_post_op(act)
        if post_op is None:
            return act(LINEAR_POINTWISE(x, weight, bias, "none", [], ""))
        return LINEAR_POINTWISE(x, weight, bias, *post_op)

    @staticmethod
    def linear_add(x: Tensor, other: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """``other + x @ weight.T + bias`` with the bias and the addition fused (``other`` of x's dtype)."""
        return LINEAR_POINTWISE.binary(x, other.contiguous(), weight, bias, "add")

    @staticmethod
    def linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return LINEAR_POINTWISE(x, weight, bias, "none", [], "")


class BlasLinears:
    """The same products on torch's BLAS GEMM."""

    name = "blas"

    @staticmethod
    def linear_act(x: Tensor, weight: Tensor, bias: Tensor, act: nn.Module) -> Tensor:
        return activation_(act, F.linear(x, weight, bias))

    @staticmethod
    def linear_add(x: Tensor, other: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = torch.addmm(other.reshape(rows.shape[0], weight.shape[0]), rows, weight.t()).add_(bias)
        return out.view(*x.shape[:-1], weight.shape[0])

    linear = staticmethod(F.linear)


def preferred() -> type[OneDnnLinears] | type[BlasLinears]:
    """oneDNN's linears where torch's CPU kernels use AVX-512, else the BLAS (see the module docstring)."""
    return OneDnnLinears if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else BlasLinears
