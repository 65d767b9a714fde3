"""Let torch >= 2.6's safe ``torch.load`` read mmengine's own checkpoints, and nothing more.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch 2.6 that means
``weights_only=True``, which refuses the objects a Runner checkpoint stores next to the weights:
the message hub's ``HistoryBuffer`` (numpy arrays and scalars inside, and its statistics methods
pickled as ``getattr(HistoryBuffer, 'min')``). Instead of switching safe loading off, these exact
globals are allowed while the tools run; every other global is still refused.
"""
from __future__ import annotations

import pickle
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


_DEFAULT_STATISTICS = ("current", "max", "mean", "min")


def _history_buffer_method(owner: Any, name: str) -> Callable:
    """Stand-in for ``getattr`` that resolves only HistoryBuffer's statistics methods."""
    allowed = set(_DEFAULT_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed and hasattr(HistoryBuffer, name):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"refusing getattr({owner!r}, {name!r}) while loading a checkpoint: only HistoryBuffer "
        f"statistics methods ({sorted(allowed)}) are allowed. Load files you trust with "
        "torch.load(..., weights_only=False) yourself if you need more.")


def _numpy_globals() -> list[Callable | tuple[Callable, str]]:
    """numpy's array/scalar/dtype rebuilders, under numpy 2's and numpy 1's module names."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list[Callable | tuple[Callable, str]] = [np.ndarray, np.dtype]
    for name in ("_reconstruct", "scalar"):
        function = getattr(multiarray, name)
        for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
            allowed.append((function, f"{module}.{name}"))
    # numpy >= 1.25 may pickle dtypes through their classes (numpy.dtypes.Float64DType, ...).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return allowed


def mmengine_checkpoint_globals() -> list[Callable | tuple[Callable, str]]:
    """Every global an mmengine (mmdet, mmseg) Runner checkpoint needs beyond torch's defaults."""
    return [HistoryBuffer, (_history_buffer_method, "builtins.getattr"), *_numpy_globals()]


@contextmanager
def allow_mmengine_checkpoints() -> Iterator[None]:
    """Within this block ``torch.load`` (safe mode) also accepts mmengine's checkpoint objects."""
    with torch.serialization.safe_globals(mmengine_checkpoint_globals()):
        yield
