"""The architecture a checkpoint holds, read from its weights or from a config.json.

So a backbone can be built from weights alone, and a config whose ``arch`` does not match its
checkpoint fails with an error that names both sizes.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from torch import Tensor

from cvx2_backbone.models.convnext import V1_ARCHS, V2_ARCHS, ConvNeXt, ConvNeXtV2, canonical_activation
from cvx2_backbone.weights.errors import ArchMismatchError, CheckpointError
from cvx2_backbone.weights.readers.state_dict import convert_state_dict

_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.")
_TIMM_ARCH = re.compile(r"^convnext(v2)?_([a-z]+)$")
_LAYER_SCALE = 1e-6  # any positive value: loading overwrites it
_CONFIG_KEYS = ("model_type", "architecture", "hidden_sizes")
HF_MODEL_TYPES = ("convnext", "convnextv2", "dinov3_convnext")  # dinov3_convnext: V1 with layer scale
_HIDDEN_ACT = re.compile(r"""hidden_act\s*=\s*['"]([\w.]+)['"]""")


@dataclass(frozen=True)
class ArchSpec:
    """Depths, widths and block options of a ConvNeXt, plus its classifier size if it has one."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    use_grn: bool
    layer_scale: bool
    in_channels: int = 3
    patch_size: int = 4
    num_classes: int | None = None
    hidden_act: str | None = None  # None: the weights do not say (GELU, as every published ConvNeXt)
    drop_path_rate: float | None = None  # what a config.json records; training only
    out_features: tuple[str, ...] | None = None  # a Hugging Face backbone's outputs, from its config.json

    @property
    def activation(self) -> str:
        """The MLP's activation by its timm name ('gelu' when the weights do not say)."""
        return canonical_activation(self.hidden_act or "gelu")

    @property
    def version(self) -> str:
        """'V2' (GRN in the blocks) or 'V1'."""
        return "V2" if self.use_grn else "V1"

    @property
    def preset(self) -> str | None:
        """The preset name with these depths and widths (atto..huge), if there is one."""
        table = V2_ARCHS if self.use_grn else V1_ARCHS
        for name, (depths, dims) in table.items():
            if tuple(depths) == self.depths and tuple(dims) == self.dims:
                return name
        return None

    def describe(self) -> str:
        """E.g. 'ConvNeXt V2 tiny' or 'ConvNeXt V1 with depths [1, 1] and dims [8, 16]' plus options that differ."""
        size = self.preset or f"with depths {list(self.depths)} and dims {list(self.dims)}"
        extras = []
        if self.use_grn == self.layer_scale:
            extras.append("GRN and layer scale" if self.use_grn else "neither GRN nor layer scale")
        if self.in_channels != 3:
            extras.append(f"{self.in_channels} input channels")
        if self.patch_size != 4:
            extras.append(f"patch size {self.patch_size}")
        if self.activation != "gelu":
            extras.append(f"{self.hidden_act} activation")
        return f"ConvNeXt {self.version} {size}" + (f" ({', '.join(extras)})" if extras else "")

    @property
    def backbone_class(self) -> type[ConvNeXt]:
        """``ConvNeXtV2`` for GRN checkpoints, ``ConvNeXt`` otherwise."""
        return ConvNeXtV2 if self.use_grn else ConvNeXt

    @property
    def arch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make ``backbone_class`` match these weights."""
        kwargs: dict[str, Any] = {
            "arch": self.preset or {"depths": list(self.depths), "dims": list(self.dims)},
            "use_grn": self.use_grn,
            "layer_scale_init_value": _LAYER_SCALE if self.layer_scale else 0.0,
        }
        if self.in_channels != 3:
            kwargs["in_channels"] = self.in_channels
        if self.patch_size != 4:
            kwargs["patch_size"] = self.patch_size
        if self.activation != "gelu":
            kwargs["hidden_act"] = self.hidden_act
        return kwargs

    def backbone_cfg(self, **overrides: Any) -> dict[str, Any]:
        """An mmengine config dict for the backbone, e.g. ``dict(type='cvx2_backbone.ConvNeXtV2', arch='tiny')``,
        with the outputs and drop path a config.json records."""
        recorded: dict[str, Any] = {}
        if self.out_features:
            recorded["out_features"] = list(self.out_features)
        if self.drop_path_rate:
            recorded["drop_path_rate"] = self.drop_path_rate
        return {"type": f"cvx2_backbone.{self.backbone_class.__name__}", **self.arch_kwargs, **recorded, **overrides}

    def build_backbone(self, **overrides: Any) -> ConvNeXt:
        """A backbone of this architecture (random weights; load them with ``load_pretrained``)."""
        return self.backbone_class(**{**self.arch_kwargs, **overrides})

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON metadata), with the preset name added."""
        return {**asdict(self), "depths": list(self.depths), "dims": list(self.dims), "preset": self.preset,
                "out_features": list(self.out_features) if self.out_features else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ArchSpec":
        """Inverse of :meth:`as_dict` (the ``arch`` metadata this project's converted files carry)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["depths"], fields["dims"] = tuple(data["depths"]), tuple(data["dims"])
        if fields.get("out_features"):
            fields["out_features"] = tuple(fields["out_features"])
        return cls(**fields)

    @classmethod
    def of_model(cls, model: ConvNeXt) -> "ArchSpec":
        """The architecture of a built backbone."""
        return cls(tuple(model.depths), tuple(model.dims), bool(model.use_grn),
                   bool(model.layer_scale_init_value and model.layer_scale_init_value > 0),
                   model.in_channels, model.patch_size, hidden_act=model.hidden_act)


def arch_from_state_dict(state_dict: Mapping[str, Tensor]) -> ArchSpec:
    """Read the architecture from the shapes of a state dict in this project's layout."""
    blocks: dict[int, set[int]] = {}
    for key in state_dict:
        match = _BLOCK.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    stem = state_dict.get("downsample_layers.0.0.weight")
    if not blocks or stem is None:
        raise CheckpointError("cannot read the architecture: the weights have no stem "
                              "(downsample_layers.0.0.weight) or no blocks (stages.i.j.*)")
    stages = sorted(blocks)
    if stages != list(range(len(stages))) or any(sorted(b) != list(range(len(b))) for b in blocks.values()):
        raise CheckpointError(f"the checkpoint's stages/blocks are not numbered contiguously "
                              f"({ {s: sorted(b) for s, b in blocks.items()} }); it is incomplete")
    try:
        dims = tuple(int(state_dict[f"stages.{s}.0.dwconv.weight"].shape[0]) for s in stages)
    except KeyError as err:
        raise CheckpointError(f"cannot read the architecture: {err.args[0]} is missing") from err
    head = state_dict.get("head.weight")
    return ArchSpec(
        depths=tuple(len(blocks[s]) for s in stages),
        dims=dims,
        use_grn=any(k.endswith(".grn.gamma") for k in state_dict),
        layer_scale=any(_BLOCK.match(k) and k.endswith(".gamma") and ".grn." not in k for k in state_dict),
        in_channels=int(stem.shape[1]),
        patch_size=int(stem.shape[-1]),
        num_classes=int(head.shape[0]) if head is not None and head.dim() == 2 else None,
    )


def arch_from_config(config: Mapping[str, Any]) -> ArchSpec:
    """Read the architecture from a Hugging Face (``model_type`` convnext/convnextv2) or timm config.json."""
    model_type = config.get("model_type")
    if model_type in HF_MODEL_TYPES:
        try:
            depths, dims = tuple(config["depths"]), tuple(config["hidden_sizes"])
        except KeyError as err:
            raise CheckpointError(f"the {model_type} config has no {err.args[0]!r}") from err
        architectures = config.get("architectures") or []
        classifier = any(a.endswith("ForImageClassification") for a in architectures)
        labels = config.get("id2label")
        return ArchSpec(
            depths=depths, dims=dims, use_grn=model_type == "convnextv2",
            layer_scale=model_type != "convnextv2" and float(config.get("layer_scale_init_value", 1e-6)) > 0,
            in_channels=int(config.get("num_channels", 3)), patch_size=int(config.get("patch_size", 4)),
            num_classes=(len(labels) if labels else config.get("num_labels")) if classifier else None,
            hidden_act=str(config.get("hidden_act", "gelu")),
            drop_path_rate=float(config.get("drop_path_rate", 0.0)),
            out_features=_backbone_outputs(config),
        )
    match = _TIMM_ARCH.match(str(config.get("architecture", "")))
    if match:
        table = V2_ARCHS if match.group(1) else V1_ARCHS
        if match.group(2) in table:
            depths, dims = table[match.group(2)]
            classes = config.get("num_classes")
            return ArchSpec(tuple(depths), tuple(dims), use_grn=bool(match.group(1)), layer_scale=not match.group(1),
                            num_classes=int(classes) if classes else None)
    raise CheckpointError(f"not a ConvNeXt config: model_type={model_type!r}, architecture="
                          f"{config.get('architecture')!r}; expected a Hugging Face convnext/convnextv2 config or a "
                          "timm convnext_*/convnextv2_* config")


def infer_arch(source: Mapping[str, Any]) -> ArchSpec:
    """The architecture of a checkpoint (any supported layout, wrapped or not) or of a config.json dict."""
    if any(key in source for key in _CONFIG_KEYS):
        return arch_from_config(source)
    return arch_from_state_dict(convert_state_dict(source).state_dict)


def _backbone_outputs(config: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The outputs of a Hugging Face *backbone* config (a plain model's config also lists out_features, unused)."""
    if not any(a.endswith("Backbone") for a in config.get("architectures") or []):
        return None
    return config_outputs(config)


def config_outputs(config: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The ``out_features`` (or ``out_indices``, as names) of a Hugging Face ConvNeXt config."""
    names = config.get("out_features")
    if names is None and config.get("out_indices") is not None:
        stage_names = config.get("stage_names") or ["stem"] + [f"stage{i + 1}" for i in range(len(config["depths"]))]
        names = [stage_names[i] for i in config["out_indices"]]
    return tuple(names) if names else None


def apply_config(weights: ArchSpec, config: Mapping[str, Any] | None, source: str) -> ArchSpec:
    """The weights' architecture with what their Hugging Face config.json adds (activation, drop path, outputs).

    A config.json that describes another network than the weights it ships with (other depths, widths,
    V1/V2, layer scale) is an error naming both: the folder is inconsistent and one of the two is wrong.
    """
    if not config or config.get("model_type") not in HF_MODEL_TYPES:
        return weights
    declared = arch_from_config({"depths": weights.depths, "hidden_sizes": weights.dims, **config})
    problems = []
    if (declared.depths, declared.dims) != (weights.depths, weights.dims):
        problems.append(f"depths {list(declared.depths)} and hidden_sizes {list(declared.dims)}")
    if declared.use_grn != weights.use_grn:
        problems.append(f"model_type {config['model_type']!r}")
    if "layer_scale_init_value" in config and declared.layer_scale != weights.layer_scale:
        problems.append(f"layer_scale_init_value {config['layer_scale_init_value']}")
    for key, value, weight_value in (("num_channels", declared.in_channels, weights.in_channels),
                                     ("patch_size", declared.patch_size, weights.patch_size)):
        if key in config and value != weight_value:
            problems.append(f"{key} {value}")
    if problems:
        raise ArchMismatchError(f"{source}: config.json says {', '.join(problems)} ({declared.describe()}) but the "
                                f"weights are {weights.describe()}; the folder mixes two models: put the config.json "
                                "that belongs to these weights next to them")
    return replace(weights, hidden_act=declared.hidden_act, drop_path_rate=declared.drop_path_rate,
                   out_features=declared.out_features)


def activation_from_meta(checkpoint: Any, reference: str) -> str | None:
    """The backbone's activation as a training checkpoint records it: ``meta.backbone_arch`` (this project's UperNet
    conversion) or the config mmengine keeps in ``meta.cfg`` (read as text, never run); None when neither is there."""
    meta = checkpoint.get("meta") if isinstance(checkpoint, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    if isinstance(meta.get("backbone_arch"), Mapping):
        return meta["backbone_arch"].get("hidden_act")
    if not isinstance(meta.get("cfg"), str):
        return None
    found = set(_HIDDEN_ACT.findall(meta["cfg"]))
    if len(found) > 1:
        raise CheckpointError(f"{reference}: the training config in the checkpoint names several activations "
                              f"({', '.join(sorted(found))}); convert the backbone alone, or fix meta.cfg")
    return found.pop() if found else "gelu"  # the config is there and keeps the backbones' default
