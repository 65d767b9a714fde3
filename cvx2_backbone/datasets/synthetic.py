"""Tiny synthetic datasets in the COCO (instance and panoptic) and ADE20K layouts, for tests, demos and smoke runs.

Every image holds a few filled shapes (circle, rectangle, triangle) on a noisy background. Each
class keeps its own hue (with jitter), so a small model learns the task in minutes. The files
follow the layouts mmdet's ``CocoDataset`` / ``CocoPanopticDataset`` and mmseg's ``ADE20KDataset``
configs expect, so a config only needs ``data_root`` and the class names changed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES: tuple[str, ...] = ("circle", "rectangle", "triangle")
# ADE20K keeps 0 for "unlabelled" (dropped by reduce_zero_label); class k is stored as k + 1.
ADE_CLASSES: tuple[str, ...] = ("ground",) + SHAPE_CLASSES
_CLASS_RGB = {"circle": (220, 60, 50), "rectangle": (60, 190, 70), "triangle": (50, 90, 220)}
# COCO panoptic: the shapes are "things" (instances); sky above a random horizon and ground below are "stuff".
STUFF_CLASSES: tuple[str, ...] = ("sky", "ground")
_STUFF_RGB = {"sky": (165, 200, 230), "ground": (125, 100, 70)}
_CIRCLE_VERTICES = 24

ImageSize = Union[int, tuple[int, int]]


@dataclass(frozen=True)
class Shape:
    """One drawn object: its class name, outline (N x 2 float array of x, y) and RGB colour."""

    name: str
    polygon: np.ndarray
    color: tuple[int, int, int]

    @property
    def bbox(self) -> list[float]:
        """COCO ``[x, y, w, h]`` of the outline."""
        x0, y0 = self.polygon.min(axis=0)
        x1, y1 = self.polygon.max(axis=0)
        return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]

    @property
    def area(self) -> float:
        """Polygon area by the shoelace formula."""
        x, y = self.polygon[:, 0], self.polygon[:, 1]
        return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _size(image_size: ImageSize) -> tuple[int, int]:
    """(width, height) from an int or a (width, height) pair, checked."""
    width, height = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if min(width, height) < 32:
        raise ValueError(f"image_size must be at least 32 pixels per side, got {image_size!r}")
    return int(width), int(height)


def _outline(name: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Vertices of a shape centred on (cx, cy) that fits in a circle of ``radius``."""
    if name == "circle":
        angles = np.linspace(0, 2 * math.pi, _CIRCLE_VERTICES, endpoint=False)
    elif name == "rectangle":
        half = math.atan(0.6)  # a 5:3 rectangle inscribed in the circle
        angles = np.array([half, math.pi - half, math.pi + half, 2 * math.pi - half])
    else:
        angles = np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    angles = angles + angle
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)


