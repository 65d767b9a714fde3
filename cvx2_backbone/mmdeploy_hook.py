"""Registers this package's mmdeploy rewriters whenever mmdeploy is imported too, without importing torch here.

``import cvx2_backbone`` calls :func:`attach_to_mmdeploy`: with mmdeploy already imported the rewriters of
:mod:`cvx2_backbone.deploy.mmdeploy_plugin` register at once, otherwise an import hook registers them right after
mmdeploy is imported (as in mmdeploy's ``tools/deploy.py`` workers). See :mod:`cvx2_backbone.deploy.mmdeploy_compat`.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any, Callable


def _register_with_mmdeploy() -> None:
    importlib.import_module("cvx2_backbone.deploy.mmdeploy_plugin")  # registers the rewriters, once per process


class _AfterImport(importlib.abc.MetaPathFinder):
    """Import hook that runs ``action`` right after the top-level module ``name`` has been executed, then leaves."""

    def __init__(self, name: str, action: Callable[[], None]) -> None:
        self.name, self.action, self._searching = name, action, False

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name or self._searching:
            return None
        self._searching = True  # the search below asks this finder again
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching = False
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            execute = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                execute(module)
                self.action()

            spec.loader.exec_module = exec_module  # this spec's own loader object: affects this import only
        return spec


def attach_to_mmdeploy() -> None:
    """Register this package's rewriters with mmdeploy now if it is imported, else right after it is imported.

    Registration changes nothing outside mmdeploy's rewriter contexts; ``torch.onnx.export`` stays torch's own."""
    if sys.modules.get("mmdeploy") is not None:  # None: blocked, as ``import`` treats it
        _register_with_mmdeploy()
    elif not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport("mmdeploy", _register_with_mmdeploy))
