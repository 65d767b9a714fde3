"""Multi-scale feature extraction: images in, a dict of named feature maps out.

``FeatureExtractor`` bundles a ConvNeXt V2/V1 backbone, an optional FPN neck and the
preprocessing that feeds them (RGB in [0, 1], optional shortest-edge resize, ImageNet mean/std,
zero padding to the stride), so paths, PIL images, arrays and tensors all give the same features.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from cvx2_backbone.extraction.engine_choice import EngineSet, check_runtime
from cvx2_backbone.extraction.images import (ImageBatch, Images, shortest_edge_size, split_batch, to_rgb_tensor,
                                             valid_size)
from cvx2_backbone.models.convnext import ConvNeXt
from cvx2_backbone.models.factory import model_name, parse_preset
from cvx2_backbone.models.fpn import FPN
from cvx2_backbone.weights import read_checkpoint


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
        model: a preset name (``'convnextv2_atto'``, ``'convnext_tiny'``, see
        :func:`cvx2_backbone.models.factory.preset_names`),
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
            cached; see :mod:`cvx2_backbone.extraction.engine_choice`). Default: ``$CVX2_RUNTIME``, else ``'auto'``
            where the
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
        self.runtime, self.precision, self.threads = check_runtime(runtime, precision), precision, threads
        self._engines = None
        checkpoint = None
        if weights is not None:
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
    def engines(self) -> EngineSet:
        """The :class:`~cvx2_backbone.extraction.engine_choice.EngineSet` behind :meth:`infer` (its ``choices`` per
        shape bucket)."""
        if self._engines is None:
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
