"""Hugging Face transformers' layout: a ``save_pretrained`` folder of ConvNextV2* (V1: ConvNext*), or of
``DINOv3ConvNextModel`` where the source was DINOv3-family weights (``--to hf`` keeps the family: see
:mod:`.hf_dinov3`). Every folder gets a README.md model card stating the weights' license.

The class follows what the checkpoint holds: per-stage output norms make a ``ConvNextV2Backbone`` (they
become its ``hidden_states_norms`` and its ``out_features``); otherwise a classifier makes a
``ConvNextV2ForImageClassification`` and a bare encoder a ``ConvNextV2Model``. transformers' own config
class and ``save_pretrained`` write the folder (config.json with architecture, activation, outputs, and
model.safetensors).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cvx2_backbone.models.convnext import canonical_activation
from cvx2_backbone.weights.errors import CheckpointError
from cvx2_backbone.weights.readers.rename import compile_rules, rename_key
from cvx2_backbone.weights.report import CLASSIFIER, OUTPUT_NORM
from cvx2_backbone.weights.writers.common import (Written, activation_notes, fill_from, fit_shapes, modules_of,
                                                  model_card, save_pretrained)
from cvx2_backbone.weights.writers import hf_dinov3

if TYPE_CHECKING:
    from cvx2_backbone.weights.arch import ArchSpec
    from cvx2_backbone.weights.loader import Checkpoint

NAME = "hf"
DESCRIPTION = "a Hugging Face transformers save_pretrained folder (ConvNextV2/ConvNext)"
_RULES = compile_rules([
    (r"^downsample_layers\.0\.0\.", "embeddings.patch_embeddings."),
    (r"^downsample_layers\.0\.1\.", "embeddings.layernorm."),
    (r"^downsample_layers\.(\d+)\.", r"encoder.stages.\1.downsampling_layer."),
    (r"^stages\.(\d+)\.(\d+)\.norm\.", r"encoder.stages.\1.layers.\2.layernorm."),
    (r"^stages\.(\d+)\.(\d+)\.", r"encoder.stages.\1.layers.\2."),
    (r"\.grn\.gamma$", ".grn.weight"),
    (r"\.grn\.beta$", ".grn.bias"),
    (r"^(encoder\.stages\.\d+\.layers\.\d+)\.gamma$", r"\1.layer_scale_parameter"),
    (r"^norm\.", "layernorm."),
    (r"^head\.", "classifier."),
    (r"^norm_stem\.", "hidden_states_norms.stem."),
])
_STAGE_NORM = re.compile(r"^norm(\d+)\.")
# timm's names of the activations whose Hugging Face names differ
_HF_ACTIVATION = {"gelu_tanh": "gelu_pytorch_tanh"}


def hf_key(key: str) -> str:
    """This project's key -> the key in a transformers ConvNextV2Model/Backbone (without the model prefix)."""
    key = _STAGE_NORM.sub(lambda m: f"hidden_states_norms.stage{int(m.group(1)) + 1}.", key)
    return rename_key(key, _RULES)


def output_names(keys: list[str]) -> list[str]:
    """The Hugging Face output names of the output norms among ``keys``, in network order."""
    names = {"stem" if k.startswith("norm_stem.") else f"stage{int(k[4:k.index('.')]) + 1}"
             for k in keys if OUTPUT_NORM.match(k)}
    return sorted(names, key=lambda n: -1 if n == "stem" else int(n[5:]))


