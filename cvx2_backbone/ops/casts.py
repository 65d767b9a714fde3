"""Parameters cast to the inference dtype once, not on every call.

Under bf16 autocast the inference kernels used to cast pwconv1's and pwconv2's fp32 weights to bf16 in every
call: at 1x224 on V2-tiny that copying took as long as the matrix products (41% of the forward, profile in
docs/performance.md). :func:`cast_once` keeps the cast copy per parameter and dtype, and makes a new one when the
parameter changes: in place (its version counter: optimizer steps, ``load_state_dict``, ``copy_``) or by a new
storage (``param.data = ...``, ``.to()``). The copy is bit-identical to ``param.to(dtype)``.
"""
from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

# id(parameter) -> (weak reference to it, {dtype: (version, data pointer, copy)}); an entry goes with its parameter.
# (Not a WeakKeyDictionary: it compares keys with ==, which tensors compute element-wise.)
_CASTS: dict[int, tuple[weakref.ref, dict]] = {}


def cast_once(param: Tensor, dtype: torch.dtype) -> Tensor:
    """``param.to(dtype)`` without autograd, cached until ``param`` changes; other tensors (folds computed in this
    call) are cast as they come, and nothing is copied where the dtype is already ``dtype``."""
    if param.dtype == dtype:
        return param
    if not isinstance(param, nn.Parameter):
        return param.to(dtype)
    entry = _CASTS.get(id(param))
    if entry is None or entry[0]() is not param:
        key = id(param)
        entry = _CASTS[key] = (weakref.ref(param, lambda _, key=key: _CASTS.pop(key, None)), {})
    version = (param._version, param.data_ptr())
    cached = entry[1].get(dtype)
    if cached is None or cached[:2] != version:
        with torch.no_grad():
            cached = entry[1][dtype] = (*version, param.detach().to(dtype))
    return cached[2]
