"""Whole UperNet segmentors between transformers (``UperNetForSemanticSegmentation``) and mmseg (this project's
``configs/*/upernet_convnext*`` models), in both directions, BatchNorm statistics and class names included.

The two implement the same network (transformers' port of mmseg's UPerHead and FCNHead), so the heads
differ only in names: ``batch_norm`` is mmseg's ``bn`` and ``classifier`` its ``conv_seg``. The backbone goes
through the Hugging Face reader and writer of this package (``hidden_states_norms`` are the output norms).
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from cvx2_backbone.utils.files import atomic_path
from cvx2_backbone.weights.arch import (ArchSpec, activation_from_meta, apply_config, arch_from_state_dict,
                                        config_outputs)
from cvx2_backbone.weights.containers import find_state_dict
from cvx2_backbone.weights.errors import CheckpointError
from cvx2_backbone.weights.readers import canonical_shapes, to_project_layout
from cvx2_backbone.weights.readers import huggingface as hf_reader
from cvx2_backbone.weights.readers.rename import compile_rules, rename
from cvx2_backbone.weights.writers.common import Written, activation_notes, fit_shapes, save_pretrained
from cvx2_backbone.weights.writers.huggingface import hf_config, hf_key

NAME = "upernet"
HEADS = ("decode_head.", "auxiliary_head.")
_HF_TO_MMSEG = compile_rules([(r"\.batch_norm\.", ".bn."), (r"\.classifier\.", ".conv_seg.")])
_MMSEG_TO_HF = compile_rules([(r"\.bn\.", ".batch_norm."), (r"\.conv_seg\.", ".classifier.")])
_PSP = re.compile(r"^decode_head\.psp_modules\.(\d+)\.")
_AUX_CONV = re.compile(r"^auxiliary_head\.convs\.(\d+)\.conv\.weight$")
STANDARD_POOL_SCALES = (1, 2, 3, 6)
SHIPPED_V1_SIZES = ("tiny", "small", "base", "large", "xlarge")


def is_hf_upernet(config: Mapping[str, Any] | None) -> bool:
    """A transformers UperNet's config.json: ``model_type: upernet``."""
    return bool(config) and config.get("model_type") == "upernet"


def holds_segmentor(state_dict: Mapping[str, Any]) -> bool:
    """An mmseg UperNet state dict: a backbone and a UPerHead (``decode_head.psp_modules``)."""
    return any(k.startswith("decode_head.psp_modules.") for k in state_dict) and \
        any(k.startswith("backbone.") for k in state_dict)


def check_hf_backbone(config: Mapping[str, Any], reference: str) -> dict:
    """The UperNet's backbone config; an error unless it is a ConvNeXt (V1 or V2)."""
    backbone_config = config.get("backbone_config") or {}
    backbone_type = backbone_config.get("model_type")
    if backbone_type not in ("convnext", "convnextv2"):
        raise CheckpointError(f"{reference}: the UperNet's backbone is {backbone_type or 'not named'}; only ConvNeXt "
                              "V1/V2 backbones (model_type convnext or convnextv2) convert to this project's configs")
    return dict(backbone_config)


# --- transformers -> mmseg ----------------------------------------------------------------------

def hf_upernet_to_mmseg(config: Mapping[str, Any], state: Mapping[str, Tensor], reference: str,
                        path: Path) -> Written:
    """A transformers UperNet (its config.json and weights) -> an mmseg checkpoint (``state_dict`` +
    ``meta.dataset_meta``)."""
    backbone_config = check_hf_backbone(config, reference)
    if path.suffix == ".safetensors":
        raise ValueError(f"{path}: an mmseg checkpoint is a torch file (state_dict and meta); name it .pth")
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    heads = {k: v for k, v in state.items() if k.startswith(HEADS)}
    other = sorted({k.split(".", 1)[0] for k in state if not k.startswith(("backbone.", *HEADS))})
    if not backbone or not heads or other:
        raise CheckpointError(f"{reference}: expected backbone.*, decode_head.* and auxiliary_head.* weights, found "
                              f"top-level names {sorted({k.split('.', 1)[0] for k in state})}")
    converted = canonical_shapes(hf_reader.convert(backbone))
    arch = apply_config(arch_from_state_dict(converted), backbone_config, reference)
    stages = tuple(f"stage{i + 1}" for i in range(len(arch.depths)))
    outputs = config_outputs(backbone_config)
    if outputs != stages:
        raise CheckpointError(f"{reference}: the UperNet's backbone returns {list(outputs or [])}; the "
                              f"shipped configs take every stage ({', '.join(stages)})")
    tensors = {f"backbone.{k}": v for k, v in converted.items()}
    tensors.update(rename(heads, _HF_TO_MMSEG))
    labels = _labels(config)
    meta = {"dataset_meta": {"classes": labels}, "source": reference, "converted_by": "cvx2 convert",
            "config": shipped_config(arch), "backbone_arch": arch.as_dict()}
    with atomic_path(path) as tmp:  # an interrupt never leaves half a file
        torch.save({"state_dict": {k: v.contiguous() for k, v in tensors.items()}, "meta": meta}, tmp)
    pool_scales = tuple(config.get("pool_scales") or STANDARD_POOL_SCALES)
    return Written(path, "mmseg", len(tensors), usage=_mmseg_usage(arch, tensors, len(labels), pool_scales, path))


