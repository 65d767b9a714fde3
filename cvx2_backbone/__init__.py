"""ConvNeXt V2 / V1 backbones for mmdet and mmsegmentation.

Importing the package is cheap (no torch): the public names below load on first use, and mmengine
finds every registered type by its ``cvx2_backbone.`` prefix through the registries' ``locations``
(:mod:`cvx2_backbone.registry`), so ``custom_imports=dict(imports=['cvx2_backbone'])`` with
``type='cvx2_backbone.ConvNeXtV2'`` works as before. The layer-decay constructor, named without a
prefix, is registered in mmengine's root at import (:func:`cvx2_backbone.registry.register_root_constructor`).
The command line (``cvx2 --help``) therefore answers without importing torch.

Two registrations wait for the module they concern (:func:`cvx2_backbone.utils.import_hooks.after_import`): once torch
is imported, its safe ``torch.load`` may read mmengine's checkpoints (exactly the types named in
:mod:`cvx2_backbone.utils.checkpoint_globals`), for every tool that loads them; once mmdeploy is imported, this
package's
rewriters register with it (:mod:`cvx2_backbone.deploy.mmdeploy_plugin`), so mmdeploy's own tools export exactly.
"""
from __future__ import annotations

import importlib
from typing import Any

from cvx2_backbone.utils.import_hooks import after_import
from cvx2_backbone.registry import register_root_constructor
from cvx2_backbone.version import __version__

_PUBLIC = {
    "ConvNeXt": "models.convnext", "ConvNeXtV2": "models.convnext", "V1_ARCHS": "models.presets",
    "V2_ARCHS": "models.presets", "FCMAE": "fcmae", "FeatureExtractor": "extraction.extractor", "MODELS": "registry",
}
__all__ = ["FCMAE", "ConvNeXt", "ConvNeXtV2", "FeatureExtractor", "MODELS", "V1_ARCHS", "V2_ARCHS", "__version__"]


def _allow_mmengine_checkpoints() -> None:
    importlib.import_module(".utils.checkpoint_globals", __name__)  # registers on import (once, even mid-import)


def _register_with_mmdeploy() -> None:
    importlib.import_module(".deploy.mmdeploy_plugin", __name__)  # registers on import, likewise


register_root_constructor()
after_import("torch", _allow_mmengine_checkpoints)
after_import("mmdeploy", _register_with_mmdeploy)


def __getattr__(name: str) -> Any:
    """Public names and submodules, imported when first asked for (PEP 562)."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    elif not name.startswith("__"):
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
