"""Do these weights fit this model? One check, made before any work, for every entry point.

``check_fit(model, source)`` reads a checkpoint safely and compares it with ``model``:

* a ``ConvNeXt``/``ConvNeXtV2`` backbone is checked the way ``init_cfg`` loads it (architecture
  first, then every key; the weights may be in any supported format);
* any other model (the detectors and segmentors of tools/train.py and tools/test.py, an exported
  model) is compared key by key with its whole state dict, as mmengine will load it.

Tensors of another shape, missing tensors and unexpected ones are an error unless the caller
opts in with ``allow_partial=True``; the error says what the file looks like (as the weights
loader reads it) and what the model is. tools/test.py, tools/train.py (``--resume``,
``--load-from``), ``cvx2 extract``, ``cvx2 classify`` and ``cvx2 export`` all use it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import Tensor, nn

from cvx2_backbone.models.convnext import ConvNeXt
from cvx2_backbone.weights.arch import ArchSpec, arch_from_state_dict
from cvx2_backbone.weights.containers import find_state_dict
from cvx2_backbone.weights.readers.state_dict import convert_state_dict
from cvx2_backbone.weights.errors import CheckpointError, ModelMismatchError
from cvx2_backbone.weights.reading import read_files
from cvx2_backbone.weights.report import OPT_IN, examples
from cvx2_backbone.weights.sources import resolve_source
from cvx2_backbone.weights.loader import read_checkpoint


@dataclass
class FitReport:
    """How a checkpoint compares with a model: what the file looks like and which tensors do not fit."""

    source: str
    looks_like: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # 'key: file (shape) vs model (shape)'

    @property
    def complete(self) -> bool:
        """Every tensor of the model is in the file with its shape, and the file holds nothing else."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        parts = []
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} tensors differ in shape ({examples(self.mismatched, 3)})")
        if self.missing:
            parts.append(f"{len(self.missing)} of the model's tensors are missing ({_grouped(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} tensors in the file are not in the model "
                         f"({_grouped(self.unexpected)})")
        return "; ".join(parts)

    def summary(self) -> str:
        return (f"{self.source} ({self.looks_like}): "
                + (self.problems() + " (allow_partial: left at their init)" if not self.complete else "fits"))

    def log(self) -> None:
        """One line in mmengine's current logger: info when complete, a warning for a partial load."""
        from mmengine.logging import print_log
        print_log(f"checkpoint check: {self.summary()}", logger="current",
                  level=logging.INFO if self.complete else logging.WARNING)


def _grouped(keys: list[str], listed: int = 6) -> str:
    """A few keys by name; many as tensor counts per top-level module ('backbone: 144, neck: 16')."""
    if len(keys) <= listed:
        return ", ".join(keys)
    counts: dict[str, int] = {}
    for key in keys:
        top = key.split(".", 1)[0]
        counts[top] = counts.get(top, 0) + 1
    return "by module: " + ", ".join(f"{top} {count}" for top, count in counts.items())


def check_fit(model: nn.Module, source: str | os.PathLike | Mapping[str, Any], *, allow_partial: bool = False,
              trust_pickle: bool | None = None, label: str | None = None) -> FitReport:
    """Check that the checkpoint ``source`` (a reference, or an already loaded checkpoint object) fits ``model``.

    Raises ``CheckpointError`` (``ArchMismatchError``, ``ModelMismatchError``) when it does not;
    missing and unexpected tensors are accepted (and reported) only with ``allow_partial``.
    ``label`` names the source in messages (default: the reference itself).
    """
    model = getattr(model, "module", model) if _is_wrapper(model) else model
    if label is None:
        label = "<state dict>" if isinstance(source, Mapping) else os.fspath(source)
    if isinstance(model, ConvNeXt):

        checkpoint = read_checkpoint(source, trust_pickle=trust_pickle)
        _, report = checkpoint.fit(model, label, allow_partial)
        return FitReport(label, describe_weights(checkpoint.state_dict), report.missing, report.unexpected,
                         report.mismatched)
    obj = source if isinstance(source, Mapping) else read_files(resolve_source(source).weight_files,
                                                                trust_pickle).obj
    return _check_whole_model(model, obj, label, allow_partial)


