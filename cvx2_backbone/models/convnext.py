"""ConvNeXt V1 and V2 backbones for OpenMMLab detectors and segmentors.

One implementation serves both generations: V2 is V1 with Global Response Normalization (GRN)
in every block and no layer scale. Parameter names follow the official code
(``downsample_layers.i``, ``stages.i.j.{dwconv,norm,pwconv1,grn,pwconv2,gamma}``), so official
checkpoints load without renaming; the per-output LayerNorms are ``norm0``..``normN-1`` (and
``norm_stem``), outside ``stages``, as in the official detection code.

Activations stay channels-last from end to end. Every block is the official formulation in
plain torch ops; the fused kernels that compute it faster live in :mod:`cvx2_backbone.ops`
(``fast_path='off'`` or ``CVX2_FAST_PATH=0`` turn them off).
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from timm.layers import DropPath, get_act_layer, trunc_normal_
from torch import Tensor, fx, nn

from cvx2_backbone.models.layer_ids import backbone_layer_depth
from cvx2_backbone.models.presets import V1_ARCHS, V2_ARCHS
from cvx2_backbone.ops import fp16_safe_statistics_enabled, fused_block_kernel, scaled_response_norm
from cvx2_backbone.registry import MODELS, SCOPE, WEIGHT_INITIALIZERS
from cvx2_backbone.models.selection import output_index, resolve_outputs

FAST_PATH_MODES = ("auto", "off")
# Gradient checkpointing granularities (``with_cp``): recompute each block, or each stage as one piece.
CP_GRANULARITIES = ("block", "stage")
# What ``with_cp=True`` means (docs/performance.md, "Gradient checkpointing: per block or per stage").
DEFAULT_CP_GRANULARITY = "block"
NORM_EPS = 1e-6
GRN_EPS = 1e-6

_ACT_ALIASES = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (the official ``channels_first`` LayerNorm).

    Normalises through an NHWC view, which is free when the input is channels-last.
    """

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _spatial_l2_norm(x: Tensor) -> Tensor:
    """Gx: the L2 norm over H and W of an NHWC tensor, (N, 1, 1, C), in fp32 or wider under any autocast.

    The squares of fp16 activations above 256 overflow fp16, so the statistics never run in it.
    (A plain function that ``torch.fx`` keeps as one call: it reads the input's dtype.)
    """
    return torch.linalg.vector_norm(x.to(torch.promote_types(x.dtype, torch.float32)), ord=2, dim=(1, 2),
                                    keepdim=True)


torch.fx.wrap("_spatial_l2_norm")


