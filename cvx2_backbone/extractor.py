"""Multi-scale feature extraction: images in, a dict of named feature maps out.

``FeatureExtractor`` bundles a ConvNeXt V2/V1 backbone, an optional FPN neck and the
preprocessing that feeds them (RGB in [0, 1], optional shortest-edge resize, ImageNet mean/std,
zero padding to the stride), so paths, PIL images, arrays and tensors all give the same features.
"""
from __future__ import annotations

import math
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .convnext import ConvNeXt, ConvNeXtV2

ImageLike = Union[str, Path, Image.Image, np.ndarray, Tensor]
Images = Union[ImageLike, Sequence[ImageLike]]

_PRESET = re.compile(r"^convnext(v2)?[_-]([a-z]+)$")


def parse_preset(name: str) -> tuple[type[ConvNeXt], str]:
    """``'convnextv2_atto'`` -> (ConvNeXtV2, 'atto'); ``'convnext_tiny'`` -> (ConvNeXt, 'tiny')."""
    match = _PRESET.match(name.strip().lower()) if isinstance(name, str) else None
    cls = (ConvNeXtV2 if match.group(1) else ConvNeXt) if match else None
    if cls is None or match.group(2) not in cls.arch_zoo:
        size = str(name).strip().lower()
        guesses = [p for p in preset_names() if p.endswith(f"_{size}")]
        hint = f"did you mean {' or '.join(guesses)}? " if guesses else ""
        raise ValueError(f"unknown model preset {name!r}; {hint}presets are convnextv2_<size> or convnext_<size>: "
                         + ", ".join(preset_names()))
    return cls, match.group(2)


def model_name(backbone: ConvNeXt) -> str:
    """The preset name of a backbone (``'convnextv2_atto'``), or its class and sizes when it is custom."""
    prefix = "convnextv2" if isinstance(backbone, ConvNeXtV2) else "convnext"
    for arch, (depths, dims) in type(backbone).arch_zoo.items():
        if list(depths) == backbone.depths and list(dims) == backbone.dims:
            return f"{prefix}_{arch}"
    return f"{type(backbone).__name__}(depths={backbone.depths}, dims={backbone.dims})"


def preset_names() -> list[str]:
    """Every preset name ``FeatureExtractor`` and ``cvx2 info`` accept, V2 first."""
    return [f"convnextv2_{a}" for a in ConvNeXtV2.arch_zoo] + [f"convnext_{a}" for a in ConvNeXt.arch_zoo]


# --- preprocessing ---------------------------------------------------------------------------

class ImageReadError(ValueError):
    """An image file that does not exist or cannot be decoded."""


def read_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB, honouring its EXIF orientation (as ``transformers.image_utils.load_image``);
    16-bit and float pictures are scaled to 8 bits (:func:`to_rgb8`)."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            return to_rgb8(ImageOps.exif_transpose(image))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from err


# Pillow's modes with more than 8 bits per sample, and their full-scale value: ``convert("RGB")`` clips them at 255.
_HIGH_BIT_DEPTH = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def to_rgb8(image: Image.Image) -> Image.Image:
    """An RGB 8-bit copy of ``image``: 16-bit samples (modes ``I;16*``, and ``I`` holding 0..65535) are scaled by
    255 / 65535, float samples (``F``) in [0, 1] by 255, like an 8-bit export of the same picture; other values
    are an error rather than a clipped picture."""
    full_scale = _HIGH_BIT_DEPTH.get(image.mode)
    if full_scale is None:
        return image.convert("RGB")
    values = np.asarray(image, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0 or high > full_scale:
        raise ValueError(f"{image.mode} samples span {low:g}..{high:g}, outside 0..{full_scale:g}; save the picture "
                         "with 8 or 16 bits per sample (or as floats in [0, 1])")
    return Image.fromarray(np.rint(values * (255 / full_scale)).astype(np.uint8)).convert("RGB")


def _array_to_tensor(array: np.ndarray) -> Tensor:
    """HWC (or HW) uint8 RGB -> CHW float in [0, 1]."""
    if array.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8 HWC RGB, got dtype {array.dtype}; convert with "
                        "(a * 255).round().astype(np.uint8), or pass a float torch tensor CHW in [0, 1]")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        hint = " (it looks like CHW: transpose it to HWC)" if array.ndim == 3 and array.shape[0] in (1, 3) else ""
        raise ValueError(f"image arrays must be HWC with 1 or 3 channels (RGB), got shape {array.shape}{hint}")
    tensor = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1)  # copy: PIL arrays are read-only
    return tensor.expand(3, -1, -1).float() / 255