def _is_wrapper(model: nn.Module) -> bool:
    """DDP and mmengine's wrappers keep the real model in ``.module``."""
    from mmengine.model import is_model_wrapper
    return is_model_wrapper(model)


def model_state_dict(checkpoint: Any) -> dict[str, Tensor]:
    """The tensors mmengine's ``load_checkpoint`` would load: ``checkpoint['state_dict']`` (or the object
    itself), with the ``module.`` prefix of DDP stripped."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    if not isinstance(state, Mapping):
        raise CheckpointError(f"the checkpoint holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _check_whole_model(model: nn.Module, checkpoint: Any, label: str, allow_partial: bool) -> FitReport:
    state = model_state_dict(checkpoint)
    expected = model.state_dict()
    report = FitReport(
        label, describe_weights(checkpoint),
        missing=[k for k in expected if k not in state],
        unexpected=[k for k in state if k not in expected],
        mismatched=[f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                    for k, v in state.items() if k in expected and not _same_shape(v, expected[k])])
    if report.complete or allow_partial:
        return report
    hint = _fix_hint(checkpoint, model, label)
    raise ModelMismatchError(f"{label} does not fit the model: the file holds {report.looks_like}; the model is "
                             f"{describe_model(model)}; {report.problems()}.\n{hint}")


def _same_shape(stored: Tensor, expected: Tensor) -> bool:
    """Equal shapes, or a 1-D parameter stored as (1, ..., 1, C), which the modules reshape on loading (GRN)."""
    if stored.shape == expected.shape:
        return True
    return expected.dim() == 1 and stored.numel() == expected.numel() == stored.shape[-1]


def _fix_hint(checkpoint: Any, model: nn.Module, label: str) -> str:
    backbone_only = _backbone_weights_only(checkpoint)
    if backbone_only and isinstance(getattr(model, "backbone", None), ConvNeXt):
        return (f"These are backbone weights: to start training from them, set "
                f"model.backbone.init_cfg=dict(type='Pretrained', checkpoint='{label}'); to test, pass a "
                "checkpoint written by tools/train.py for this config")
    return (f"Pass a checkpoint written by tools/train.py for this config, or {OPT_IN} to load only what fits "
            "(the rest keeps its initial values, e.g. when fine-tuning a detector with other classes)")


def _backbone_weights_only(checkpoint: Any) -> bool:
    try:
        converted = convert_state_dict(checkpoint)
    except CheckpointError:
        return False
    return not converted.discarded and not converted.neck and "took the 'backbone' sub-module" not in converted.notes


def describe_weights(checkpoint: Any) -> str:
    """What a checkpoint holds, in a few words: e.g. 'a model with a ConvNeXt V2 tiny backbone (official
    ConvNeXt/ConvNeXt-V2 layout) and neck, roi_head, rpn_head', or the top-level modules of a foreign model."""
    try:
        converted = convert_state_dict(checkpoint)
        arch = arch_from_state_dict(converted.state_dict).describe()
    except CheckpointError:
        return f"no ConvNeXt weights: {_top_level_modules(checkpoint)}"
    others = sorted(set(converted.discarded) | ({"neck"} if converted.neck else set()))
    layout = converted.format_description
    if others:
        return f"a model with a {arch} backbone ({layout}) and {', '.join(others)}"
    return f"{arch} weights ({layout}), no detector or segmentor parts"


def _top_level_modules(checkpoint: Any) -> str:
    try:
        state = find_state_dict(checkpoint, [])
    except CheckpointError:
        return f"a {type(checkpoint).__name__} without a state dict"
    tops = list(dict.fromkeys(k.split(".", 1)[0] for k in state))
    return f"a model with the modules {examples(tops, 8)} ({len(state)} tensors)"


def describe_model(model: nn.Module) -> str:
    """E.g. 'MaskRCNN with a ConvNeXt V2 atto backbone'."""
    backbone = getattr(model, "backbone", None)
    name = type(model).__name__
    if isinstance(backbone, ConvNeXt):
        return f"{name} with a {ArchSpec.of_model(backbone).describe()} backbone"
    if isinstance(model, ConvNeXt):
        return ArchSpec.of_model(model).describe()
    return f"{name} with a {type(backbone).__name__} backbone" if isinstance(backbone, nn.Module) else name
