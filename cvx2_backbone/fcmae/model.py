"""FCMAE: the fully convolutional masked autoencoder of ConvNeXt V2, as an mmengine model.

Encoder: this package's ``ConvNeXtV2`` run on a random patch mask (:mod:`.encoder`). Decoder, as
in the official code: a 1x1 conv to ``decoder_dim`` channels, a learned mask token on hidden
patches, ``decoder_depth`` ConvNeXt V2 blocks and a 1x1 conv to one patch of pixels per cell.
Loss: mean squared error on hidden patches only, against per-patch normalised pixels when
``norm_pix_loss`` (the official default). ``model.state_dict()`` keeps the official layout
(``encoder.downsample_layers.*``, ``encoder.stages.*``, ``proj``, ``mask_token``, ``decoder``,
``pred``), so ``init_cfg=dict(type='Pretrained', checkpoint=...)`` loads its encoder into a
``ConvNeXtV2`` detector or segmentor backbone.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from mmengine.model import BaseModel
from timm.layers import trunc_normal_
from torch import Tensor, nn

from cvx2_backbone.models.convnext import Block, ConvNeXtV2
from cvx2_backbone.registry import MODELS
from cvx2_backbone.fcmae.encoder import check_options, masked_forward
from cvx2_backbone.fcmae.masking import check_mask_ratio, patchify, random_patch_mask, unpatchify

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
INITS = ("official", "convnext")


def _patch_stats(patches: Tensor) -> tuple[Tensor, Tensor]:
    """Per-patch mean and std of the official ``norm_pix_loss``: (var + 1e-6) ** 0.5, var unbiased."""
    return patches.mean(dim=-1, keepdim=True), (patches.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5


@MODELS.register_module()
class FCMAE(BaseModel):
    """ConvNeXt V2 masked-autoencoder pre-training (``type='cvx2_backbone.FCMAE'``).

    Args:
        arch: encoder size, a ``ConvNeXtV2`` preset (atto..huge) or ``dict(depths=[...], dims=[...])``.
        in_channels: image channels.
        mask_ratio: share of hidden patches per image (0.6 in the paper).
        decoder_dim, decoder_depth: width and number of blocks of the decoder (512, 1 officially).
        norm_pix_loss: regress per-patch normalised pixels (the official training default).
        grn_stats: ``'image'`` (GRN statistics per image, as the dense model) or ``'batch'`` (the official
            ``MinkowskiGRN``: over all visible sites of the batch).
        masked_impl: ``'gather'`` (per-site layers on visible sites only) or ``'dense'``; same values.
        drop_path_rate: stochastic depth of the encoder (0 in the official pre-training).
        init: ``'official'`` reproduces the official FCMAE initialisation (see docs/fcmae.md: its
            ``_init_weights`` re-draws the stem, depthwise and pointwise weights and the decoder's
            convs with timm's default std 1.0); ``'convnext'`` keeps the backbone's std 0.02 everywhere.
        data_preprocessor: mmengine data preprocessor; default: ImageNet mean/std on RGB 0..255 input.
    """

    def __init__(
        self,
        arch: str | Mapping[str, Any] = "atto",
        in_channels: int = 3,
        mask_ratio: float = 0.6,
        decoder_dim: int = 512,
        decoder_depth: int = 1,
        norm_pix_loss: bool = True,
        grn_stats: str = "image",
        masked_impl: str = "gather",
        drop_path_rate: float = 0.0,
        init: str = "official",
        data_preprocessor: dict | nn.Module | None = None,
        init_cfg: dict | list | None = None,
    ) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type="ImgDataPreprocessor", mean=IMAGENET_MEAN, std=IMAGENET_STD)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.mask_ratio = check_mask_ratio(mask_ratio)
        check_options(grn_stats, masked_impl)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if decoder_depth < 1 or decoder_dim < 1:
            raise ValueError(f"decoder_depth and decoder_dim must be >= 1, got {decoder_depth} and {decoder_dim}")
        self.grn_stats, self.masked_impl, self.norm_pix_loss = grn_stats, masked_impl, bool(norm_pix_loss)
        self.in_channels = in_channels
        self.encoder = ConvNeXtV2(arch=arch, in_channels=in_channels, out_norm=False, drop_path_rate=drop_path_rate)
        self.patch_size = self.encoder.min_input_size  # one mask cell per total-stride patch (32 px for 4 stages)
        self.proj = nn.Conv2d(self.encoder.dims[-1], decoder_dim, kernel_size=1)
        self.mask_token = nn.Parameter(torch.zeros(1, decoder_dim, 1, 1))
        self.decoder = nn.Sequential(*[Block(decoder_dim, layer_scale_init_value=0.0, use_grn=True)
                                       for _ in range(decoder_depth)])
        self.pred = nn.Conv2d(decoder_dim, self.patch_size ** 2 * in_channels, kernel_size=1)
        self._initialise(init)

    def _initialise(self, init: str) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        if init == "convnext":
            for module in (self.proj, self.pred, *self.decoder.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    trunc_normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)
            return
        # Official: std 0.02 for the sparse 2x2 downsampling convs only; timm's default trunc_normal_
        # (std 1, cut at +-2) for the dense stem, the sparse depthwise and pointwise layers of the
        # encoder and every Conv2d of the decoder; the decoder's Linears keep torch's default init.
        encoder = self.encoder
        official_std1 = [encoder.downsample_layers[0][0], self.proj, self.pred]
        for stage in encoder.stages:
            for block in stage:
                official_std1 += [block.dwconv, block.pwconv1, block.pwconv2]
        official_std1 += [block.dwconv for block in self.decoder]
        for module in official_std1:
            trunc_normal_(module.weight, std=1.0, a=-2.0, b=2.0)
            nn.init.zeros_(module.bias)
        for block in self.decoder:
            for linear in (block.pwconv1, block.pwconv2):
                linear.reset_parameters()

    # --- the pieces ------------------------------------------------------------------------------
    def grid(self, images: Tensor) -> tuple[int, int]:
        """The patch grid of a batch; errors name the fix for images that do not fit it."""
        height, width = images.shape[-2:]
        p = self.patch_size
        if min(height, width) < p:
            raise ValueError(f"images of {height}x{width} pixels are smaller than one {p}x{p} FCMAE patch; "
                             f"resize or crop them to at least {p}x{p} (the recipes use 224x224)")
        if height % p or width % p:
            raise ValueError(f"FCMAE hides whole {p}x{p} patches: image sides must be multiples of {p}, got "
                             f"{height}x{width}; crop to {height // p * p}x{width // p * p} or resize")
        return height // p, width // p

    def random_mask(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A fresh random mask per image, (N, h, w) bool, True = hidden."""
        return random_patch_mask(images.shape[0], self.grid(images), self.mask_ratio, device=images.device,
                                 generator=generator)

    def encode(self, images: Tensor, mask: Tensor) -> Tensor:
        """The encoder's last stage on the visible patches, zero on hidden ones."""
        return masked_forward(self.encoder, images, mask, self.grn_stats, self.masked_impl)[-1]

    def decode(self, features: Tensor, mask: Tensor) -> Tensor:
        """Predicted pixels per patch, (N, patch*patch*C, h, w)."""
        x = self.proj(features)
        hidden = mask[:, None].to(x.dtype)
        x = x * (1.0 - hidden) + self.mask_token.to(x.dtype) * hidden
        return self.pred(self.decoder(x))

    def targets(self, images: Tensor) -> Tensor:
        """(N, L, patch*patch*C) pixels per patch, normalised per patch when ``norm_pix_loss``."""
        target = patchify(images, self.patch_size)
        if self.norm_pix_loss:
            mean, std = _patch_stats(target)
            target = (target - mean) / std
        return target

    @staticmethod
    def as_patches(prediction: Tensor) -> Tensor:
        """(N, P, h, w) decoder output -> (N, h*w, P), the layout of :meth:`targets`."""
        return prediction.flatten(2).transpose(1, 2)

    def loss_of(self, images: Tensor, prediction: Tensor, mask: Tensor) -> Tensor:
        """Mean squared error over the hidden patches."""
        per_patch = (self.as_patches(prediction).float() - self.targets(images).float()).square().mean(dim=-1)
        hidden = mask.reshape(mask.shape[0], -1).to(per_patch.dtype)
        return (per_patch * hidden).sum() / hidden.sum()

    def reconstruct(self, images: Tensor, mask: Tensor) -> Tensor:
        """Images with hidden patches replaced by the prediction, in the input's (normalised) space.

        With ``norm_pix_loss`` the model predicts normalised pixels; they are shown with each true
        patch's mean and variance, as the MAE demo does.
        """
        prediction = self.as_patches(self.decode(self.encode(images, mask), mask)).to(images.dtype)
        target = patchify(images, self.patch_size)
        if self.norm_pix_loss:
            mean, std = _patch_stats(target)
            prediction = prediction * std + mean
        hidden = mask.reshape(mask.shape[0], -1, 1).to(images.dtype)
        patches = target * (1 - hidden) + prediction * hidden
        return unpatchify(patches, self.patch_size, tuple(mask.shape[1:]), images.shape[1])

    # --- mmengine ----------------------------------------------------------------------------------
    def forward(self, inputs: Tensor, data_samples: Sequence | None = None, mode: str = "tensor",
                mask: Tensor | None = None) -> dict[str, Tensor] | tuple[Tensor, Tensor] | list[dict[str, Tensor]]:
        """``mode='loss'``: ``{'loss': ...}``; ``'tensor'``: (prediction, mask); ``'predict'``: reconstructions.

        ``inputs`` is a normalised (N, C, H, W) batch; ``mask`` (N, H/32, W/32, True = hidden) fixes the
        masks, otherwise each image gets a fresh random one.
        """
        if mode not in ("loss", "tensor", "predict"):
            raise ValueError(f"mode must be 'loss', 'tensor' or 'predict', got {mode!r}")
        self.grid(inputs)
        mask = self.random_mask(inputs) if mask is None else mask.to(inputs.device, torch.bool)
        if mode == "predict":
            return [{"reconstruction": image, "mask": m} for image, m in zip(self.reconstruct(inputs, mask), mask)]
        prediction = self.decode(self.encode(inputs, mask), mask)
        if mode == "tensor":
            return prediction, mask
        return {"loss": self.loss_of(inputs, prediction, mask)}