class GRN(nn.Module):
    """Global Response Normalization (ConvNeXt V2) on NHWC tensors: gamma * (x * Nx) + beta + x.

    ``gamma`` and ``beta`` are stored 1-D (the official code uses (1, 1, 1, C)); state dicts
    holding either shape load.
    """

    def __init__(self, dim: int, eps: float = GRN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        if fp16_safe_statistics_enabled():  # export-time form of the same Nx (cvx2_backbone.ops)
            nx = scaled_response_norm(x, self.eps).to(x.dtype)
        else:
            gx = _spatial_l2_norm(x)
            nx = (gx / (gx.mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype)
        return self.gamma * (x * nx) + self.beta + x

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("gamma", "beta"):
            key = prefix + name
            value = state_dict.get(key)
            if value is not None and value.dim() != 1 and value.numel() == getattr(self, name).numel():
                state_dict[key] = value.reshape(-1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Block(nn.Module):
    """ConvNeXt block: dwconv 7x7 -> LN -> Linear 4x -> act -> [GRN] -> Linear -> [layer scale] -> residual.

    ``forward`` is the official formulation; where a fused kernel of :mod:`cvx2_backbone.ops`
    computes the same function faster for a call (and ``fast_path`` is on), that kernel runs.
    """

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 0.0,
        use_grn: bool = True,
        act_layer: type[nn.Module] = nn.GELU,
        mlp_ratio: int = 4,
        fast_path: bool = True,
    ) -> None:
        super().__init__()
        hidden = mlp_ratio * dim
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.grn = GRN(hidden) if use_grn else None
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma = (nn.Parameter(layer_scale_init_value * torch.ones(dim))
                      if layer_scale_init_value and layer_scale_init_value > 0 else None)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.fast_path = fast_path

    def forward(self, x: Tensor) -> Tensor:
        """NCHW in and out (channels-last memory inside the backbone)."""
        fused = fused_block_kernel(self, x)
        if fused is not None:
            return fused(self, x)
        shortcut = x
        x = self.dwconv(x)
        x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        x = self.pwconv1(x)
        x = self.act(x)
        if self.grn is not None:
            x = self.grn(x)
        x = self.pwconv2(x)
        if self.gamma is not None:
            x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return shortcut + self.drop_path(x)


def _parse_arch(arch: str | Mapping[str, Any], presets: Mapping[str, tuple], kind: str) -> tuple[list[int], list[int]]:
    if isinstance(arch, str):
        key = arch.lower()
        if key not in presets:
            size = key.split("_")[-1].split("-")[-1]
            cli_name = (f" ({arch!r} is a preset name of the cvx2 command line and FeatureExtractor; in a config it "
                        f"is type='cvx2_backbone.{'ConvNeXtV2' if 'v2' in key else 'ConvNeXt'}', arch={size!r})"
                        if key.startswith("convnext") and size in presets else "")
            raise ValueError(f"unknown {kind} arch {arch!r}{cli_name}; choose one of "
                             f"{sorted(presets, key=list(presets).index)} or pass dict(depths=[...], dims=[...])")
        depths, dims = presets[key]
        return list(depths), list(dims)
    if not isinstance(arch, Mapping):
        raise ValueError(f"arch must be a preset name or dict(depths=[...], dims=[...]), got {type(arch).__name__}")
    missing = {"depths", "dims"} - set(arch)
    extra = set(arch) - {"depths", "dims"}
    if missing or extra:
        raise ValueError(f"malformed arch dict {dict(arch)}: it needs exactly the keys 'depths' and 'dims'"
                         + (f"; missing {sorted(missing)}" if missing else "")
                         + (f"; unexpected {sorted(extra)}" if extra else ""))
    for name in ("depths", "dims"):
        if isinstance(arch[name], (str, bytes)) or not isinstance(arch[name], Sequence):
            raise ValueError(f"malformed arch dict: {name} must be a list of positive ints (one per stage), got "
                             f"{arch[name]!r}; e.g. dict(depths=[3, 3, 9, 3], dims=[96, 192, 384, 768])")
    depths, dims = list(arch["depths"]), list(arch["dims"])
    if not depths or len(depths) != len(dims):
        raise ValueError(f"malformed arch dict: depths {depths} and dims {dims} must be non-empty and of equal length "
                         "(one entry per stage)")
    for name, values in (("depths", depths), ("dims", dims)):
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f"malformed arch dict: {name} must be positive ints, got {values}")
    return depths, dims


def _pretrained_as_init_cfg(pretrained: str | None, init_cfg: dict | list | None) -> dict | list | None:
    """mmdet's and mmseg's rule for the deprecated ``pretrained=``: a warning, then ``init_cfg`` Pretrained."""
    if pretrained is None:
        return init_cfg
    if init_cfg is not None:
        raise ValueError(f"pretrained={pretrained!r} and init_cfg={init_cfg!r} both given; keep only "
                         "init_cfg=dict(type='Pretrained', checkpoint=...) (with mmseg, set the model-level "
                         "pretrained=None)")
    if not isinstance(pretrained, str):
        raise TypeError(f"pretrained must be a checkpoint reference (str) or None, got {type(pretrained).__name__}")
    warnings.warn(f"pretrained={pretrained!r} is deprecated; use init_cfg=dict(type='Pretrained', checkpoint=...). "
                  "mmseg's EncoderDecoder hands its model-level pretrained to the backbone: set model.pretrained=None "
                  "if the base config's weights are for another backbone", FutureWarning, stacklevel=3)
    return dict(type="Pretrained", checkpoint=pretrained)


def canonical_activation(hidden_act: str) -> str:
    """The timm name of an activation given by its timm or Hugging Face name (``gelu_new`` -> ``gelu_tanh``)."""
    return _ACT_ALIASES.get(hidden_act, hidden_act)


def _act_layer(hidden_act: str) -> type[nn.Module]:
    try:
        return get_act_layer(canonical_activation(hidden_act))
    except Exception as err:  # timm raises assorted errors for unknown names
        raise ValueError(f"unknown hidden_act {hidden_act!r}; use a timm activation name such as "
                         "'gelu', 'gelu_tanh', 'relu' or 'silu'") from err


def _normed_outputs(out_norm: bool | Sequence[str], outputs: list[str], num_stages: int) -> frozenset[str]:
    """The outputs that get a LayerNorm: all (True), none (False), or those named (must be valid output names)."""
    if isinstance(out_norm, bool):
        return frozenset(outputs if out_norm else ())
    names = [out_norm] if isinstance(out_norm, str) else list(out_norm)
    valid = ["stem"] + [f"stage{i + 1}" for i in range(num_stages)]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"out_norm {names}: unknown output name(s) {unknown}; give True, False or names among {valid}")
    return frozenset(n for n in names if n in outputs)