def _tensor_to_tensor(tensor: Tensor) -> Tensor:
    """CHW uint8 (0..255) or float in [0, 1] -> CHW float32 in [0, 1] on the CPU."""
    if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"image tensors must be CHW (or NCHW for a batch) with 1 or 3 channels, got shape "
                         f"{tuple(tensor.shape)}")
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255
    elif tensor.is_floating_point():
        low, high = float(tensor.min()), float(tensor.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise ValueError(f"float image tensors must hold RGB values in [0, 1], got range [{low:.3g}, {high:.3g}]; "
                             "pass raw pixels (uint8 or /255), or call forward_features() with already "
                             "normalised pixel values")
        tensor = tensor.float().clamp(0, 1)
    else:
        raise TypeError(f"image tensors must be uint8 or floating point, got {tensor.dtype}")
    return tensor.expand(3, -1, -1)


def to_rgb_tensor(image: ImageLike) -> Tensor:
    """One image of any accepted kind -> CHW float32 RGB in [0, 1]."""
    if isinstance(image, (str, Path)):
        image = read_image(image)
    if isinstance(image, Image.Image):
        return _array_to_tensor(np.asarray(to_rgb8(image)))
    if isinstance(image, np.ndarray):
        return _array_to_tensor(image)
    if isinstance(image, Tensor):
        return _tensor_to_tensor(image)
    raise TypeError(f"unsupported image type {type(image).__name__}; pass a file path, a PIL image, a uint8 HWC "
                    "numpy array or a CHW tensor (or a list of them, or a 4-D batch)")


def split_batch(images: Images) -> list[ImageLike]:
    """A single image, a list of images or a 4-D array/tensor batch -> list of single images."""
    if isinstance(images, (np.ndarray, Tensor)) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("got an empty list of images")
        return list(images)
    return [images]


def shortest_edge_size(height: int, width: int, shortest_edge: int | None) -> tuple[int, int]:
    """Output (h, w) of the resize: the short side becomes ``shortest_edge``, the aspect ratio is kept
    (the long side rounds down, as Hugging Face's ``get_resize_output_image_size``); None keeps the size."""
    if shortest_edge is None:
        return height, width
    if height <= width:
        return shortest_edge, int(shortest_edge * width / height)
    return int(shortest_edge * height / width), shortest_edge


@dataclass
class ImageBatch:
    """Network input for a batch and what is needed to map features back to each image.

    ``pixel_values`` is (N, 3, H, W), normalised, zero-padded at the bottom and right;
    ``image_sizes`` holds each image's (h, w) after resizing and before padding,
    ``original_sizes`` its (h, w) as given.
    """

    pixel_values: Tensor
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.image_sizes)