def hf_config(arch: ArchSpec, out_features: list[str] | None, num_labels: int | None) -> Any:
    """transformers' own config object for ``arch`` (ConvNextV2Config, or ConvNextConfig for V1)."""
    from transformers import ConvNextConfig, ConvNextV2Config
    from transformers.activations import ACT2FN

    activation = _HF_ACTIVATION.get(canonical_activation(arch.hidden_act or "gelu"),
                                    arch.hidden_act or "gelu")
    if activation not in ACT2FN:
        raise CheckpointError(f"transformers has no activation {arch.hidden_act!r}; it cannot express this model")
    kwargs: dict[str, Any] = dict(num_channels=arch.in_channels, patch_size=arch.patch_size, depths=list(arch.depths),
                                  hidden_sizes=list(arch.dims), hidden_act=activation,
                                  drop_path_rate=arch.drop_path_rate or 0.0)
    if out_features:
        kwargs["out_features"] = out_features
    if num_labels:
        kwargs.update(num_labels=num_labels, id2label=_labels(num_labels))
    if arch.use_grn:
        if arch.layer_scale:
            raise CheckpointError("transformers' ConvNextV2 has no layer scale, and this ConvNeXt V2 checkpoint has "
                                  "one: it has no Hugging Face equivalent")
        return ConvNextV2Config(**kwargs)
    return ConvNextConfig(layer_scale_init_value=1e-6 if arch.layer_scale else 0.0, **kwargs)


def _labels(num_labels: int) -> dict[int, str]:
    """ImageNet class names for a head of that size (from timm), else transformers' LABEL_i."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_labels})
    names = ImageNetInfo(subset).label_descriptions() if subset else None
    return {i: names[i] if names else f"LABEL_{i}" for i in range(num_labels)}


def model_class(use_grn: bool, kind: str) -> type:
    """transformers' ConvNextV2{Model,Backbone,ForImageClassification} (V1: ConvNext*)."""
    import transformers

    return getattr(transformers, f"{'ConvNextV2' if use_grn else 'ConvNext'}{kind}")


def _choose_class(state_dict: dict, backbone_only: bool) -> tuple[str, list[str], list[str]]:
    """The transformers class for what the checkpoint holds (Backbone, ForImageClassification, Model), the keys to
    write and what is left out."""
    norms = [k for k in state_dict if OUTPUT_NORM.match(k)]
    classifier = [k for k in state_dict if CLASSIFIER.match(k)]
    if norms:
        kind, dropped, why = "Backbone", classifier, "a transformers backbone has no classifier"
    elif "head.weight" in state_dict and not backbone_only:
        kind, dropped, why = "ForImageClassification", [], ""
    elif backbone_only:
        kind, dropped, why = "Model", classifier, "--backbone-only"
    else:
        kind, dropped, why = "Model", [k for k in classifier if k.startswith("head.")], "no complete classifier"
    left_out = [f"{modules_of(dropped)} ({why})"] if dropped else []
    return kind, [k for k in state_dict if k not in dropped], left_out


def write(checkpoint: Checkpoint, path: Path, backbone_only: bool) -> Written:
    if checkpoint.family == "dinov3":
        return hf_dinov3.write(checkpoint, path, backbone_only)
    state_dict = checkpoint.state_dict
    kind, keep, left_out = _choose_class(state_dict, backbone_only)
    out_features = output_names(keep) if kind == "Backbone" else None
    num_labels = int(state_dict["head.weight"].shape[0]) if kind == "ForImageClassification" else None
    cls = model_class(checkpoint.arch.use_grn, kind)
    model = cls(hf_config(checkpoint.arch, out_features, num_labels)).eval()
    prefix = model.base_model_prefix + "." if kind == "ForImageClassification" else ""
    target = model.state_dict()
    tensors = {}
    for key in keep:
        name = hf_key(key)
        name = name if name.startswith("classifier.") else prefix + name
        if name not in target:
            raise CheckpointError(f"internal error: {key} maps to {name}, which {cls.__name__} does not have")
        tensors[name] = state_dict[key]
    tensors = fit_shapes(tensors, target)
    filled = fill_from(model, tensors)
    model.load_state_dict(tensors, strict=True)
    usage = f"transformers.{cls.__name__}.from_pretrained('{path}')"
    save_pretrained(model, path, model_card(checkpoint.license, checkpoint.reference, usage))
    return Written(path, NAME, len(tensors), left_out=left_out,
                   filled_in=[f"{modules_of(filled)} (not in the checkpoint: LayerNorm init, weight 1 and bias 0)"]
                   if filled else [],
                   usage=usage, notes=activation_notes(checkpoint.arch))
