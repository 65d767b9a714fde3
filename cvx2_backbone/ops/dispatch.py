"""Which implementation of a ConvNeXt block runs, decided per call, and a record of what ran.

A block runs one of four kernels (names as recorded by :func:`record_kernels`):

* ``plain``: the official formulation in standard torch ops (``Block.forward`` itself);
* ``onednn_inference`` / ``blas_inference``: CPU, no gradient needed, in a dtype the CPU runs
  natively (:data:`.linear.INFERENCE_DTYPES`): the folds of :mod:`.block` with fused epilogues, the
  matrix products on oneDNN's linear (AVX-512 CPUs) or on torch's BLAS (others; :mod:`.linear`);
* ``folded_autograd``: everything else on CPU and CUDA (autograd, half precision without native
  support): the same folds on standard differentiable ops.

The plain ops are chosen whenever the fast path is switched off (the block's ``fast_path`` flag,
``CVX2_FAST_PATH=0``, :func:`plain_ops`, ``torch.backends.mkldnn`` disabled for CPU tensors) and
while anything traces or exports the model (``torch.compile``, ``torch.export``, ``torch.onnx.export``
with either exporter, ``torch.jit.trace``/``script``, ``torch.fx``), so graphs hold only standard ops.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from collections import Counter
from typing import Any, Iterator

import torch
from torch import Tensor, fx

from cvx2_backbone.ops import linear

PLAIN, FOLDED_AUTOGRAD = "plain", "folded_autograd"
ONEDNN_INFERENCE, BLAS_INFERENCE = "onednn_inference", "blas_inference"
KERNELS = (PLAIN, ONEDNN_INFERENCE, BLAS_INFERENCE, FOLDED_AUTOGRAD)
_INFERENCE_KERNELS = {linear.OneDnnLinears: ONEDNN_INFERENCE, linear.BlasLinears: BLAS_INFERENCE}
FAST_PATH_ENV = "CVX2_FAST_PATH"
_ENV_VALUES = {"": True, "1": True, "auto": True, "on": True, "0": False, "off": False}

_plain_forced: contextvars.ContextVar[bool] = contextvars.ContextVar("cvx2_plain_ops", default=False)
_fp16_safe: contextvars.ContextVar[bool] = contextvars.ContextVar("cvx2_fp16_safe_statistics", default=False)
_recorders: list[Counter] = []


@contextlib.contextmanager
def _switched(switch: contextvars.ContextVar[bool], value: bool) -> Iterator[None]:
    """``switch`` set to ``value`` inside the ``with`` block, restored after it."""
    token = switch.set(value)
    try:
        yield
    finally:
        switch.reset(token)


def plain_ops() -> contextlib.AbstractContextManager[None]:
    """Run every ConvNeXt block inside the ``with`` block on the plain ops (export, debugging, comparisons)."""
    return _switched(_plain_forced, True)


def fp16_safe_statistics(enabled: bool = True) -> contextlib.AbstractContextManager[None]:
    """In the block the plain GRN takes its norms of inputs scaled by their maxima (:func:`.grn.scaled_response_norm`).

    Mathematically the official formula, equal to it in fp32 within rounding; a graph traced or exported here
    keeps that form, so it does not overflow when a converter or runtime later runs it in fp16.
    """
    return _switched(_fp16_safe, enabled)


def fp16_safe_statistics_enabled() -> bool:
    """Whether :func:`fp16_safe_statistics` is on for this call."""
    return _fp16_safe.get()


@contextlib.contextmanager
def record_kernels() -> Iterator[Counter]:
    """Count, per kernel name, the block calls made inside the ``with`` block (eager calls only)."""
    counts: Counter = Counter()
    _recorders.append(counts)
    try:
        yield counts
    finally:
        _recorders.remove(counts)


def fast_path_env_enabled() -> bool:
    """``CVX2_FAST_PATH``: unset, ``1``/``auto``/``on`` allow the fast path, ``0``/``off`` turn it off."""
    value = os.environ.get(FAST_PATH_ENV, "").strip().lower()
    if value not in _ENV_VALUES:
        raise ValueError(f"{FAST_PATH_ENV}={os.environ[FAST_PATH_ENV]!r} is not understood; set it to 0 (plain ops) "
                         "or 1 (the fast path where it applies), or unset it")
    return _ENV_VALUES[value]


def onednn_enabled() -> bool:
    """Whether torch may use oneDNN (``torch.backends.mkldnn.enabled``, also set by ``mkldnn.flags``)."""
    return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


def is_tracing(x: Any) -> bool:
    """Whether a tracer, exporter or compiler sees this call rather than eager execution."""
    return (torch.compiler.is_compiling() or torch.compiler.is_exporting() or isinstance(x, fx.Proxy)
            or torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())


def fast_path_allowed(x: Any) -> bool:
    """The global switches: no tracing, no :func:`plain_ops`, ``CVX2_FAST_PATH`` not 0, oneDNN on for CPU."""
    if is_tracing(x) or _plain_forced.get() or not fast_path_env_enabled():
        return False
    return x.device.type != "cpu" or onednn_enabled()


def inference_dtype(block: torch.nn.Module, x: Tensor) -> torch.dtype | None:
    """The dtype to run ``block`` on ``x`` in with a CPU inference kernel, or None where none applies.

    It applies on CPU when no gradient is needed, without active drop path, in fp32, and in bf16
    or fp16 (weights and input of that dtype, or autocast to it) where the CPU runs them natively.
    """
    if x.device.type != "cpu" or not linear.INFERENCE_DTYPES:
        return None
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in block.parameters())):
        return None
    if block.training and not isinstance(block.drop_path, torch.nn.Identity):
        return None
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
    else:
        dtype = block.pwconv1.weight.dtype
        if x.dtype != dtype:
            return None
    return dtype if dtype in linear.INFERENCE_DTYPES else None


def select_block_kernel(block: torch.nn.Module, x: Tensor) -> str:
    """The kernel for one call of ``block`` on ``x``.

    Tracing and compiling always get ``plain`` (checked first, so compilers never see the rest);
    eager calls are counted for :func:`record_kernels`.
    """
    if is_tracing(x):
        return PLAIN
    if not (block.fast_path and fast_path_allowed(x)) or x.device.type not in ("cpu", "cuda"):
        kernel = PLAIN
    elif inference_dtype(block, x) is not None:
        kernel = _INFERENCE_KERNELS[linear.preferred()]
    else:
        kernel = FOLDED_AUTOGRAD
    for counts in _recorders:
        counts[kernel] += 1
    return kernel