def valid_size(image_size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Rows and columns of a stride-``stride`` feature map that see the image rather than padding only."""
    return math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride)


# --- the FPN neck ----------------------------------------------------------------------------

class FPN(nn.Module):
    """Feature pyramid over the backbone outputs (torchvision's FPN, so no mmdet import).

    It computes what mmdet's ``FPN`` does with ``add_extra_convs=False`` (1x1 laterals, nearest
    top-down, 3x3 outputs, stride-2 subsampling for extra levels), so the neck of an mmdet
    detector checkpoint (``neck.lateral_convs``/``neck.fpn_convs``) loads into it unchanged in meaning.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, extra_levels: int = 1) -> None:
        super().__init__()
        if extra_levels not in (0, 1):
            raise ValueError(f"fpn extra_levels must be 0 or 1 (a stride-2 subsample of the top level), "
                             f"got {extra_levels}")
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels,
                                         extra_blocks=LastLevelMaxPool() if extra_levels else None)
        self.num_outs = len(in_channels) + extra_levels

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        named = OrderedDict((str(i), f) for i, f in enumerate(features))
        return list(self.fpn(named).values())

    @staticmethod
    def mmdet_keys_to_torchvision(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Rename mmdet ``FPN`` keys (no ``neck.`` prefix) to this module's names."""
        renamed = {}
        for key, value in state_dict.items():
            match = re.match(r"^(lateral_convs|fpn_convs)\.(\d+)\.conv\.(weight|bias)$", key)
            if match:
                block = "inner_blocks" if match.group(1) == "lateral_convs" else "layer_blocks"
                renamed[f"fpn.{block}.{match.group(2)}.0.{match.group(3)}"] = value
        return renamed


def _fpn_config(fpn: bool | int | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if fpn is None or fpn is False:
        return None
    if fpn is True:
        return {}
    if isinstance(fpn, int):
        if fpn < 1:
            raise ValueError(f"fpn channels must be positive, got {fpn}; pass fpn=False for no FPN")
        return {"out_channels": fpn}
    if isinstance(fpn, Mapping):
        unknown = set(fpn) - {"out_channels", "extra_levels"}
        if unknown:
            raise ValueError(f"unknown fpn option(s) {sorted(unknown)}; use dict(out_channels=256, extra_levels=1)")
        return dict(fpn)
    raise TypeError(f"fpn must be False, True, an int (out channels) or dict(out_channels=..., extra_levels=...), "
                    f"got {fpn!r}")


# --- the extractor ---------------------------------------------------------------------------

class FeatureExtractor(nn.Module):
    """A ConvNeXt backbone (+ optional FPN) that takes images and returns ``{name: feature map}``.

    Args:
        model: a preset name (``'convnextv2_atto'``, ``'convnext_tiny'``, see :func:`preset_names`),
            an already built ``ConvNeXt``/``ConvNeXtV2``, or None to infer the architecture from ``weights``.
        weights: any source ``cvx2_backbone.weights.load_pretrained`` accepts (file, folder, URL,
            ``hf://repo``, ``timm/model.tag``); a detector checkpoint with an mmdet FPN also fills the neck.
        out_features / out_indices: which backbone outputs to return (``stem``, ``stage1``..``stage4``).
        fpn: False, True (256 channels, one extra level), an int (channels) or
            ``dict(out_channels=..., extra_levels=0|1)``. Outputs are then named ``p2``..``p6`` (p<log2 stride>).
        shortest_edge: resize every image (bicubic, antialiased) so its short side has this many
            pixels, keeping the aspect ratio; None feeds images at their own size.
        size_divisor: pad images to a multiple of this (default: the largest output stride).
        allow_partial: accept weights with missing or unexpected backbone tensors (listed in the
            load report); without it they are an error.
        runtime: the engine of inference calls (``extract_each``, ``infer``, ``forward`` without autograd):
            ``'torch'``, ``'onnxruntime'``, ``'openvino'`` (the project's own ONNX export) or ``'auto'`` (the fastest
            of them whose outputs match PyTorch's, measured once per machine, model, precision and shape bucket and
            cached; see :mod:`cvx2_backbone.engines`). Default: ``$CVX2_RUNTIME``, else ``'auto'`` where the
            deploy extra is installed, else ``'torch'``.
        precision: ``'fp32'`` or ``'bf16'`` (the network's compute precision; features are returned in fp32).
        threads: CPU threads of every engine (torch: sets torch.set_num_threads when it runs; default: torch's count).

    GRN pools over the whole (padded) canvas, so an image's features depend a little on how much
    padding it gets: images of one size batch exactly; in a mixed-size batch the smaller ones differ
    slightly from running them alone (``cvx2 extract`` therefore batches same-size images only).
    """

    def __init__(
        self,
        model: str | ConvNeXt | None = "convnextv2_atto",
        weights: str | Path | None = None,
        *,
        out_features: Sequence[str] | str | None = None,
        out_indices: Sequence[int] | int | None = None,
        fpn: bool | int | Mapping[str, Any] | None = False,
        shortest_edge: int | None = None,
        size_divisor: int | None = None,
        allow_partial: bool = False,
        runtime: str | None = None,
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        super().__init__()
        from .engines import check_runtime

        self.runtime, self.precision, self.threads = check_runtime(runtime, precision), precision, threads
        self._engines = None
        checkpoint = None
        if weights is not None:
            from .weights import read_checkpoint
            checkpoint = read_checkpoint(weights)
        self.backbone = self._build_backbone(model, checkpoint, out_features, out_indices, weights, allow_partial)
        self.name = model_name(self.backbone)
        fpn_cfg = _fpn_config(fpn)
        if fpn_cfg is not None and "stem" in self.backbone.out_features:
            raise ValueError("the FPN is built over stages; drop 'stem' from out_features when fpn is on")
        if fpn_cfg is not None and checkpoint is not None:
            trained = _fpn_width(checkpoint.neck)
            asked = fpn_cfg.setdefault("out_channels", trained or 256)
            if trained and asked != trained:
                raise ValueError(f"the FPN in {weights} has {trained} channels but {asked} were asked for "
                                 f"(fpn={fpn!r}); ask for {trained} (--fpn {trained}, or fpn=True) to use the trained "
                                 "FPN, or use weights without a neck for a new one")
        self.neck = FPN(self.backbone.out_channels, **fpn_cfg) if fpn_cfg is not None else None
        if self.neck is not None:
            self._load_neck(checkpoint.neck if checkpoint is not None else None, weights)
            strides = [self.backbone.out_strides[0] * 2 ** i for i in range(self.neck.num_outs)]
            strides[:len(self.backbone.out_strides)] = self.backbone.out_strides
            self.out_strides = strides
            self.out_features = [f"p{int(math.log2(s))}" for s in strides]
            self.out_channels = [self.neck.fpn.layer_blocks[0][0].out_channels] * len(strides)
        else:
            self.out_features = list(self.backbone.out_features)
            self.out_strides = list(self.backbone.out_strides)
            self.out_channels = list(self.backbone.out_channels)
        if shortest_edge is not None and (not isinstance(shortest_edge, int) or shortest_edge < 1):
            raise ValueError(f"shortest_edge must be a positive int or None, got {shortest_edge!r}")
        self.shortest_edge = shortest_edge
        self.size_divisor = size_divisor or max(self.out_strides)
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @staticmethod
    def _build_backbone(model, checkpoint, out_features, out_indices, weights, allow_partial) -> ConvNeXt:
        if isinstance(model, ConvNeXt):
            if out_features is not None or out_indices is not None:
                raise ValueError("choose outputs when building the backbone, not with a ready-made model")
            backbone = model
        else:
            if model is None:
                if checkpoint is None:
                    raise ValueError("give a model preset name (e.g. 'convnextv2_atto') or weights to infer it from")
                cls, kwargs = checkpoint.backbone_class, dict(checkpoint.arch_kwargs)
                if out_features is None and out_indices is None:  # a Hugging Face backbone's own outputs
                    out_features = checkpoint.arch.out_features
            else:
                cls, arch = parse_preset(model)
                kwargs = {"arch": arch}
            if checkpoint is not None and checkpoint.family == "dinov3":
                kwargs["out_norm"] = ["stage4"]  # DINOv3's own dense features: its final norm on stage4 only
            backbone = cls(out_features=out_features, out_indices=out_indices, **kwargs)
        if checkpoint is not None:
            checkpoint.load_into(backbone, source=weights, allow_partial=allow_partial)
        return backbone

    def _load_neck(self, neck_state: Mapping[str, Tensor] | None, weights) -> None:
        if not neck_state:
            if weights is not None:
                warnings.warn(f"{weights} holds no FPN weights: the FPN neck is randomly initialised", stacklevel=3)
            return
        renamed = FPN.mmdet_keys_to_torchvision(neck_state)
        missing, unexpected = self.neck.load_state_dict(renamed, strict=False)
        if missing or unexpected:
            raise ValueError(f"the FPN weights in {weights} do not match an FPN over outputs "
                             f"{self.backbone.out_features}: missing {missing}, unexpected {unexpected}; select the "
                             "outputs the detector was trained with (usually all four stages)")

    # --- preprocessing ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.mean.device

    def preprocess(self, images: Images) -> ImageBatch:
        """Images of any kind -> one normalised, padded batch (see the class docstring for the policy)."""
        tensors = [to_rgb_tensor(image) for image in split_batch(images)]
        original = [tuple(t.shape[-2:]) for t in tensors]
        resized = []
        for tensor, (h, w) in zip(tensors, original):
            size = shortest_edge_size(h, w, self.shortest_edge)
            if size != (h, w):
                tensor = F.interpolate(tensor[None], size=size, mode="bicubic", align_corners=False,
                                       antialias=True)[0].clamp_(0, 1)
            resized.append(tensor)
        sizes = [tuple(t.shape[-2:]) for t in resized]
        pad_h = math.ceil(max(h for h, _ in sizes) / self.size_divisor) * self.size_divisor
        pad_w = math.ceil(max(w for _, w in sizes) / self.size_divisor) * self.size_divisor
        pixels = torch.zeros(len(resized), 3, pad_h, pad_w, device=self.device)
        for i, tensor in enumerate(resized):
            h, w = sizes[i]
            pixels[i, :, :h, :w] = (tensor.to(self.device) - self.mean[0]) / self.std[0]
        return ImageBatch(pixels, sizes, original)

    # --- forward ---------------------------------------------------------------------------
    def forward_features(self, pixel_values: Tensor) -> dict[str, Tensor]:
        """Backbone (+ neck) on normalised pixels (N, 3, H, W) -> ``{name: (N, C, H/s, W/s)}``, in PyTorch."""
        features = list(self.backbone(pixel_values))
        if self.neck is not None:
            features = self.neck(features)
        return dict(zip(self.out_features, features))

    def infer(self, pixel_values: Tensor) -> tuple[dict[str, Tensor], Any]:
        """:meth:`forward_features` without autograd on the ``runtime``'s engine; also returns the engine that ran
        (its ``name``, ``label`` with the version, and ``precision_used``)."""
        outputs, engine = self.engines.run(pixel_values)
        return dict(zip(self.out_features, outputs)), engine

    @property
    def engines(self):
        """The :class:`cvx2_backbone.engines.EngineSet` behind :meth:`infer` (its ``choices`` per shape bucket)."""
        if self._engines is None:
            from .engines import EngineSet
            self._engines = EngineSet(self, self.runtime, self.precision, self.threads)
        return self._engines

    def reset_engines(self) -> None:
        """Forget the engines and choices (call after changing the weights; the next inference rebuilds them)."""
        self._engines = None

    def forward(self, images: Images | ImageBatch) -> dict[str, Tensor]:
        """Feature maps ``{name: (N, C, h, w)}`` for a batch, cropped to the largest image.

        Images of one size come back exactly cropped; smaller images in a mixed batch keep padding
        at the bottom/right: use :meth:`extract_each` to get each image's maps on their own.
        With autograd on it runs PyTorch; without (``torch.no_grad``, ``inference_mode``), the ``runtime``'s engine.
        """
        batch = images if isinstance(images, ImageBatch) else self.preprocess(images)
        largest = (max(h for h, _ in batch.image_sizes), max(w for _, w in batch.image_sizes))
        if torch.is_grad_enabled():
            features = self.forward_features(batch.pixel_values)
        else:
            features = self.infer(batch.pixel_values)[0]
        return {name: _crop(fmap, valid_size(largest, stride))
                for (name, fmap), stride in zip(features.items(), self.out_strides)}

    @torch.inference_mode()
    def extract_each(self, images: Images | ImageBatch) -> list[dict[str, Tensor]]:
        """Per-image feature maps ``{name: (C, h, w)}``, each cropped to its own image, without autograd."""
        batch = images if isinstance(images, ImageBatch) else self.preprocess(images)
        return self.crop_each(self.infer(batch.pixel_values)[0], batch)

    def crop_each(self, features: Mapping[str, Tensor], batch: ImageBatch) -> list[dict[str, Tensor]]:
        """Batch maps ``{name: (N, C, H/s, W/s)}`` -> one ``{name: (C, h, w)}`` per image, cropped to it."""
        return [{name: _crop(fmap[i], valid_size(size, stride))
                 for (name, fmap), stride in zip(features.items(), self.out_strides)}
                for i, size in enumerate(batch.image_sizes)]


def _crop(fmap: Tensor, size: tuple[int, int]) -> Tensor:
    return fmap[..., :size[0], :size[1]]


def _fpn_width(neck_state: Mapping[str, Tensor] | None) -> int | None:
    """Output channels of an mmdet FPN state dict, if any."""
    for key, value in (neck_state or {}).items():
        if key.startswith("fpn_convs.0.conv.weight"):
            return int(value.shape[0])
    return None