def _random_shapes(rng: np.random.Generator, width: int, height: int,
                   max_shapes: int) -> list[Shape]:
    """1..max_shapes non-overlapping shapes (overlaps would make polygons disagree with pixels)."""
    shapes: list[Shape] = []
    circles: list[tuple[float, float, float]] = []
    wanted = int(rng.integers(1, max_shapes + 1))
    short = min(width, height)
    for _ in range(wanted * 20):
        if len(shapes) == wanted:
            break
        radius = float(rng.uniform(0.08, 0.22) * short)
        cx = float(rng.uniform(radius + 1, width - radius - 1))
        cy = float(rng.uniform(radius + 1, height - radius - 1))
        if any(math.hypot(cx - x, cy - y) < radius + r + 2 for x, y, r in circles):
            continue
        name = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
        jitter = rng.integers(-30, 31, size=3)
        color = tuple(int(c) for c in np.clip(np.array(_CLASS_RGB[name]) + jitter, 0, 255))
        shapes.append(Shape(name, _outline(name, cx, cy, radius, float(rng.uniform(0, 2 * math.pi))),
                            color))
        circles.append((cx, cy, radius))
    return shapes


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A grey-ish noisy canvas, so the model cannot rely on flat colour alone."""
    base = rng.integers(90, 170, size=3)
    noise = rng.normal(0, 12, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _draw(rng: np.random.Generator, width: int, height: int,
          max_shapes: int) -> tuple[Image.Image, list[Shape]]:
    image = _background(rng, width, height)
    shapes = _random_shapes(rng, width, height, max_shapes)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        draw.polygon([tuple(p) for p in shape.polygon.tolist()], fill=shape.color)
    return image, shapes


def _check_counts(num_train: int, num_val: int, max_shapes: int) -> None:
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train} and {num_val}")
    if max_shapes < 1:
        raise ValueError(f"max_shapes must be >= 1, got {max_shapes}")


def make_coco_shapes(root: str | Path, num_train: int = 16, num_val: int = 8,
                     image_size: ImageSize = 128, seed: int = 0,
                     max_shapes: int = 3) -> dict[str, Any]:
    """Write a COCO-format instance segmentation set of shapes under ``root``.

    Layout (as in mmdet's ``coco_instance.py`` base config): ``train2017/``, ``val2017/`` with
    JPEGs and ``annotations/instances_{train,val}2017.json`` with polygons, boxes and areas.
    ``image_size`` is an int or (width, height). Returns ``data_root``, ``classes``,
    ``train_ann_file``/``val_ann_file`` and ``train_img_prefix``/``val_img_prefix`` (relative to
    ``data_root``, ready for a dataset config) and ``val_ann_path`` (absolute, for CocoMetric).
    """
    _check_counts(num_train, num_val, max_shapes)
    width, height = _size(image_size)
    root = Path(root)
    rng = np.random.default_rng(seed)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"}
                  for i, n in enumerate(SHAPE_CLASSES)]
    category_id = {c["name"]: c["id"] for c in categories}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"data_root": str(root), "classes": SHAPE_CLASSES}
    for split, count in (("train", num_train), ("val", num_val)):
        folder = f"{split}2017"
        (root / folder).mkdir(exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            image, shapes = _draw(rng, width, height, max_shapes)
            file_name = f"{index:06d}.jpg"
            image.save(root / folder / file_name, quality=95)
            images.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
            for shape in shapes:
                annotations.append({
                    "id": len(annotations) + 1, "image_id": index + 1,
                    "category_id": category_id[shape.name], "iscrowd": 0,
                    "bbox": shape.bbox, "area": shape.area,
                    "segmentation": [shape.polygon.reshape(-1).round(2).tolist()],
                })
        ann_file = f"annotations/instances_{split}2017.json"
        (root / ann_file).write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}))
        info[f"{split}_ann_file"] = ann_file
        info[f"{split}_img_prefix"] = f"{folder}/"
    info["val_ann_path"] = str(root / info["val_ann_file"])
    return info


def make_ade_shapes(root: str | Path, num_train: int = 16, num_val: int = 8,
                    image_size: ImageSize = 128, seed: int = 0,
                    max_shapes: int = 3) -> dict[str, Any]:
    """Write an ADE20K-format semantic segmentation set of shapes under ``root``.

    Layout (as in mmseg's ``ade20k.py`` base config): ``images/{training,validation}/*.jpg`` and
    ``annotations/{training,validation}/*.png``. The PNGs follow ADE's ``reduce_zero_label``
    convention: 0 is unlabelled (a 2-pixel frame here, so the ignore path is exercised) and
    class k of ``classes`` is stored as k + 1. Returns ``data_root``, ``classes`` and the
    ``{train,val}_img_prefix`` / ``{train,val}_seg_prefix`` folders relative to ``data_root``.
    """
    _check_counts(num_train, num_val, max_shapes)
    width, height = _size(image_size)
    root = Path(root)
    rng = np.random.default_rng(seed)
    label = {name: index + 1 for index, name in enumerate(ADE_CLASSES)}
    info: dict[str, Any] = {"data_root": str(root), "classes": ADE_CLASSES}
    for split, folder, count in (("train", "training", num_train), ("val", "validation", num_val)):
        images_dir, masks_dir = root / "images" / folder, root / "annotations" / folder
        images_dir.mkdir(parents=True, exist_ok=True)
        masks_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, shapes = _draw(rng, width, height, max_shapes)
            mask = Image.new("L", (width, height), label["ground"])
            draw = ImageDraw.Draw(mask)
            for shape in shapes:
                draw.polygon([tuple(p) for p in shape.polygon.tolist()], fill=label[shape.name])
            draw.rectangle([0, 0, width - 1, height - 1], outline=0, width=2)
            stem = f"ADE_{split}_{index:08d}"
            image.save(images_dir / f"{stem}.jpg", quality=95)
            mask.save(masks_dir / f"{stem}.png")
        info[f"{split}_img_prefix"] = f"images/{folder}"
        info[f"{split}_seg_prefix"] = f"annotations/{folder}"
    return info


def _sky_and_ground(rng: np.random.Generator, width: int, height: int) -> tuple[Image.Image, np.ndarray]:
    """A noisy sky over noisy ground, split by a random tilted horizon; also the HxW bool mask of the ground."""
    x = np.arange(width)[None, :]
    y = np.arange(height)[:, None]
    horizon = rng.uniform(0.35, 0.65) * height + rng.uniform(-0.2, 0.2) * (x - width / 2)
    ground = y >= horizon
    canvas = np.empty((height, width, 3))
    for name, where in (("sky", ~ground), ("ground", ground)):
        canvas[where] = np.array(_STUFF_RGB[name]) + rng.integers(-20, 21, size=3)
    canvas += rng.normal(0, 10, size=canvas.shape)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)), ground


def _segment_info(segment_id: int, category_id: int, mask: np.ndarray) -> dict[str, Any]:
    """COCO panoptic ``segments_info`` entry of a non-empty pixel mask (box and area from the pixels)."""
    rows, cols = np.nonzero(mask)
    x0, y0 = int(cols.min()), int(rows.min())
    return {"id": segment_id, "category_id": category_id, "iscrowd": 0, "area": int(mask.sum()),
            "bbox": [x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1]}


def _id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG colours: segment id = R + 256 G + 256^2 B (panopticapi's ``id2rgb``)."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 256 ** 2], axis=-1).astype(np.uint8)


def make_coco_panoptic_shapes(root: str | Path, num_train: int = 16, num_val: int = 8,
                              image_size: ImageSize = 128, seed: int = 0,
                              max_shapes: int = 3) -> dict[str, Any]:
    """Write a COCO panoptic segmentation set under ``root``: shapes as things, sky and ground as stuff.

    Layout (as in mmdet's ``coco_panoptic.py`` base config): JPEGs in ``train2017/``, ``val2017/``;
    ``annotations/panoptic_{train,val}2017.json`` with ``segments_info`` per image and categories
    with ``isthing``; ``annotations/panoptic_{train,val}2017/*.png`` with RGB-encoded segment ids,
    0 (black) marking void: a 2-pixel frame, so the ignore path is exercised. Things come first in
    ``classes`` (mmdet numbers thing labels before stuff labels). Returns ``data_root``,
    ``classes``, ``thing_classes``, ``stuff_classes``, the ``{train,val}_ann_file``,
    ``{train,val}_img_prefix`` and ``{train,val}_seg_prefix`` relative to ``data_root``, and
    ``val_ann_path`` / ``val_seg_path`` (absolute, for ``CocoPanopticMetric``).
    """
    _check_counts(num_train, num_val, max_shapes)
    width, height = _size(image_size)
    root = Path(root)
    rng = np.random.default_rng(seed)
    classes = SHAPE_CLASSES + STUFF_CLASSES
    categories = [{"id": i + 1, "name": name, "supercategory": "shape" if name in SHAPE_CLASSES else "scene",
                   "isthing": int(name in SHAPE_CLASSES), "color": list(_CLASS_RGB.get(name) or _STUFF_RGB[name])}
                  for i, name in enumerate(classes)]
    category_id = {c["name"]: c["id"] for c in categories}
    info: dict[str, Any] = {"data_root": str(root), "classes": classes, "thing_classes": SHAPE_CLASSES,
                            "stuff_classes": STUFF_CLASSES}
    for split, count in (("train", num_train), ("val", num_val)):
        image_dir, seg_dir = f"{split}2017", f"annotations/panoptic_{split}2017"
        (root / image_dir).mkdir(parents=True, exist_ok=True)
        (root / seg_dir).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            image, ground = _sky_and_ground(rng, width, height)
            shapes = _random_shapes(rng, width, height, max_shapes)
            # Segment ids 1, 2 for sky and ground, 3.. for the shapes, drawn into an index map.
            index_map = Image.fromarray(np.where(ground, 2, 1).astype(np.uint8))
            draw, draw_index = ImageDraw.Draw(image), ImageDraw.Draw(index_map)
            for number, shape in enumerate(shapes, start=3):
                outline = [tuple(p) for p in shape.polygon.tolist()]
                draw.polygon(outline, fill=shape.color)
                draw_index.polygon(outline, fill=number)
            draw_index.rectangle([0, 0, width - 1, height - 1], outline=0, width=2)
            segment_ids = np.array(index_map, dtype=np.int64)
            names = list(STUFF_CLASSES) + [shape.name for shape in shapes]
            segments = [_segment_info(number, category_id[name], segment_ids == number)
                        for number, name in enumerate(names, start=1) if (segment_ids == number).any()]
            stem = f"{index:06d}"
            image.save(root / image_dir / f"{stem}.jpg", quality=95)
            Image.fromarray(_id_to_rgb(segment_ids)).save(root / seg_dir / f"{stem}.png")
            images.append({"id": index + 1, "file_name": f"{stem}.jpg", "width": width, "height": height})
            annotations.append({"image_id": index + 1, "file_name": f"{stem}.png", "segments_info": segments})
        ann_file = f"annotations/panoptic_{split}2017.json"
        (root / ann_file).write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}))
        info[f"{split}_ann_file"] = ann_file
        info[f"{split}_img_prefix"] = f"{image_dir}/"
        info[f"{split}_seg_prefix"] = f"{seg_dir}/"
    info["val_ann_path"] = str(root / info["val_ann_file"])
    info["val_seg_path"] = str(root / info["val_seg_prefix"])
    return info
