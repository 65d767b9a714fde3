"""FCMAE pre-training of ConvNeXt V2 without MinkowskiEngine (see docs/fcmae.md).

Importing it registers ``cvx2_backbone.FCMAE`` (model), ``cvx2_backbone.ImageFolder`` (dataset)
and the transforms ``cvx2_backbone.LoadImage``, ``cvx2_backbone.Torchvision``,
``cvx2_backbone.PackImage``.
"""
from cvx2_backbone.fcmae.data import IMAGE_EXTENSIONS, ImageFolder, LoadImage, PackImage, Torchvision, scan_images
from cvx2_backbone.fcmae.encoder import GRN_STATS, MASKED_IMPLS, masked_forward
from cvx2_backbone.fcmae.masking import check_mask_ratio, patchify, random_patch_mask, unpatchify, upsample_mask
from cvx2_backbone.fcmae.model import FCMAE

__all__ = ["FCMAE", "GRN_STATS", "IMAGE_EXTENSIONS", "ImageFolder", "LoadImage", "MASKED_IMPLS", "PackImage",
           "Torchvision", "check_mask_ratio", "masked_forward", "patchify", "random_patch_mask", "scan_images",
           "unpatchify", "upsample_mask"]
