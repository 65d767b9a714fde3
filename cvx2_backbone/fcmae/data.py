"""Unlabeled images from a folder, for FCMAE pre-training with mmengine's Runner.

``ImageFolder`` finds every image under ``data_root`` (nested folders, jpg/png/bmp/tiff/webp),
reads each header once, and skips, with a logged list, files that are not readable images or are
smaller than ``min_size``. The transforms are registered thin wrappers: PIL loading, any
torchvision v2 transform (the official recipe: ``RandomResizedCrop(224, scale=(0.2, 1.0),
bicubic)`` and ``RandomHorizontalFlip``), and packing into the uint8 CHW tensor that mmengine's
``ImgDataPreprocessor`` normalises.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from cvx2_backbone.registry import DATASETS, TRANSFORMS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_LISTED = 100  # skipped files named one per line in the log; the rest are counted


def _open_rgb(path: str):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def scan_images(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                min_size: int = 1) -> tuple[list[tuple[str, int, int]], list[tuple[str, str]]]:
    """(usable images as (path, width, height), skipped files as (path, reason)) under ``root``, sorted.

    Raises ValueError when the folder is missing or holds no usable image, naming what it found.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder {str(root)!r} does not exist or is not a folder; point data_root at a "
                         "folder of .jpg/.png images (sub-folders are searched too)")
    suffixes = tuple(e.lower() for e in extensions)
    files, others, seen = [], [], set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a linked folder met twice (or a link cycle): read it once
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(names):
            (files if name.lower().endswith(suffixes) else others).append(os.path.join(folder, name))
    if not files:
        found = f"{len(others)} other files (e.g. {', '.join(os.path.relpath(p, root) for p in others[:3])})" \
            if others else "nothing"
        raise ValueError(f"no images under {str(root)!r}: found {found}; FCMAE reads {', '.join(suffixes)} files")
    images, skipped = [], []
    for path in files:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, UnidentifiedImageError, ValueError) as err:
            skipped.append((path, f"not a readable image ({type(err).__name__}: {err})"))
            continue
        if min(width, height) < min_size:
            skipped.append((path, f"{width}x{height} is smaller than one {min_size}x{min_size} patch"))
            continue
        images.append((path, width, height))
    if not images:
        reasons = "; ".join(f"{os.path.relpath(p, root)}: {r}" for p, r in skipped[:3])
        raise ValueError(f"none of the {len(files)} image files under {str(root)!r} can be used ({reasons}"
                         f"{'; ...' if len(skipped) > 3 else ''})")
    return images, skipped


@DATASETS.register_module()
class ImageFolder(BaseDataset):
    """Every image under ``data_root`` (recursively), without labels (``type='cvx2_backbone.ImageFolder'``).

    Args:
        data_root: the folder.
        extensions: file name endings that count as images (case-insensitive).
        min_size: smallest usable side in pixels (default: one 32-pixel FCMAE patch); smaller images are
            skipped and listed, like unreadable files.
        pipeline: transforms, e.g. ``[dict(type='cvx2_backbone.LoadImage'), ...]``.
    """

    def __init__(self, data_root: str, extensions: Sequence[str] = IMAGE_EXTENSIONS, min_size: int = 32,
                 pipeline: Sequence[dict] = (), **kwargs: Any) -> None:
        self.extensions = tuple(extensions)
        self.min_size = int(min_size)
        self.skipped: list[tuple[str, str]] = []
        super().__init__(data_root=data_root, pipeline=list(pipeline), **kwargs)

    def load_data_list(self) -> list[dict]:
        images, self.skipped = scan_images(self.data_root, self.extensions, self.min_size)
        if self.skipped:
            lines = [f"  {path}: {reason}" for path, reason in self.skipped[:_LISTED]]
            more = len(self.skipped) - _LISTED
            print_log(f"ImageFolder {self.data_root}: skipped {len(self.skipped)} of "
                      f"{len(images) + len(self.skipped)} files:\n" + "\n".join(lines)
                      + (f"\n  ... and {more} more" if more > 0 else ""), logger="current", level=logging.WARNING)
        print_log(f"ImageFolder {self.data_root}: {len(images)} images", logger="current")
        return [{"img_path": path, "ori_shape": (height, width)} for path, width, height in images]


@TRANSFORMS.register_module()
class LoadImage:
    """Read ``results['img_path']`` as RGB (PIL) into ``results['img']``; None (another image is drawn) on failure."""

    def __call__(self, results: dict) -> dict | None:
        try:
            results["img"] = _open_rgb(results["img_path"])
        except OSError as err:  # decoding can fail past the header that the scan read
            print_log(f"skipping unreadable image {results['img_path']}: {err}", logger="current",
                      level=logging.WARNING)
            return None
        return results

    def __repr__(self) -> str:
        return "LoadImage()"


@TRANSFORMS.register_module()
class Torchvision:
    """A ``torchvision.transforms.v2`` transform applied to ``results['img']``.

    ``dict(type='cvx2_backbone.Torchvision', transform='RandomResizedCrop', size=224, scale=(0.2, 1.0),
    interpolation='bicubic')``; ``interpolation`` takes the names of ``InterpolationMode``.
    """

    def __init__(self, transform: str, **kwargs: Any) -> None:
        from torchvision.transforms import InterpolationMode, v2

        if not hasattr(v2, transform):
            raise ValueError(f"torchvision.transforms.v2 has no transform {transform!r}")
        if isinstance(kwargs.get("interpolation"), str):
            kwargs["interpolation"] = InterpolationMode(kwargs["interpolation"].lower())
        self.name, self.kwargs = transform, kwargs
        self.transform = getattr(v2, transform)(**kwargs)

    def __call__(self, results: dict) -> dict:
        results["img"] = self.transform(results["img"])
        return results

    def __repr__(self) -> str:
        return f"Torchvision({self.transform!r})"


@TRANSFORMS.register_module()
class PackImage:
    """``results['img']`` (PIL image or HWC array) as ``inputs``: a uint8 (C, H, W) tensor, with its path."""

    def __call__(self, results: dict) -> dict:
        array = np.asarray(results["img"], dtype=np.uint8)
        array = array[:, :, None] if array.ndim == 2 else array
        return {"inputs": torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))),
                "data_samples": {"img_path": results["img_path"]}}

    def __repr__(self) -> str:
        return "PackImage()"
