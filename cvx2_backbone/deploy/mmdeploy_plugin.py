"""This package's fixes, registered with mmdeploy's own rewriter registry (imported only when mmdeploy is).

mmdeploy's ``export`` (``mmdeploy/apis/onnx/export.py``, which ``torch2onnx`` and so ``tools/deploy.py`` call)
enters a ``RewriterContext`` and then calls ``torch.onnx.export``. The rewriter below replaces ``torch.onnx.export``
inside that context only (mmdeploy puts the original back on exit), so every mmdeploy ONNX export in the process
runs the TorchScript exporter with the fixes of :func:`.mmdeploy_compat.rewriting_fixes`, and the ConvNeXt blocks
trace their plain ops with GRN's norms in the form that stays finite in fp16 (what ``cvx2 export`` traces too).
Importing this module also registers the exact head rewriters of :mod:`.mmdeploy_exact`, and imports the backbone
module: its ``torch.fx.wrap`` call must not happen inside an mmdeploy context, whose exit undoes wraps added there
by list position (``pop(-1)``), which torch 2.15's dict of wrapped functions refuses (``KeyError: -1``).
"""
from __future__ import annotations

from typing import Any

from mmdeploy.core import FUNCTION_REWRITER
from mmdeploy.utils import IR

from cvx2_backbone.models import convnext  # noqa: F401  (its torch.fx.wrap must run outside mmdeploy's contexts)
from cvx2_backbone.ops import fp16_safe_statistics, plain_ops
from cvx2_backbone.deploy import mmdeploy_exact  # noqa: F401  (registers the exact rewriters)
from cvx2_backbone.deploy.mmdeploy_compat import rewriting_fixes, torchscript_by_default


@FUNCTION_REWRITER.register_rewriter(func_name="torch.onnx.export", ir=IR.ONNX)
def onnx_export__torchscript(*args: Any, **kwargs: Any) -> Any:
    """``torch.onnx.export`` while mmdeploy exports to ONNX (any backend): the TorchScript exporter unless the
    caller asked for ``dynamo``, ``_cast_Long`` present, direct frame lookups, the backbone's plain ops."""
    export = FUNCTION_REWRITER.get_context().origin_func
    with rewriting_fixes(), plain_ops(), fp16_safe_statistics():
        return export(*args, **torchscript_by_default(export, kwargs))
