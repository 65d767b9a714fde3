"""timm's ConvNeXt layout: the state dict ``timm.create_model('convnextv2_<size>', pretrained=True,
pretrained_cfg_overlay=dict(file=DST, num_classes=N))`` loads strictly (N = 0 without a classifier: timm drops a head
whose size differs from its pretrained config's, so the overlay names the file's).

The keys and shapes come from a timm model built for the architecture (on the meta device, so no memory is
spent), so atto..nano get timm's 1x1-conv MLP layout. timm keeps the classifier's norm and linear
(``head.norm``/``head.fc``) but no per-stage output norms: those are left out and listed.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cvx2_backbone.models.convnext import canonical_activation
from cvx2_backbone.weights.errors import CheckpointError
from cvx2_backbone.weights.readers.rename import compile_rules, rename_key
from cvx2_backbone.weights.report import OUTPUT_NORM
from cvx2_backbone.weights.writers.common import (SAFETENSORS_SUFFIX, Written, activation_notes, fit_shapes,
                                                  license_metadata, modules_of, save_tensors)

if TYPE_CHECKING:
    from cvx2_backbone.weights.arch import ArchSpec
    from cvx2_backbone.weights.loader import Checkpoint

NAME = "timm"
DESCRIPTION = "a timm state dict (convnextv2_*/convnext_*)"
_RULES = compile_rules([
    (r"^downsample_layers\.0\.", "stem."),
    (r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample."),
    (r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"\.dwconv\.", ".conv_dw."),
    (r"\.pwconv(\d)\.", r".mlp.fc\1."),
    (r"\.grn\.gamma$", ".mlp.grn.weight"),
    (r"\.grn\.beta$", ".mlp.grn.bias"),
    (r"^norm\.", "head.norm."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
])


def timm_key(key: str) -> str:
    """This project's key -> timm's."""
    return rename_key(key, _RULES)


def model_name(arch: ArchSpec) -> str:
    """timm's name for the size (``convnextv2_atto``); a custom size is built from the closest preset's name."""
    return f"convnext{'v2' if arch.use_grn else ''}_{arch.preset or 'tiny'}"


def create_kwargs(arch: ArchSpec) -> dict[str, Any]:
    """The ``timm.create_model`` arguments beyond the name and classes that make timm's model this architecture."""
    kwargs: dict[str, Any] = {}
    if not arch.preset:
        kwargs.update(depths=tuple(arch.depths), dims=tuple(arch.dims), conv_mlp=False)
    if arch.in_channels != 3:
        kwargs["in_chans"] = arch.in_channels
    if arch.patch_size != 4:
        kwargs["patch_size"] = arch.patch_size
    if arch.activation != "gelu":
        kwargs["act_layer"] = canonical_activation(arch.hidden_act)
    if arch.layer_scale != (not arch.use_grn):  # the presets: V1 with layer scale, V2 without
        kwargs["ls_init_value"] = 1e-6 if arch.layer_scale else None
    return kwargs


def write(checkpoint: Checkpoint, path: Path, backbone_only: bool) -> Written:
    import timm

    state_dict = checkpoint.backbone_state_dict() if backbone_only else checkpoint.state_dict
    arch = checkpoint.arch
    num_classes = int(state_dict["head.weight"].shape[0]) if "head.weight" in state_dict else 0
    name, kwargs = model_name(arch), create_kwargs(arch)
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    target = model.state_dict()
    norms = [k for k in state_dict if OUTPUT_NORM.match(k)]
    tensors = {}
    for key, value in state_dict.items():
        if key in norms:
            continue
        if timm_key(key) not in target:
            raise CheckpointError(f"internal error: {key} maps to {timm_key(key)}, which timm's {name} lacks")
        tensors[timm_key(key)] = value
    tensors = fit_shapes(tensors, target)
    filled = [k for k in target if k not in tensors]
    for key in filled:
        if not key.startswith("head.norm."):
            raise CheckpointError(f"the checkpoint lacks {key}, which timm's {name} needs")
        tensors[key] = torch.ones(target[key].shape) if key.endswith("weight") else torch.zeros(target[key].shape)
    save_tensors(tensors, path, license_metadata(checkpoint.license))
    notes = activation_notes(arch)
    if path.suffix != SAFETENSORS_SUFFIX and checkpoint.license.known:
        notes.append(f"a flat torch state dict has no place for metadata: keep the license with the file "
                     f"({checkpoint.license.line()}); .safetensors records it")
    args = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    return Written(path, NAME, len(tensors),
                   left_out=[f"output norms {modules_of(norms)} (timm's ConvNeXt has no per-stage norms)"]
                   if norms else [],
                   filled_in=["head.norm (not in the checkpoint: LayerNorm init, weight 1 and bias 0)"]
                   if filled else [],
                   usage=f"timm.create_model('{name}', pretrained=True{args}, "
                         f"pretrained_cfg_overlay=dict(file='{path}', num_classes={num_classes}))",
                   notes=notes)
