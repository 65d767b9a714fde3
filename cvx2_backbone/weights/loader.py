"""Reading a checkpoint reference into this project's layout, and loading it into a backbone.

``load_pretrained`` is what ``init_cfg=dict(type='Pretrained', checkpoint=SRC)`` runs.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from cvx2_backbone.models.convnext import ConvNeXt
from cvx2_backbone.weights.arch import ArchSpec, activation_from_meta, apply_config, arch_from_state_dict
from cvx2_backbone.weights.readers.state_dict import convert_state_dict
from cvx2_backbone.weights.errors import CheckpointError
from cvx2_backbone.weights.readers import dinov3, layout_named
from cvx2_backbone.weights.hub import Downloader
from cvx2_backbone.weights.license import UNKNOWN, WeightsLicense, license_of, timm_name
from cvx2_backbone.weights.reading import FileContents, read_files
from cvx2_backbone.weights.report import LoadReport, check_arch, match_keys
from cvx2_backbone.weights.sources import ResolvedSource, resolve_source


@dataclass
class Checkpoint:
    """A checkpoint converted to this project's layout, with where it came from and what it holds."""

    reference: str
    state_dict: dict[str, Tensor]
    format: str
    format_description: str
    files: tuple[Path, ...] = ()
    config: dict | None = None
    notes: list[str] = field(default_factory=list)
    discarded: dict[str, int] = field(default_factory=dict)
    neck: dict[str, Tensor] = field(default_factory=dict)  # a detector's neck (``neck.`` stripped), if any
    recorded_arch: ArchSpec | None = None  # the ``arch`` metadata of a file this project wrote
    recorded_activation: str | None = None  # what a training checkpoint's meta (mmengine's cfg) says
    license: WeightsLicense = UNKNOWN  # the weights' license, as the source states it (see .license)
    family: str = ""  # 'dinov3' for DINOv3/EUPE weights (their layouts, a dinov3_convnext config, timm's tags)

    @classmethod
    def of_model(cls, model: ConvNeXt) -> "Checkpoint":
        """A built backbone's weights with its whole architecture (activation included), e.g. to export them."""
        converted = convert_state_dict(model.state_dict())
        return cls(f"<{type(model).__name__}>", converted.state_dict, converted.format, converted.format_description,
                   recorded_arch=ArchSpec.of_model(model))

    @cached_property
    def arch(self) -> ArchSpec:
        """The architecture, from the weights' shapes, with what a Hugging Face config.json (or this project's own
        metadata) adds: activation, drop path, outputs. A config.json that contradicts the weights is an error."""
        arch = arch_from_state_dict(self.state_dict)
        if self.recorded_arch is not None:
            arch = replace(arch, hidden_act=self.recorded_arch.hidden_act,
                           drop_path_rate=self.recorded_arch.drop_path_rate,
                           out_features=self.recorded_arch.out_features)
        elif self.recorded_activation is not None:
            arch = replace(arch, hidden_act=self.recorded_activation)
        return apply_config(arch, self.config, self.reference)

    @property
    def backbone_class(self) -> type[ConvNeXt]:
        """``ConvNeXtV2`` or ``ConvNeXt``, whichever these weights are for."""
        return self.arch.backbone_class

    @property
    def arch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``backbone_class`` that match these weights."""
        return self.arch.arch_kwargs

    def backbone_state_dict(self) -> dict[str, Tensor]:
        """The state dict without the classifier (``norm.*``, ``head.*``)."""
        return {k: v for k, v in self.state_dict.items() if not k.startswith(("norm.", "head."))}

    def fit(self, model: ConvNeXt, source: Any = None, allow_partial: bool = False) -> tuple[dict, LoadReport]:
        """Check that these weights fit ``model`` (architecture, then every key) without loading them.

        Returns the tensors to load and the report; raises ``ArchMismatchError`` or ``CheckpointError``
        (naming what the weights look like and what the model is) when they do not fit, and for
        missing or unexpected backbone tensors unless ``allow_partial``.
        """
        if not isinstance(model, ConvNeXt):
            raise TypeError(f"weights load into a cvx2_backbone ConvNeXt/ConvNeXtV2, got {type(model).__name__}")
        label = str(source) if source is not None else self.reference
        check_arch(self.arch, ArchSpec.of_model(model), label)
        tensors, categories = match_keys(self.state_dict, model, label, allow_partial)
        report = LoadReport(label, self.format, self.arch, list(tensors), notes=list(self.notes),
                            discarded=dict(self.discarded), license=self.license.line(), **categories)
        return tensors, report

    def load_into(self, model: ConvNeXt, source: Any = None, log: bool = True,
                  allow_partial: bool = False) -> LoadReport:
        """Load into ``model`` after :meth:`fit` has checked them; returns (and logs) the report."""
        tensors, report = self.fit(model, source, allow_partial)
        with torch.no_grad():
            result = model.load_state_dict(tensors, strict=False)
        if result.unexpected_keys:  # match_keys only passes the model's own keys
            raise CheckpointError(f"internal error: unexpected keys {result.unexpected_keys}")
        if log:
            report.log()
        return report


def read_checkpoint(
    source: str | os.PathLike | Mapping[str, Any],
    prefix: str | None = None,
    *,
    trust_pickle: bool | None = None,
    downloader: Downloader | None = None,
) -> Checkpoint:
    """Resolve, read safely and convert ``source`` (a path, folder, URL, ``hf://...``, ``timm/...``, a loaded dict)."""
    if isinstance(source, Mapping):
        converted = convert_state_dict(source, prefix)
        return Checkpoint("<state dict>", converted.state_dict, converted.format, converted.format_description,
                          notes=converted.notes, discarded=converted.discarded, neck=converted.neck,
                          license=license_of("<state dict>", layout=layout_named(converted.format)),
                          family=_family(converted.format, None, None))
    resolved = resolve_source(source, downloader)
    return checkpoint_from(resolved, read_files(resolved.weight_files, trust_pickle), prefix)


def checkpoint_from(resolved: ResolvedSource, contents: FileContents, prefix: str | None = None) -> Checkpoint:
    """The :class:`Checkpoint` of files already resolved and read."""
    try:
        converted = convert_state_dict(contents.obj, prefix)
    except CheckpointError as err:
        raise CheckpointError(f"{resolved.reference}: {err}") from err
    config = resolved.read_config()
    notes = contents.notes + converted.notes
    state_dict = converted.state_dict
    name = timm_name(resolved.reference, config) if converted.format == "timm" else None
    if name and re.search(r"\.(dinov3|eupe)", name) and "norm3.weight" not in state_dict:
        state_dict = {**state_dict, **dinov3.dense_norm_from_final(state_dict)}  # timm's head.norm is norms[3]
        notes.append(dinov3.DENSE_NOTE)
    weights_license = license_of(resolved.reference, resolved.weight_files, config, _metadata(contents),
                                 layout_named(converted.format))
    return Checkpoint(resolved.reference, state_dict, converted.format, converted.format_description,
                      files=resolved.weight_files, config=config, notes=notes, discarded=converted.discarded,
                      neck=converted.neck, recorded_arch=_recorded_arch(contents),
                      recorded_activation=activation_from_meta(contents.obj, resolved.reference),
                      license=weights_license, family=_family(converted.format, name, config, _metadata(contents)))


def _family(layout: str, timm_model: str | None, config: Mapping[str, Any] | None,
            metadata: Mapping[str, Any] | None = None) -> str:
    """'dinov3' for DINOv3-family weights (what ``cvx2 convert --to hf`` keeps), else ''; a file ``cvx2 convert``
    wrote records it."""
    if layout in dinov3.FAMILY_LAYOUTS or (config or {}).get("model_type") == "dinov3_convnext":
        return "dinov3"
    if metadata and metadata.get("family") == "dinov3":
        return "dinov3"
    return "dinov3" if timm_model and re.search(r"\.(dinov3|eupe)", timm_model) else ""


def _metadata(contents: FileContents) -> Mapping[str, Any] | None:
    """A file's own metadata: safetensors metadata, or a torch file's ``meta`` dict."""
    if contents.metadata:
        return contents.metadata
    meta = contents.obj.get("meta") if isinstance(contents.obj, Mapping) else None
    return meta if isinstance(meta, Mapping) else None


def _recorded_arch(contents: FileContents) -> ArchSpec | None:
    """The ``arch`` metadata of a file this project wrote (safetensors metadata, or the torch file's ``meta``)."""
    meta = contents.metadata or (contents.obj.get("meta") if isinstance(contents.obj, Mapping) else None)
    if not isinstance(meta, Mapping) or meta.get("format") != "cvx2_backbone" or "arch" not in meta:
        return None
    try:
        return ArchSpec.from_dict(json.loads(meta["arch"]))
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"the file's cvx2_backbone metadata is damaged ({err}); convert the source "
                              "again") from err


def load_pretrained(
    model: ConvNeXt,
    source: str | os.PathLike | Mapping[str, Any],
    prefix: str | None = None,
    *,
    trust_pickle: bool | None = None,
    downloader: Downloader | None = None,
    allow_partial: bool = False,
) -> LoadReport:
    """Load any supported checkpoint into a ``ConvNeXt``/``ConvNeXtV2`` backbone and log one report.

    The format is detected from keys and shapes; an architecture mismatch raises
    ``ArchMismatchError`` naming the size the checkpoint looks like; missing or unexpected
    backbone tensors raise ``CheckpointError`` unless ``allow_partial``.
    """
    checkpoint = read_checkpoint(source, prefix, trust_pickle=trust_pickle, downloader=downloader)
    return checkpoint.load_into(model, allow_partial=allow_partial)
