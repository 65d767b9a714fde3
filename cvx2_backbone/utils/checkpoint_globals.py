"""Let torch's safe ``torch.load`` (``weights_only=True``, its default since 2.6) read mmengine checkpoints.

mmengine 0.10 pickles its message hub next to the weights: ``HistoryBuffer`` objects holding numpy arrays, numpy
scalars and dtypes, and the buffer's statistics methods as ``getattr(HistoryBuffer, 'mean')``. Importing
``cvx2_backbone`` (every config of the project does, through ``custom_imports``, before any upstream tool loads
weights) adds exactly these to torch's allow-list (:func:`register`), so ``init_detector``, ``DetInferencer``,
mmseg's ``init_model``, the packaged ``tools/test.py`` and mmdeploy read checkpoints of any mmengine run; every other
global, a function that runs commands included, is still refused. Checkpoints this project's runs write need none
of it (:mod:`cvx2_backbone.engine.hooks`).
"""
from __future__ import annotations

import pickle
from typing import Any, Callable

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

_DEFAULT_STATISTICS = ("current", "max", "mean", "min")


def _history_buffer_method(owner: Any, name: str) -> Callable:
    """Stands in for ``builtins.getattr`` in safe loads: resolves HistoryBuffer's statistics methods only."""
    allowed = set(_DEFAULT_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed and hasattr(HistoryBuffer, name):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"refusing getattr({owner!r}, {name!r}) while loading a checkpoint: only HistoryBuffer "
        f"statistics methods ({sorted(allowed)}) are allowed. Load files you trust with "
        "torch.load(..., weights_only=False) yourself if you need more.")


def _numpy_globals() -> list[Callable | tuple[Callable, str]]:
    """numpy arrays, scalars and dtypes: their types and the two rebuild functions, under numpy 2's and numpy 1's
    module names (files written with numpy 1 name ``numpy.core``)."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed: list[Callable | tuple[Callable, str]] = [np.ndarray, np.dtype]
    for name in ("_reconstruct", "scalar"):
        function = getattr(multiarray, name)
        for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
            allowed.append((function, f"{module}.{name}"))
    # A dtype is unpickled as np.dtype(...) and then given its state, which torch allows only for listed types:
    # the dtype's own class (numpy.dtypes.Float64DType, ...).
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return allowed


def mmengine_checkpoint_globals() -> list[Callable | tuple[Callable, str]]:
    """Every global an mmengine (mmdet, mmseg) Runner checkpoint needs beyond torch's defaults."""
    return [HistoryBuffer, (_history_buffer_method, "builtins.getattr"), *_numpy_globals()]


def register() -> None:
    """Allow :func:`mmengine_checkpoint_globals` in every later safe ``torch.load`` of this process."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())


register()  # importing this module is what ``import cvx2_backbone`` arranges once torch is imported
