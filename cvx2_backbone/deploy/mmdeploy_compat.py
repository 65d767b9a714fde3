"""What mmdeploy 1.3.1 needs to export with current torch (measured with torch 2.15), and how it gets it.

mmdeploy 1.3.1 (December 2023, its last release) was written for the TorchScript ONNX exporter of torch <= 2.1.
With torch 2.15, its ``torch2onnx`` fails twice before it writes a file:

1. ``torch.onnx.export`` runs the dynamo exporter by default since torch 2.9. mmdeploy calls it without
   ``dynamo=``, so the export goes through ``torch.export``, which ignores mmdeploy's symbolic rewriters and
   refuses its dynamic axes (``Detected mismatch between the structure of inputs and dynamic_shapes``).
2. mmdeploy's RoIAlign symbolic (``mmdeploy/mmcv/ops/roi_align.py``) imports ``_cast_Long`` from
   ``torch.onnx.symbolic_opset9``, which torch 2.15 no longer has (ImportError at the first RoI head).

mmdeploy also finds each rewriter's context by calling ``inspect.stack()``, which reads the source of every frame
and may search ``sys.modules`` for each: about 0.1 s per rewritten call once mmdet and mmseg are imported, several
seconds per export (measured with cProfile on the 2-core machine).

:mod:`.mmdeploy_plugin` registers a rewriter of ``torch.onnx.export`` with mmdeploy, active only inside mmdeploy's
ONNX export context, that exports with ``dynamo=False`` by default under :func:`rewriting_fixes` (``_cast_Long``
supplied, frames looked up directly). ``import cvx2_backbone`` registers it (and the exact rewriters of
:mod:`.mmdeploy_exact`) in every process that imports both packages, in either order
(:func:`cvx2_backbone.utils.import_hooks.after_import`): mmdeploy's ``tools/deploy.py`` workers import this package
through the model config's ``custom_imports`` before they export.
"""
from __future__ import annotations

import contextlib
import inspect
import sys
from typing import Any, Callable, Iterator

import torch

MMDEPLOY_VERSION = "1.3.1"  # the version these fixes were written for and tested with
INSTALL_HINT = ("install mmdeploy 1.3.1 without its declared dependencies (it pins protobuf<=3.20.2, which "
                "onnx >= 1.16 rules out): pip install --no-deps mmdeploy==1.3.1 && pip install aenum")


def require_mmdeploy() -> Any:
    """Import mmdeploy, or raise an ImportError that says how to install it on this stack."""
    try:
        import mmdeploy
    except ImportError as error:
        raise ImportError(f"mmdeploy is not installed; {INSTALL_HINT}") from error
    try:
        import aenum  # noqa: F401  (mmdeploy registers its codebases with aenum.extend_enum)
    except ImportError as error:
        raise ImportError(f"mmdeploy needs aenum, which is not installed; {INSTALL_HINT}") from error
    return mmdeploy  # importing it registered this package's rewriters (``import cvx2_backbone`` arranged that)


def _cast_long(g: Any, value: Any, non_blocking: Any) -> Any:
    """torch's former ``symbolic_opset9._cast_Long``: an ONNX Cast to int64."""
    return g.op("Cast", value, to_i=torch.onnx.TensorProtoDataType.INT64)


def _frame_func(top: int = 1) -> Any:
    """mmdeploy's ``rewriter_utils.get_frame_func`` without ``inspect.stack()``: the function of the frame ``top``
    levels above this call, looked up by name in that frame's globals, exactly as mmdeploy does."""
    frame = sys._getframe(top)
    name = frame.f_code.co_name
    if name not in frame.f_globals:
        raise AssertionError(f"Can not find function: {name} in global.")
    return frame.f_globals[name]


@contextlib.contextmanager
def rewriting_fixes() -> Iterator[None]:
    """While mmdeploy exports or rewrites: ``symbolic_opset9._cast_Long`` exists and rewriter contexts are found
    without ``inspect.stack()``. Everything is undone on exit."""
    import torch.onnx.symbolic_opset9 as opset9
    from mmdeploy.core.rewriters import function_rewriter, symbolic_rewriter

    add_cast_long = not hasattr(opset9, "_cast_Long")
    frame_lookups = {module: module.get_frame_func for module in (function_rewriter, symbolic_rewriter)}
    if add_cast_long:
        opset9._cast_Long = _cast_long
    for module in frame_lookups:
        module.get_frame_func = _frame_func
    try:
        yield
    finally:
        if add_cast_long:
            del opset9._cast_Long
        for module, lookup in frame_lookups.items():
            module.get_frame_func = lookup


def torchscript_by_default(export: Callable, kwargs: dict) -> dict:
    """``kwargs`` of a ``torch.onnx.export`` call with ``dynamo=False`` unless the caller chose (torch >= 2.9 defaults
    to the dynamo exporter, which mmdeploy's rewriters do not reach)."""
    if "dynamo" in inspect.signature(export).parameters:
        return {"dynamo": False, **kwargs}
    return kwargs

