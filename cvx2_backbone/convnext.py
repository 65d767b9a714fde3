"""ConvNeXt V1 and V2 backbones for OpenMMLab detectors and segmentors.

One implementation serves both generations: V2 is V1 with Global Response Normalization (GRN)
in every block and no layer scale. Parameter names follow the official code
(``downsample_layers.i``, ``stages.i.j.{dwconv,norm,pwconv1,grn,pwconv2,gamma}``), so official
checkpoints load without renaming; the per-output LayerNorms are ``norm0``..``normN-1`` (and
``norm_stem``), outside ``stages``, as in the official detection code.

The default forward keeps activations channels-last from end to end and folds GRN (and layer
scale) into the second pointwise layer, so the 4x-wide hidden tensor is read as few times as
possible. ``Block.forward_reference`` is the plain transcription of the paper, used by tests.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from timm.layers import DropPath, get_act_layer, trunc_normal_
from timm.layers import activations as timm_activations
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .registry import MODELS
from .selection import output_index, resolve_outputs

# Presets as data: name -> (depths, dims).
V2_ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "huge": ((3, 3, 27, 3), (352, 704, 1408, 2816)),
}
V1_ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    **{k: V2_ARCHS[k] for k in ("atto", "femto", "pico", "nano", "tiny", "base", "large")},
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}

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


class _SpatialL2Norm(torch.autograd.Function):
    """L2 norm over H and W of an NHWC tensor, per sample and channel, accumulated in ``dtype``.

    ``torch.linalg.vector_norm`` reduces over outer dimensions slowly on CPU (5-15x slower than
    a pass over memory); summing the squares of cache-sized row blocks gives the same value.
    """

    block_bytes = 2 << 20

    @staticmethod
    def forward(ctx: Any, x: Tensor, dtype: torch.dtype) -> Tensor:
        n, h, w, c = x.shape
        rows = x.reshape(n, h * w, c)
        block = max(1, min(h * w, _SpatialL2Norm.block_bytes // (n * c * torch.finfo(dtype).bits // 8)))
        parts = rows.split(block, dim=1)
        squares = torch.empty((n, block, c), dtype=dtype, device=x.device)
        sums = torch.empty((len(parts), n, c), dtype=dtype, device=x.device)
        for part, partial_sum in zip(parts, sums):
            square = squares[:, :part.shape[1]]
            if part.dtype == dtype:
                torch.mul(part, part, out=square)
            else:  # widen first: exact squares (mixed-dtype kernels are 40x slower than these two)
                square.copy_(part).mul_(square)
            torch.sum(square, dim=1, out=partial_sum)
        total = sums.sum(dim=0)
        norm = total.sqrt_()
        ctx.save_for_backward(x, norm)
        return norm

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        x, norm = ctx.saved_tensors
        # d|x|/dx = x / |x|, taken as 0 where the norm is 0 (as torch.linalg.vector_norm does).
        scale = torch.where(norm > 0, grad / norm, torch.zeros_like(norm))
        return x * scale[:, None, None, :].to(x.dtype), None


class GRN(nn.Module):
    """Global Response Normalization (ConvNeXt V2) on NHWC tensors.

    ``gamma`` and ``beta`` are stored 1-D (the official code uses (1, 1, 1, C)); state dicts
    holding either shape load. The per-channel statistics are computed in fp32 (or wider), so
    autocast cannot overflow the L2 norm.
    """

    def __init__(self, dim: int, eps: float = GRN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    @staticmethod
    def spatial_norm(x: Tensor, dtype: torch.dtype) -> Tensor:
        """Gx: the L2 norm over H, W per sample and channel, (N, C) in ``dtype``."""
        if x.device.type == "cpu" and not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            return _SpatialL2Norm.apply(x, dtype)
        return torch.linalg.vector_norm(x, ord=2, dim=(1, 2), dtype=dtype)

    def response_scale(self, x: Tensor) -> Tensor:
        """``1 + gamma * Nx`` per sample and channel, shape (N, C), in fp32 or wider: GRN(x) = x * scale + beta."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        gx = self.spatial_norm(x, dtype)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return torch.addcmul(torch.ones_like(nx), self.gamma.to(dtype), nx)

    def forward(self, x: Tensor) -> Tensor:
        """Reference formulation: gamma * (x * Nx) + beta + x."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        gx = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True, dtype=dtype)
        nx = (gx / (gx.mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype)
        return self.gamma * (x * nx) + self.beta + x

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("gamma", "beta"):
            key = prefix + name
            value = state_dict.get(key)
            if value is not None and value.dim() != 1 and value.numel() == getattr(self, name).numel():
                state_dict[key] = value.reshape(-1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _find_onednn_linear() -> Any:
    """oneDNN's CPU linear with fused epilogues (the kernel ``torch.compile`` uses), or None if this torch lacks it."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        op.default, op.binary  # noqa: B018 - both overloads must exist
    except (AttributeError, RuntimeError):
        return None
    usable = torch.backends.mkldnn.is_available() and hasattr(torch, "get_autocast_dtype")
    return op if usable else None