def _labels(config: Mapping[str, Any]) -> list[str]:
    """The class names in label order, from the config's ``id2label`` (JSON keys are strings)."""
    id2label = config.get("id2label") or {}
    count = int(config.get("num_labels") or len(id2label))
    return [str(id2label.get(str(i), id2label.get(i, f"class_{i}"))) for i in range(count)]


def shipped_config(arch: ArchSpec) -> str:
    """The shipped UperNet config of this backbone size (configs/convnextv2/... or configs/convnext/...)."""
    if arch.use_grn and arch.preset:
        crop = 640 if arch.preset in ("large", "huge") else 512
        return f"configs/convnextv2/upernet_convnextv2-{arch.preset}-fcmae_8xb2-160k_ade20k-{crop}x{crop}.py"
    if not arch.use_grn and arch.preset in SHIPPED_V1_SIZES:
        tag = {"tiny": "in1k", "small": "in1k", "base": "in1k"}.get(arch.preset, "in22k")
        crop = 512 if tag == "in1k" else 640
        return f"configs/convnext/upernet_convnext-{arch.preset}-{tag}_8xb2-160k_ade20k-{crop}x{crop}.py"
    base = "upernet_convnextv2" if arch.use_grn else "upernet_convnext"
    return f"configs/_base_/{base}_160k_ade20k-512x512.py with model.backbone.arch={arch.arch_kwargs['arch']}"


def head_overrides(tensors: Mapping[str, Tensor], num_classes: int, pool_scales: tuple[int, ...]) -> dict[str, Any]:
    """The config values the heads fix (channels, classes, pool scales, auxiliary convs), as ``--cfg-options``."""
    decode = tensors["decode_head.conv_seg.weight"]
    options: dict[str, Any] = {"model.decode_head.channels": int(decode.shape[1]),
                               "model.decode_head.num_classes": num_classes,
                               "model.decode_head.pool_scales": f"({','.join(map(str, pool_scales))})"}
    aux_convs = sorted(int(m.group(1)) for k in tensors if (m := _AUX_CONV.match(k)))
    if aux_convs:
        options["model.auxiliary_head.channels"] = int(tensors["auxiliary_head.conv_seg.weight"].shape[1])
        options["model.auxiliary_head.num_classes"] = num_classes
        options["model.auxiliary_head.num_convs"] = len(aux_convs)
        options["model.auxiliary_head.concat_input"] = "auxiliary_head.conv_cat.conv.weight" in tensors
    else:
        options["model.auxiliary_head"] = None
    return options


def _mmseg_usage(arch: ArchSpec, tensors: Mapping[str, Tensor], num_classes: int, pool_scales: tuple[int, ...],
                 path: Path) -> str:
    """The tools/test.py command line for the shipped config, with the options whose values differ from it."""
    options = head_overrides(tensors, num_classes, pool_scales)
    if arch.activation != "gelu":  # the shipped configs build GELU backbones
        options["model.backbone.hidden_act"] = arch.hidden_act
    defaults = {"model.decode_head.channels": 512, "model.decode_head.num_classes": 150,
                "model.decode_head.pool_scales": "(1,2,3,6)",
                "model.auxiliary_head.channels": 256, "model.auxiliary_head.num_classes": 150,
                "model.auxiliary_head.num_convs": 1, "model.auxiliary_head.concat_input": False}
    changed = " ".join(f"{k}={v}" for k, v in options.items() if defaults.get(k) != v)
    return (f"python tools/test.py {shipped_config(arch)} {path}"
            + (f" --cfg-options {changed}" if changed else ""))


