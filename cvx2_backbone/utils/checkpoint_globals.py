"""Let torch's safe ``torch.load`` (``weights_only=True``, its default since 2.6) read mmengine checkpoints.

mmengine 0.10 pickles its message hub next to the weights: ``HistoryBuffer`` objects holding numpy arrays, numpy
scalars and dtypes, and the buffer's statistics methods as ``getattr(HistoryBuffer, 'mean')``. Importing
``cvx2_backbone`` (every config of the project does, through ``custom_imports``, before any upstream tool loads
weights) adds exactly these to torch's allow-list (:func:`register`), so ``init_detector``, ``DetInferencer``,
mmseg's ``init_model``, the packaged ``tools/test.py`` and mmdeploy read checkpoints of any mmengine run; every other
global, a function that runs commands included, is still refused. Checkpoints this project's runs write need none
of it (:mod:`cvx2_backbone.engine.hooks`).

Two things keep that guarantee on the maintained fork (onedl-mmengine), whose checkpoint loader
``mmengine.runner.checkpoint._safe_torch_load`` (a) retries a pickle the safe loader refused with
``weights_only=False``, so a file whose unpickling runs a command would run it, and (b) wraps each load in
``torch.serialization.safe_globals([...])``, whose exit removes those globals from torch's process-wide allow-list even
when they were registered before (ours included). Once ``mmengine.runner.checkpoint`` is imported,
:func:`close_unsafe_fallback` replaces that function by one that loads the same way with the same allow-list but
refuses instead of falling back (unless the user opts in with ``CVX2_ALLOW_UNSAFE_PICKLE=1``) and puts back the
process-wide allow-list after each load. Upstream mmengine 0.10.7 has no such function (it calls ``torch.load``,
safe by default): there this does nothing.
"""
from __future__ import annotations

import functools
import pickle
import sys
import warnings
from typing import Any, Callable

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from cvx2_backbone.utils.import_hooks import after_import
from cvx2_backbone.utils.unsafe_pickle import UNSAFE_PICKLE_ENV, unsafe_pickle_opted_in
FORK_LOADER = "mmengine.runner.checkpoint"  # onedl-mmengine's module holding ``_safe_torch_load``

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


def refusal_note() -> str:
    return (f"cvx2_backbone refused it: a pickle the safe loader refuses can run any code. mmengine's fallback to "
            f"weights_only=False is closed once cvx2_backbone is imported; only if you trust the file's source, set "
            f"{UNSAFE_PICKLE_ENV}=1 to let it load with full unpickling.")


def safe_mmengine_load(module: Any) -> Callable:
    """A replacement for ``module._safe_torch_load`` (onedl-mmengine): same signature, same allow-list, no fallback
    to full unpickling, and torch's process-wide allow-list as it was before the load."""
    fork_load = module._safe_torch_load

    @functools.wraps(fork_load)
    def _safe_torch_load(file: Any, map_location: Any = None, weights_only: bool | None = None) -> Any:
        if weights_only is not None:  # the caller decided; the fork does not fall back then either
            return torch.load(file, map_location=map_location, weights_only=weights_only)
        allowed_before = torch.serialization.get_safe_globals()
        host_allowed = getattr(module, "get_torch_safe_globals", list)()
        try:
            with torch.serialization.safe_globals(host_allowed):
                return torch.load(file, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            if not unsafe_pickle_opted_in():
                raise pickle.UnpicklingError(f"{err}\n\n{refusal_note()}") from err
            warnings.warn(f"{UNSAFE_PICKLE_ENV} is set: loading {file!r} with full unpickling (weights_only=False)",
                          stacklevel=2)
            return torch.load(file, map_location=map_location, weights_only=False)
        finally:  # safe_globals' exit removed its list, ours among it where they overlap
            torch.serialization.add_safe_globals(allowed_before)

    _safe_torch_load.cvx2_closed = True  # type: ignore[attr-defined]
    return _safe_torch_load


def close_unsafe_fallback(module: Any = None) -> bool:
    """Put :func:`safe_mmengine_load` in place of the fork's loader in ``module`` (default: the imported
    ``mmengine.runner.checkpoint``); False, changing nothing, where there is no such loader (upstream mmengine)."""
    module = sys.modules.get(FORK_LOADER) if module is None else module
    current = getattr(module, "_safe_torch_load", None)
    if current is None or getattr(current, "cvx2_closed", False):
        return current is not None
    module._safe_torch_load = safe_mmengine_load(module)
    return True


def register() -> None:
    """Allow :func:`mmengine_checkpoint_globals` in every later safe ``torch.load`` of this process, and close the
    fork's unsafe fallback as soon as its loader is imported."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    after_import(FORK_LOADER, close_unsafe_fallback)


register()  # importing this module is what ``import cvx2_backbone`` arranges once torch is imported
