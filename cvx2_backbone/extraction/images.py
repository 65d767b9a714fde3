"""Images of any kind (paths, PIL images, arrays, tensors) to RGB tensors, and the batch the network sees.

EXIF orientation is honoured, 16-bit and float pictures are scaled to 8 bits, and the resize and padding policy of
:class:`~cvx2_backbone.extraction.extractor.FeatureExtractor` is defined here (short side resize, bottom/right zero
padding), together with how a feature map is cropped back to its image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

ImageLike = Union[str, Path, Image.Image, np.ndarray, Tensor]
Images = Union[ImageLike, Sequence[ImageLike]]


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