# --- mmseg -> transformers ----------------------------------------------------------------------

def mmseg_upernet_to_hf(obj: Any, reference: str, path: Path) -> Written:
    """An mmseg UperNet checkpoint (loaded object) -> a ``UperNetForSemanticSegmentation`` save_pretrained folder."""
    from transformers import UperNetConfig, UperNetForSemanticSegmentation

    state = find_state_dict(obj, [])
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    backbone, _ = to_project_layout({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
    heads = {k: v for k, v in state.items() if k.startswith(HEADS)}
    other = sorted({k.split(".", 1)[0] for k in state if not k.startswith(("backbone.", *HEADS))})
    if other:
        raise CheckpointError(f"{reference}: a UperNet has a backbone and two heads; this checkpoint also holds "
                              f"{', '.join(other)}, which transformers' UperNet has no place for")
    arch = replace(arch_from_state_dict(backbone), hidden_act=activation_from_meta(obj, reference))
    norms = [f"stage{i + 1}" for i in range(len(arch.depths)) if f"norm{i}.weight" in backbone]
    if norms != [f"stage{i + 1}" for i in range(len(arch.depths))]:
        raise CheckpointError(f"{reference}: the backbone has output norms for {norms or 'no stage'}; transformers' "
                              "UperNet takes every stage, each through its output norm")
    psp = sorted({int(m.group(1)) for k in heads if (m := _PSP.match(k))})
    if len(psp) != len(STANDARD_POOL_SCALES):
        raise CheckpointError(f"{reference}: the UPerHead has {len(psp)} pyramid-pooling branches; the pool scales "
                              f"are not stored in the weights and only the standard {STANDARD_POOL_SCALES} are known")
    classes = _classes(obj, int(heads["decode_head.conv_seg.weight"].shape[0]))
    aux = [k for k in heads if _AUX_CONV.match(k)]
    backbone_config = hf_config(arch, [f"stage{i + 1}" for i in range(len(arch.depths))], None)
    config_kwargs: dict[str, Any] = dict(
        backbone_config=backbone_config, hidden_size=int(heads["decode_head.conv_seg.weight"].shape[1]),
        pool_scales=list(STANDARD_POOL_SCALES), use_auxiliary_head=bool(aux),
        num_labels=len(classes), id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)})
    if aux:
        first = heads["auxiliary_head.convs.0.conv.weight"]
        if int(first.shape[1]) != arch.dims[2]:
            raise CheckpointError(f"{reference}: the auxiliary head takes {first.shape[1]} channels; transformers' "
                                  f"UperNet feeds it stage 3 ({arch.dims[2]} channels)")
        config_kwargs.update(auxiliary_in_channels=int(first.shape[1]), auxiliary_channels=int(first.shape[0]),
                             auxiliary_num_convs=len(aux),
                             auxiliary_concat_input="auxiliary_head.conv_cat.conv.weight" in heads)
    model = UperNetForSemanticSegmentation(UperNetConfig(**config_kwargs)).eval()
    target = model.state_dict()
    tensors = {f"backbone.{hf_key(k)}": v for k, v in backbone.items()}
    tensors.update(rename(heads, _MMSEG_TO_HF))
    unknown = [k for k in tensors if k not in target]
    if unknown:
        raise CheckpointError(f"{reference}: {', '.join(unknown[:6])} have no place in transformers' UperNet")
    tensors = fit_shapes(tensors, target)
    model.load_state_dict(tensors, strict=True)
    save_pretrained(model, path)
    return Written(path, "hf", len(tensors), notes=activation_notes(arch),
                   usage=f"transformers.UperNetForSemanticSegmentation.from_pretrained('{path}')")


def _classes(obj: Any, count: int) -> list[str]:
    """Class names from mmengine's ``meta.dataset_meta.classes``; ``class_i`` when the checkpoint has none."""
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    names = ((meta or {}).get("dataset_meta") or {}).get("classes") if isinstance(meta, Mapping) else None
    if names is not None and len(names) != count:
        raise CheckpointError(f"the checkpoint's meta.dataset_meta lists {len(names)} classes but its head predicts "
                              f"{count}")
    return [str(n) for n in names] if names else [f"class_{i}" for i in range(count)]
