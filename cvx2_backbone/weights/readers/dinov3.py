"""The official DINOv3 repository's ConvNeXt layout (``dinov3/models/convnext.py``, ``dinov3_convnext_*.pth``).

DINOv3's ConvNeXt is ConvNeXt V1 with the official keys (``downsample_layers``, ``stages``, the final ``norm``)
plus ``norms``: a list of per-stage norms whose first three are identities (no tensors) and whose last is the
final norm itself, so a state dict holds ``norms.3.*`` beside ``norm.*``. Its dense features
(``get_intermediate_layers(..., norm=True)``) apply ``norms[i]`` to stage i's output: nothing on stages 1-3, the
final LayerNorm on stage 4. Here ``norms.3`` becomes the backbone's output norm ``norm3`` (stage4's), which
reproduces that for stage 4; building the backbone with ``out_norm=['stage4']`` reproduces it for every stage.
"""
from __future__ import annotations

import re
from typing import Collection

from torch import Tensor

NAME = "dinov3"
DESCRIPTION = "official DINOv3 ConvNeXt layout (official V1 keys + norms.*)"
LICENSE_NAME = "dinov3-license"
FAMILY_LAYOUTS = ("dinov3", "eupe", "huggingface-dinov3")  # the layouts of DINOv3-family weights
_BLOCK = re.compile(r"^stages\.\d+\.\d+\.dwconv\.weight$")
_NORMS = re.compile(r"^norms\.(\d+)\.(weight|bias)$")
# What the DINOv3 dense features do with each stage, said once in every report of these weights.
DENSE_NOTE = ("DINOv3's dense features apply its final norm to stage4 only (norms[3]; stages 1-3 get none): loaded "
              "as the output norm norm3; build the backbone with out_norm=['stage4'] to reproduce them exactly "
              "(out_norm=True adds fresh LayerNorms on stages 1-3, as the ConvNeXt detection recipes do)")


def official_keys(keys: Collection[str]) -> bool:
    """The official ConvNeXt block and downsampling keys are there."""
    return any(_BLOCK.match(k) for k in keys) and any(k.startswith("downsample_layers.") for k in keys)


def matches(keys: Collection[str]) -> bool:
    return official_keys(keys) and any(k.startswith("norms.") for k in keys) and not any(
        k.startswith("projectors.") for k in keys)


def last_stage(state_dict: dict[str, Tensor]) -> int:
    """The index of the last stage (3 for every published size)."""
    return max(int(k.split(".")[1]) for k in state_dict if _BLOCK.match(k))


def split_norms(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    """``norms.{last}`` as ``norm{last}`` (stage output norm); other ``norms.*`` tensors apart (left out); notes.

    ``norms.{last}`` only becomes the output norm when it has the last stage's width; any other ``norms.*`` tensor
    (the DINOv3 model has none: its other norms are identities) is a training-time feature norm and is left out.
    """
    last = last_stage(state_dict)
    width = state_dict[f"stages.{last}.0.dwconv.weight"].shape[0]
    kept, left_out, notes = {}, {}, []
    for key, value in state_dict.items():
        match = _NORMS.match(key)
        if match is None:
            if not key.startswith("norms."):
                kept[key] = value
            else:
                left_out[key] = value
        elif int(match.group(1)) == last and value.shape == (width,):
            kept[f"norm{last}.{match.group(2)}"] = value
        else:
            left_out[key] = value
    if f"norm{last}.weight" in kept:
        differs = any(f"norm.{p}" in state_dict and f"norm{last}.{p}" in kept
                      and not state_dict[f"norm.{p}"].equal(kept[f"norm{last}.{p}"]) for p in ("weight", "bias"))
        notes.append(DENSE_NOTE + (f"; norms.{last} differs from norm (the classifier's final norm): norm{last} "
                                   f"takes norms.{last}, what get_intermediate_layers applies" if differs else ""))
    elif "norm.weight" in state_dict:
        kept.update(dense_norm_from_final(state_dict, last))
        notes.append(DENSE_NOTE)
    return kept, left_out, notes


def dense_norm_from_final(state_dict: dict[str, Tensor], last: int = 3) -> dict[str, Tensor]:
    """``norm{last}.*``: a copy of the final norm ``norm.*`` (DINOv3's ``norms[last]`` is the same module)."""
    return {f"norm{last}.{p}": state_dict[f"norm.{p}"] for p in ("weight", "bias") if f"norm.{p}" in state_dict}


def convert(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return split_norms(state_dict)[0]


def report(state_dict: dict[str, Tensor]) -> tuple[list[str], dict[str, int]]:
    """Notes on the conversion and the tensors it leaves out (by top-level name), for the load report."""
    _, left_out, notes = split_norms(state_dict)
    if left_out:
        notes = notes + [f"left out {len(left_out)} feature-norm tensors that DINOv3's model does not have "
                         f"({', '.join(sorted(left_out)[:4])})"]
    return notes, ({"norms (training-time feature norms)": len(left_out)} if left_out else {})
