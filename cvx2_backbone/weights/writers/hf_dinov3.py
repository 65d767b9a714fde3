"""``--to hf`` for DINOv3-family weights: a transformers ``DINOv3ConvNextModel`` ``save_pretrained`` folder.

The Model holds the encoder and the final norm (``layer_norm``, DINOv3's ``norm`` / ``norms[3]``); it has no
classifier and no other per-stage norms, so those are left out and listed. Without a final norm in the checkpoint,
the stage4 output norm ``norm3`` (which the DINOv3 readers load from it) is written as the final norm. Called by
the ``hf`` writer (:mod:`.huggingface`) when the source was DINOv3-family weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cvx2_backbone.models.convnext import canonical_activation
from cvx2_backbone.weights.errors import CheckpointError
from cvx2_backbone.weights.readers.rename import compile_rules, rename_key
from cvx2_backbone.weights.report import CLASSIFIER, OUTPUT_NORM
from cvx2_backbone.weights.writers.common import (Written, activation_notes, fill_from, fit_shapes, model_card,
                                                  modules_of, save_pretrained)

if TYPE_CHECKING:
    from cvx2_backbone.weights.loader import Checkpoint

_RULES = compile_rules([
    (r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample_layers."),
    (r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.layers.\2."),
    (r"\.dwconv\.", ".depthwise_conv."),
    (r"^(stages\.\d+\.layers\.\d+)\.norm\.", r"\1.layer_norm."),
    (r"\.pwconv(\d)\.", r".pointwise_conv\1."),
    (r"^norm\.", "layer_norm."),
])


def dinov3_key(key: str) -> str:
    """This project's key -> the key in a saved ``DINOv3ConvNextModel`` (in memory the encoder adds ``model.``)."""
    return rename_key(key, _RULES)


def write(checkpoint: Checkpoint, path: Path, backbone_only: bool) -> Written:
    from transformers import DINOv3ConvNextConfig, DINOv3ConvNextModel

    arch = checkpoint.arch
    if arch.use_grn or not arch.layer_scale or arch.patch_size != 4:
        raise CheckpointError(f"a DINOv3ConvNextModel is ConvNeXt V1 with layer scale and a 4x4 stem; these weights "
                              f"are {arch.describe()}: write them with --to cvx2 instead")
    state_dict = dict(checkpoint.state_dict)
    last = len(arch.depths) - 1
    notes = activation_notes(arch)
    if "norm.weight" not in state_dict and f"norm{last}.weight" in state_dict:
        state_dict.update({f"norm.{p}": state_dict[f"norm{last}.{p}"] for p in ("weight", "bias")})
        notes.append(f"the final norm layer_norm is the stage{last + 1} output norm norm{last} "
                     f"(DINOv3's norms[{last}])")
    dense = [k for k in (f"norm{last}.weight", f"norm{last}.bias") if k in state_dict]
    same = all(state_dict[k].equal(state_dict[f"norm.{k.rsplit('.', 1)[1]}"]) for k in dense)
    if dense and same:
        notes.append(f"norm{last} is the final norm (DINOv3's norms[{last}]): written once, as layer_norm")
    dropped = [k for k in state_dict if OUTPUT_NORM.match(k) and not (k in dense and same)]
    dropped += [k for k in state_dict if CLASSIFIER.match(k) and not k.startswith("norm.")]
    left_out = [f"{modules_of(dropped)} (a DINOv3ConvNextModel has no classifier and no per-stage norms but the "
                "final one)"] if dropped else []
    activation = canonical_activation(arch.hidden_act or "gelu")
    config = DINOv3ConvNextConfig(num_channels=arch.in_channels, hidden_sizes=list(arch.dims), depths=list(arch.depths),
                                  hidden_act={"gelu_tanh": "gelu_pytorch_tanh"}.get(activation, activation),
                                  drop_path_rate=arch.drop_path_rate or 0.0)
    model = DINOv3ConvNextModel(config).eval()
    target = model.state_dict()
    tensors = {}
    for key, value in state_dict.items():
        if key in dropped or key in dense:
            continue
        name = dinov3_key(key)
        name = name if name in target else f"model.{name}"
        if name not in target:
            raise CheckpointError(f"internal error: {key} maps to {name}, which DINOv3ConvNextModel does not have")
        tensors[name] = value
    tensors = fit_shapes(tensors, target)
    filled = fill_from(model, tensors)
    model.load_state_dict(tensors, strict=True)
    usage = f"transformers.DINOv3ConvNextModel.from_pretrained('{path}')"
    save_pretrained(model, path, model_card(checkpoint.license, checkpoint.reference, usage))
    return Written(path, "hf", len(tensors), left_out=left_out,
                   filled_in=[f"{modules_of(filled)} (not in the checkpoint: LayerNorm init, weight 1 and bias 0)"]
                   if filled else [], usage=usage, notes=notes)