@MODELS.register_module()
class ConvNeXt(BaseModule):
    """ConvNeXt backbone (V1 defaults: no GRN, layer scale 1e-6) returning multi-scale features.

    Args:
        arch: preset name (see ``arch_zoo``) or ``dict(depths=[...], dims=[...])`` with any number of stages.
        in_channels: input image channels.
        out_indices: OpenMMLab stage indices to return (0 is stage1; negatives count from the end).
        out_features: Hugging Face output names (``stem``, ``stage1``..``stageN``); must agree with
            ``out_indices`` if both are given. Neither: every stage.
        out_norm: put a LayerNorm on each returned feature map (as the detection/segmentation code does);
            or a list of output names that get one, the others returned as they are (DINOv3's dense
            features: ``['stage4']``, its final norm on the last stage only).
        drop_path_rate: stochastic depth at the last block; it rises linearly from 0 over all blocks.
        layer_scale_init_value: initial layer scale; 0 or None disables it.
        use_grn: Global Response Normalization in every block.
        frozen_stages: freeze the first k stages with their downsampling layers (0 or -1: none).
        with_cp: gradient checkpointing in training: ``'block'`` keeps only each block's input and recomputes the
            block in the backward pass, ``'stage'`` keeps only each stage's input and recomputes the whole stage;
            ``True`` is :data:`DEFAULT_CP_GRANULARITY`, ``False`` turns it off (mmdet/mmseg configs pass a bool).
        patch_size: stem kernel and stride.
        hidden_act: activation in the MLP (timm name, or Hugging Face's ``gelu_new``/``gelu_pytorch_tanh``).
        fast_path: ``'auto'`` runs each block on a fused kernel of :mod:`cvx2_backbone.ops` where one
            applies (same function, faster); ``'off'``: always the plain ops.
        init_cfg: mmengine init config, e.g. ``dict(type='Pretrained', checkpoint=SRC)``.
        pretrained: deprecated spelling of ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``, accepted
            as mmdet's and mmseg's own backbones accept it (mmseg's EncoderDecoder passes its ``pretrained`` on).
    """

    arch_zoo = V1_ARCHS
    default_use_grn = False
    default_layer_scale = 1e-6

    def __init__(
        self,
        arch: str | Mapping[str, Any] = "tiny",
        in_channels: int = 3,
        out_indices: Sequence[int] | int | None = None,
        out_features: Sequence[str] | str | None = None,
        out_norm: bool | Sequence[str] = True,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float | None = None,
        use_grn: bool | None = None,
        frozen_stages: int = 0,
        with_cp: bool | str = False,
        patch_size: int = 4,
        hidden_act: str = "gelu",
        fast_path: str = "auto",
        init_cfg: dict | list | None = None,
        pretrained: str | None = None,
    ) -> None:
        super().__init__(init_cfg=_pretrained_as_init_cfg(pretrained, init_cfg))
        self.depths, self.dims = _parse_arch(arch, self.arch_zoo, type(self).__name__)
        num_stages = len(self.depths)
        for name, value in (("in_channels", in_channels), ("patch_size", patch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"frozen_stages must be in -1..{num_stages} (0 or -1 freezes nothing), "
                             f"got {frozen_stages}")
        if fast_path not in FAST_PATH_MODES:
            raise ValueError(f"fast_path must be one of {FAST_PATH_MODES}, got {fast_path!r}")
        self.arch = arch
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.use_grn = self.default_use_grn if use_grn is None else bool(use_grn)
        self.layer_scale_init_value = (self.default_layer_scale if layer_scale_init_value is None
                                       else layer_scale_init_value)
        self.frozen_stages = max(frozen_stages, 0)
        self.with_cp = with_cp
        self.hidden_act = hidden_act

        self.out_features = resolve_outputs(num_stages, out_indices, out_features)
        self.out_norm = out_norm
        self._normed = _normed_outputs(out_norm, self.out_features, num_stages)
        self.out_indices = [output_index(n) for n in self.out_features]
        self.out_channels = [self._channels_of(n) for n in self.out_features]
        self.out_strides = [self._stride_of(n) for n in self.out_features]
        # The smallest input that still gives every stage at least one pixel.
        self.min_input_size = patch_size * 2 ** (num_stages - 1)

        act_layer = _act_layer(hidden_act)
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(
            nn.Conv2d(in_channels, self.dims[0], kernel_size=patch_size, stride=patch_size),
            LayerNorm2d(self.dims[0], eps=NORM_EPS)))
        for i in range(1, num_stages):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm2d(self.dims[i - 1], eps=NORM_EPS),
                nn.Conv2d(self.dims[i - 1], self.dims[i], kernel_size=2, stride=2)))

        num_blocks = sum(self.depths)  # drop path rises linearly from 0 to drop_path_rate
        rates = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.stages = nn.ModuleList()
        first = 0
        for depth, dim in zip(self.depths, self.dims):
            self.stages.append(nn.Sequential(*[
                Block(dim, rates[first + j], self.layer_scale_init_value, self.use_grn, act_layer,
                      fast_path=fast_path == "auto")
                for j in range(depth)]))
            first += depth

        for name, channels in zip(self.out_features, self.out_channels):
            if name in self._normed:
                self.add_module(self._norm_name(name), LayerNorm2d(channels, eps=NORM_EPS))

        self.apply(self._init_module)
        self._freeze_stages()

    # --- description -------------------------------------------------------------------------
    def _channels_of(self, name: str) -> int:
        index = output_index(name)
        return self.dims[0] if index is None else self.dims[index]

    def _stride_of(self, name: str) -> int:
        index = output_index(name)
        return self.patch_size * 2 ** (0 if index is None else index)

    @staticmethod
    def _norm_name(name: str) -> str:
        index = output_index(name)
        return "norm_stem" if index is None else f"norm{index}"

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    # --- initialisation and freezing ---------------------------------------------------------
    @staticmethod
    def _init_module(module: nn.Module) -> None:
        """Truncated-normal init as in the official code."""
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', checkpoint=...)`` through this package's loader."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get("type") == "Pretrained":
            WEIGHT_INITIALIZERS.build(dict(cfg, type=f"{SCOPE}.Pretrained"))(self)
            self._is_init = True
            return
        super().init_weights()

    def _frozen_modules(self) -> list[nn.Module]:
        return [m for i in range(self.frozen_stages) for m in (self.downsample_layers[i], self.stages[i])]

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> "ConvNeXt":
        super().train(mode)
        self._freeze_stages()
        return self

    @property
    def fast_path(self) -> str:
        """``'auto'`` if any block may run a fused kernel, else ``'off'``; assign either to switch."""
        return "auto" if any(block.fast_path for block in self.modules() if isinstance(block, Block)) else "off"

    @fast_path.setter
    def fast_path(self, mode: str) -> None:
        if mode not in FAST_PATH_MODES:
            raise ValueError(f"fast_path must be one of {FAST_PATH_MODES}, got {mode!r}")
        for block in self.modules():
            if isinstance(block, Block):
                block.fast_path = mode == "auto"

    def set_reference_path(self, enabled: bool = True) -> "ConvNeXt":
        """Alias of ``fast_path = 'off' if enabled else 'auto'`` (every block on the plain ops)."""
        self.fast_path = "off" if enabled else "auto"
        return self

    # --- forward -----------------------------------------------------------------------------
    def _check_input(self, x: Any) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            fix = ("add a batch dimension with x[None] for a single image" if x.dim() == 3 else
                   "fold the extra leading dimensions into the batch, e.g. x.flatten(0, -4)" if x.dim() > 4 else
                   "give images as (N, C, H, W)")
            raise ValueError(f"{type(self).__name__} expects a 4-D (N, C, H, W) tensor, got shape {tuple(x.shape)}; "
                             f"{fix}")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects normalised floating-point pixels, got a {x.dtype} tensor; "
                            "convert raw images with (x.float() / 255 - mean) / std, or let FeatureExtractor do it")
        weight = self.downsample_layers[0][0].weight
        autocast = x.device.type in ("cpu", "cuda", "xpu", "mps") and torch.is_autocast_enabled(x.device.type)
        if x.dtype != weight.dtype and not autocast:
            raise TypeError(f"input is {x.dtype} but the backbone's weights are {weight.dtype}; convert one to the "
                            f"other (x.to({weight.dtype}) or model.to({x.dtype})), or run under torch.autocast")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"input has {x.shape[1]} channels but the backbone was built with in_channels="
                             f"{self.in_channels} (shape {tuple(x.shape)}); convert the images or set in_channels")
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than the network's total stride "
                             f"{self.min_input_size}; resize or pad images to at least "
                             f"{self.min_input_size}x{self.min_input_size}")

    @property
    def with_cp(self) -> bool | str:
        """Gradient checkpointing as set: ``False``, ``True`` (the default granularity), ``'block'`` or ``'stage'``."""
        return self._with_cp

    @with_cp.setter
    def with_cp(self, value: bool | str) -> None:
        if value is None:
            value = False
        if not (isinstance(value, bool) or value in CP_GRANULARITIES):
            raise ValueError(f"with_cp must be True, False or one of {CP_GRANULARITIES} (the checkpointing "
                             f"granularity), got {value!r}")
        self._with_cp = value

    @property
    def cp_granularity(self) -> str | None:
        """``'block'`` or ``'stage'`` where gradient checkpointing is on, else None."""
        if self._with_cp is True:
            return DEFAULT_CP_GRANULARITY
        return self._with_cp or None

    def _run_stage(self, stage: nn.Sequential, x: Tensor) -> Tensor:
        granularity = self.cp_granularity
        if granularity is None or not (self.training and torch.is_grad_enabled()):
            return stage(x)
        if not x.requires_grad and not any(p.requires_grad for p in stage.parameters()):
            return stage(x)  # a frozen stage on a frozen input: nothing to differentiate, nothing to recompute
        if granularity == "stage":
            return cp.checkpoint(stage, x, use_reentrant=False)
        for block in stage:
            x = cp.checkpoint(block, x, use_reentrant=False)
        return x

    def _emit(self, name: str, x: Tensor) -> Tensor:
        x = getattr(self, self._norm_name(name))(x) if self.out_norm and name in self._normed else x
        # Plain NCHW memory: mmcv's ops (RoIAlign, ...) read raw NCHW memory without checking strides.
        return x.contiguous()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Return the selected feature maps, in network order, as a tuple of contiguous NCHW tensors."""
        if not isinstance(x, fx.Proxy):  # torch.fx tracing passes a Proxy, which has no shape to check
            self._check_input(x)
        x = x.contiguous(memory_format=torch.channels_last)
        wanted = set(self.out_features)
        last = output_index(self.out_features[-1])  # None: only the stem is wanted
        outputs = []
        for i in range(1 if last is None else last + 1):
            x = self.downsample_layers[i](x)
            if i == 0 and "stem" in wanted:
                outputs.append(self._emit("stem", x))
                if last is None:
                    break
            x = self._run_stage(self.stages[i], x)
            if f"stage{i + 1}" in wanted:
                outputs.append(self._emit(f"stage{i + 1}", x))
        return tuple(outputs)

    # --- layer-wise lr decay hook (mmpretrain's signature) -----------------------------------
    def get_layer_depth(self, param_name: str, prefix: str = "") -> tuple[int, int]:
        """Layer id of a parameter for layer-wise lr decay, and the number of layers.

        See :func:`cvx2_backbone.models.layer_ids.convnext_layer_id` for the rule.
        """
        return backbone_layer_depth(self, param_name, prefix)


@MODELS.register_module()
class ConvNeXtV2(ConvNeXt):
    """ConvNeXt V2 backbone: GRN on, no layer scale by default; presets atto..huge."""

    arch_zoo = V2_ARCHS
    default_use_grn = True
    default_layer_scale = 0.0
