"""Run an action once a module is imported, whenever that happens, without importing it here.

``import cvx2_backbone`` stays free of torch (the command line answers ``--help`` at once) yet must act on modules
other code imports later: torch's safe-loading allow-list (:mod:`cvx2_backbone.utils.checkpoint_globals`) and mmdeploy's
rewriter registry (:mod:`cvx2_backbone.deploy.mmdeploy_plugin`, reached in mmdeploy's ``tools/deploy.py`` workers).
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any, Callable


class _AfterImport(importlib.abc.MetaPathFinder):
    """Import hook that runs ``action`` right after the module ``name`` has been executed, then leaves."""

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


def after_import(name: str, action: Callable[[], None]) -> None:
    """Run ``action`` now if the module ``name`` (a submodule too) is imported, else right after it is (once)."""
    if sys.modules.get(name) is not None:  # None: blocked, as ``import`` treats it
        action()
    elif not any(isinstance(f, _AfterImport) and f.name == name and f.action is action for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, action))
