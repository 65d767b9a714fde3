"""How two sets of outputs are compared everywhere an engine or an export is checked against PyTorch."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


class OutputShapeError(RuntimeError):
    """Another runtime returned an output of another shape than PyTorch's."""


def relative_error(actual: Any, expected: Tensor) -> float:
    """max |actual - expected| / max |expected| for one output, in float64 (shapes must agree)."""
    actual = torch.as_tensor(actual).double()
    if actual.shape != expected.shape:
        raise OutputShapeError(f"a runtime returned shape {tuple(actual.shape)} where PyTorch gives "
                               f"{tuple(expected.shape)}")
    expected = expected.double()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(torch.finfo(torch.float64).tiny))


def worst_relative_error(actual: Sequence[Any], expected: Sequence[Tensor]) -> float:
    """The largest :func:`relative_error` over paired outputs (as many of each)."""
    return max(relative_error(a, e) for a, e in zip(actual, expected, strict=True))