@torch.compiler.assume_constant_result
def _several_threads() -> bool:
    """Whether torch runs CPU work on several threads (read once per compiled graph, without a graph break)."""
    return torch.get_num_threads() > 1


class Block(nn.Module):
    """ConvNeXt block: dwconv 7x7 -> LN -> Linear 4x -> act -> [GRN] -> Linear -> [layer scale] -> residual.

    Three ways to run it, all computing the same function (see docs/performance.md):

    * ``forward_reference``: the official code, line by line (tests compare against it);
    * autograd path (training, GPU, ``torch.compile``): channels-last throughout, GRN's beta and
      layer scale folded into pwconv2 (for a single image GRN's scale too, so the 4x-wide tensor
      is never rescaled), GRN's statistics in fp32 blocks; on CPU the pointwise layers run as 1x1
      convolutions where torch gives those to oneDNN, much faster than the BLAS behind ``F.linear``;
    * CPU inference (no autograd needed): oneDNN linears with the bias and activation fused into
      pwconv1 and the bias and residual fused into pwconv2, GRN's scale applied in place, or
      folded into pwconv2 image by image where an image's hidden tensor outweighs that weight.
    """

    _onednn_linear = _find_onednn_linear()
    # Activations oneDNN fuses into pwconv1: module type -> (post-op, scalars, algorithm); nn.GELU is read.
    _onednn_acts: dict[type, tuple[str, list, str]] = {
        timm_activations.GELU: ("gelu", [None], "none"), timm_activations.GELUTanh: ("gelu", [None], "tanh"),
        nn.ReLU: ("relu", [], ""), nn.SiLU: ("swish", [], ""),
    }

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 0.0,
        use_grn: bool = True,
        act_layer: type[nn.Module] = nn.GELU,
        mlp_ratio: int = 4,
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
        self.use_reference = False

    def forward(self, x: Tensor) -> Tensor:
        """NCHW (channels-last memory) in and out."""
        if self.use_reference:
            return self.forward_reference(x)
        dtype = self._onednn_dtype(x)
        if dtype is not None:
            return self._forward_onednn(x, dtype)
        return self._forward_autograd(x)

    # --- the autograd path --------------------------------------------------------------------
    def _forward_autograd(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)  # NHWC view; contiguous for channels-last input
        x = self.act(self._pointwise(self.norm(x), self.pwconv1.weight, self.pwconv1.bias))
        x, scale = self._apply_grn_scale(x, inplace=False)
        weight, bias = self._folded_pwconv2()
        weight = weight if scale is None else weight * scale
        x = self._pointwise(x, weight.to(x.dtype), bias.to(x.dtype)).to(self._branch_dtype(x.dtype))
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))

    def _branch_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The residual branch's dtype in the reference: layer scale (``gamma * x``) promotes it to gamma's."""
        return dtype if self.gamma is None else torch.promote_types(dtype, self.gamma.dtype)

    @staticmethod
    def _pointwise(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """``F.linear`` on NHWC activations.

        On CPU it runs as a 1x1 convolution of the NCHW view wherever torch gives such a
        convolution to oneDNN (more than one thread, or a batch of 16 or more), whose GEMMs beat
        the BLAS behind ``F.linear`` there by up to 2x, backward included.
        """
        if x.device.type == "cpu" and (x.shape[0] >= 16 or _several_threads()):
            return F.conv2d(x.permute(0, 3, 1, 2), weight[:, :, None, None], bias).permute(0, 2, 3, 1)
        return F.linear(x, weight, bias)

    def _apply_grn_scale(self, x: Tensor, inplace: bool) -> tuple[Tensor, Tensor | None]:
        """GRN(x) = x * s + beta with a per-sample, per-channel scale s (fp32).

        A single image's s is returned to be folded into pwconv2's weight; for a batch, x is
        rescaled (one pass) instead, since a per-sample weight would make N small GEMMs.
        """
        if self.grn is None:
            return x, None
        scale = self.grn.response_scale(x)
        if x.shape[0] == 1:
            return x, scale[0]
        scale = scale[:, None, None, :].to(x.dtype)
        return (x.mul_(scale) if inplace else x * scale), None

    def _folded_pwconv2(self) -> tuple[Tensor, Tensor]:
        """pwconv2's weight and bias with GRN's beta and the layer scale folded in.

        pwconv2(x * s + beta) = (x * s) @ W^T + (W @ beta + b), and for one image x @ (W * s)^T
        + (W @ beta + b); gamma * (x @ W^T + b) scales W's rows and b.
        """
        weight, bias = self.pwconv2.weight, self.pwconv2.bias
        if self.grn is not None:
            bias = torch.addmv(bias, weight, self.grn.beta)
        if self.gamma is not None:
            weight = weight * self.gamma[:, None]
            bias = bias * self.gamma
        return weight, bias

    # --- the CPU inference path ---------------------------------------------------------------
    def _onednn_dtype(self, x: Tensor) -> torch.dtype | None:
        """The dtype to run the oneDNN inference path in, or None where it does not apply.

        It applies on CPU when no gradient is needed, outside ``torch.compile``/``torch.export``
        (which fuse on their own) and tracing (ONNX export), without active drop path, in fp32 or
        bf16 (directly or under bf16 autocast).
        """
        if torch.compiler.is_compiling() or self._onednn_linear is None or x.device.type != "cpu":
            return None
        if torch.jit.is_tracing():
            return None
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            return None
        if self.training and not isinstance(self.drop_path, nn.Identity):
            return None
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            return dtype if dtype == torch.bfloat16 else None
        dtype = self.pwconv1.weight.dtype
        return dtype if dtype in (torch.float32, torch.bfloat16) and x.dtype == dtype else None

    def _onednn_activation(self) -> tuple[str, list, str] | None:
        """pwconv1's activation as a oneDNN post-op (name, scalars, algorithm), or None if it has none."""
        if type(self.act) is nn.GELU:
            return "gelu", [None], self.act.approximate
        return self._onednn_acts.get(type(self.act))

    def _forward_onednn(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        shortcut = x.permute(0, 2, 3, 1)
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1)).to(dtype)
        w1, b1 = self.pwconv1.weight.to(dtype), self.pwconv1.bias.to(dtype)
        w2, b2 = self._folded_pwconv2()
        weights = (w1, b1, w2, b2.to(dtype))
        n, h, w, c = y.shape
        if n == 1 or h * w < c:
            out = self._onednn_mlp(y, shortcut, weights)
        else:  # image by image: GRN's scale folds into pwconv2, and the 4x-wide tensor stays small and reused
            out = torch.cat([self._onednn_mlp(y[i:i + 1], shortcut[i:i + 1], weights) for i in range(n)])
        return out.permute(0, 3, 1, 2)

    def _onednn_mlp(self, y: Tensor, shortcut: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        """pwconv1 (bias and activation fused), GRN, pwconv2 (bias and residual fused) on NHWC tensors."""
        linear, (w1, b1, w2, b2) = self._onednn_linear, weights
        act = self._onednn_activation()
        h = linear(y, w1, b1, *act) if act is not None else self.act(linear(y, w1, b1, "none", [], ""))
        h, scale = self._apply_grn_scale(h, inplace=True)
        w2 = (w2 if scale is None else w2 * scale).to(h.dtype)
        branch_dtype = self._branch_dtype(h.dtype)
        if shortcut.dtype == h.dtype == branch_dtype and shortcut.is_contiguous():
            return linear.binary(h, shortcut, w2, b2, "add")
        return shortcut + linear(h, w2, b2, "none", [], "").to(branch_dtype)

    # --- the reference ------------------------------------------------------------------------
    def forward_reference(self, x: Tensor) -> Tensor:
        """The block as the official code writes it (NCHW in, NCHW out)."""
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
            raise ValueError(f"unknown {kind} arch {arch!r}; choose one of {sorted(presets, key=list(presets).index)} "
                             "or pass dict(depths=[...], dims=[...])")
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


def _act_layer(hidden_act: str) -> type[nn.Module]:
    try:
        return get_act_layer(_ACT_ALIASES.get(hidden_act, hidden_act))
    except Exception as err:  # timm raises assorted errors for unknown names
        raise ValueError(f"unknown hidden_act {hidden_act!r}; use a timm activation name such as "
                         "'gelu', 'gelu_tanh', 'relu' or 'silu'") from err


@MODELS.register_module()
class ConvNeXt(BaseModule):
    """ConvNeXt backbone (V1 defaults: no GRN, layer scale 1e-6) returning multi-scale features.

    Args:
        arch: preset name (see ``arch_zoo``) or ``dict(depths=[...], dims=[...])`` with any number of stages.
        in_channels: input image channels.
        out_indices: OpenMMLab stage indices to return (0 is stage1; negatives count from the end).
        out_features: Hugging Face output names (``stem``, ``stage1``..``stageN``); must agree with
            ``out_indices`` if both are given. Neither: every stage.
        out_norm: put a LayerNorm on each returned feature map (as the detection/segmentation code does).
        drop_path_rate: stochastic depth at the last block; it rises linearly from 0 over all blocks.
        layer_scale_init_value: initial layer scale; 0 or None disables it.
        use_grn: Global Response Normalization in every block.
        frozen_stages: freeze the first k stages with their downsampling layers (0 or -1: none).
        with_cp: gradient checkpointing per block (saves activation memory in training).
        patch_size: stem kernel and stride.
        hidden_act: activation in the MLP (timm name, or Hugging Face's ``gelu_new``/``gelu_pytorch_tanh``).
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
        out_norm: bool = True,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float | None = None,
        use_grn: bool | None = None,
        frozen_stages: int = 0,
        with_cp: bool = False,
        patch_size: int = 4,
        hidden_act: str = "gelu",
        init_cfg: dict | list | None = None,
        pretrained: str | None = None,
    ) -> None:
        super().__init__(init_cfg=_pretrained_as_init_cfg(pretrained, init_cfg))
        self.depths, self.dims = _parse_arch(arch, self.arch_zoo, type(self).__name__)
        num_stages = len(self.depths)
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"frozen_stages must be in -1..{num_stages} (0 or -1 freezes nothing), "
                             f"got {frozen_stages}")
        self.arch = arch
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.use_grn = self.default_use_grn if use_grn is None else bool(use_grn)
        self.layer_scale_init_value = (self.default_layer_scale if layer_scale_init_value is None
                                       else layer_scale_init_value)
        self.frozen_stages = max(frozen_stages, 0)
        self.with_cp = with_cp
        self.out_norm = out_norm

        self.out_features = resolve_outputs(num_stages, out_indices, out_features)
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
                Block(dim, rates[first + j], self.layer_scale_init_value, self.use_grn, act_layer)
                for j in range(depth)]))
            first += depth

        if out_norm:
            for name, channels in zip(self.out_features, self.out_channels):
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
            from .weights import load_pretrained
            load_pretrained(self, cfg["checkpoint"], prefix=cfg.get("prefix"))
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

    def set_reference_path(self, enabled: bool = True) -> "ConvNeXt":
        """Run every block through ``Block.forward_reference`` (for tests and benchmarks)."""
        for module in self.modules():
            if isinstance(module, Block):
                module.use_reference = enabled
        return self

    # --- forward -----------------------------------------------------------------------------
    def _check_input(self, x: Any) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects a 4-D (N, C, H, W) tensor, got shape {tuple(x.shape)}; "
                             "add a batch dimension with x[None] for a single image")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"input has {x.shape[1]} channels but the backbone was built with in_channels="
                             f"{self.in_channels} (shape {tuple(x.shape)}); convert the images or set in_channels")
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than the network's total stride "
                             f"{self.min_input_size}; resize or pad images to at least "
                             f"{self.min_input_size}x{self.min_input_size}")

    def _run_stage(self, stage: nn.Sequential, x: Tensor) -> Tensor:
        if self.with_cp and self.training and torch.is_grad_enabled():
            for block in stage:
                x = cp.checkpoint(block, x, use_reentrant=False)
            return x
        return stage(x)

    def _emit(self, name: str, x: Tensor) -> Tensor:
        x = getattr(self, self._norm_name(name))(x) if self.out_norm else x
        # Plain NCHW memory: mmcv's ops (RoIAlign, ...) read raw NCHW memory without checking strides.
        return x.contiguous()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Return the selected feature maps, in network order, as a tuple of contiguous NCHW tensors."""
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

        See :func:`cvx2_backbone.lr_decay.convnext_layer_id` for the rule.
        """
        from .lr_decay import backbone_layer_depth
        return backbone_layer_depth(self, param_name, prefix)


@MODELS.register_module()
class ConvNeXtV2(ConvNeXt):
    """ConvNeXt V2 backbone: GRN on, no layer scale by default; presets atto..huge."""

    arch_zoo = V2_ARCHS
    default_use_grn = True
    default_layer_scale = 0.0
