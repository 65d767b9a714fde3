"""Pictures for people: feature pyramids as PCA colour, detections drawn on images, loss curves.

A pyramid picture is one row of equal tiles: the image, then every level with its first three
principal components (over that level's channels) as red, green and blue, each under a label.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

TILE_GAP = 8      # pixels between tiles
LABEL_HEIGHT = 18  # band above each tile holding its label
_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def pca_rgb(fmap: Tensor) -> np.ndarray:
    """(C, h, w) feature map -> (h, w, 3) uint8: its first three principal components as colour.

    Each component is stretched between its 1st and 99th percentile; signs are fixed so the
    strongest response of each component is bright, so pictures do not flip between runs.
    """
    if fmap.dim() != 3:
        raise ValueError(f"pca_rgb expects a (C, h, w) feature map, got shape {tuple(fmap.shape)}")
    c, h, w = fmap.shape
    x = fmap.detach().float().cpu().reshape(c, h * w).T
    x = x - x.mean(dim=0, keepdim=True)
    k = min(3, c)
    if h * w > 1:
        _, vectors = torch.linalg.eigh(x.T @ x / (h * w))
        proj = x @ vectors[:, -k:].flip(-1)  # eigh sorts ascending: take the last k, largest first
    else:
        proj = x[:, :k]
    peak = proj.gather(0, proj.abs().argmax(dim=0, keepdim=True))
    proj = proj * torch.where(peak < 0, -1.0, 1.0)
    low = torch.quantile(proj, 0.01, dim=0)
    high = torch.quantile(proj, 0.99, dim=0)
    proj = ((proj - low) / (high - low).clamp_min(1e-8)).clamp(0, 1)
    rgb = torch.zeros(h * w, 3)
    rgb[:, :k] = proj
    return (rgb.reshape(h, w, 3).numpy() * 255).round().astype(np.uint8)


def tile_size(image_hw: tuple[int, int], tile: int) -> tuple[int, int]:
    """(height, width) of every tile: the image scaled so its long side is ``tile`` pixels."""
    h, w = image_hw
    scale = tile / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def pyramid_image(image: np.ndarray | Image.Image, features: Mapping[str, Tensor],
                  strides: Sequence[int] | None = None, tile: int = 256) -> Image.Image:
    """The image next to every feature map of ``features`` ({name: (C, h, w)}) in PCA colour.

    The result is ``(1 + L) * tile_w + L * TILE_GAP`` wide and ``tile_h + LABEL_HEIGHT`` high,
    where L is the number of levels and (tile_h, tile_w) is :func:`tile_size`.
    """
    image = Image.fromarray(np.asarray(image)) if not isinstance(image, Image.Image) else image.convert("RGB")
    th, tw = tile_size((image.height, image.width), tile)
    strides = list(strides) if strides is not None else [None] * len(features)
    if len(strides) != len(features):
        raise ValueError(f"got {len(strides)} strides for {len(features)} feature maps")
    tiles = [("image", image.resize((tw, th), Image.BILINEAR))]
    for (name, fmap), stride in zip(features.items(), strides):
        label = f"{name} {'s' + str(stride) + ' ' if stride else ''}{fmap.shape[0]}x{fmap.shape[1]}x{fmap.shape[2]}"
        tiles.append((label, Image.fromarray(pca_rgb(fmap)).resize((tw, th), Image.NEAREST)))
    canvas = Image.new("RGB", (len(tiles) * tw + (len(tiles) - 1) * TILE_GAP, th + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, picture) in enumerate(tiles):
        x = i * (tw + TILE_GAP)
        canvas.paste(picture, (x, LABEL_HEIGHT))
        draw.text((x + 2, 3), label, fill="black")
    return canvas


def draw_instances(image: np.ndarray | Image.Image, boxes: np.ndarray, labels: Sequence[int],
                   scores: Sequence[float], class_names: Sequence[str], masks: np.ndarray | None = None,
                   score_thr: float = 0.3, scale: int = 1) -> Image.Image:
    """Boxes (N, 4 xyxy), class labels with scores and optional masks (N, H, W bool) drawn on the image.

    ``scale`` enlarges the image (nearest) first, so labels stay readable on small images.
    """
    image = Image.fromarray(np.asarray(image)) if not isinstance(image, Image.Image) else image.convert("RGB")
    canvas = np.asarray(image, dtype=np.float32).repeat(scale, axis=0).repeat(scale, axis=1)
    keep = [i for i, s in enumerate(scores) if s >= score_thr]
    for i in keep:
        if masks is not None:  # a light tint inside the mask and a white outline around it
            mask = masks[i].astype(bool).repeat(scale, axis=0).repeat(scale, axis=1)
            canvas[mask] = 0.7 * canvas[mask] + 0.3 * 255
            canvas[_outline(mask)] = 255
    out = Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for i in keep:
        color = _PALETTE[int(labels[i]) % len(_PALETTE)]
        x0, y0, x1, y1 = (float(v) * scale for v in boxes[i])
        draw.rectangle([x0, y0, x1, y1], outline=color, width=2)
        text = f"{class_names[int(labels[i])]} {scores[i]:.2f}"
        draw.rectangle([x0, max(0.0, y0 - 11), x0 + 6 * len(text) + 2, max(11.0, y0)], fill=color)
        draw.text((x0 + 1, max(0.0, y0 - 11)), text, fill="white")
    return out


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def mosaic(pictures: Sequence[Image.Image], columns: int = 3, gap: int = TILE_GAP) -> Image.Image:
    """Pictures in a grid of ``columns``, each cell as large as the largest picture, on white."""
    if not pictures:
        raise ValueError("mosaic needs at least one picture")
    cell_w = max(p.width for p in pictures)
    cell_h = max(p.height for p in pictures)
    columns = min(columns, len(pictures))
    rows = -(-len(pictures) // columns)
    canvas = Image.new("RGB", (columns * cell_w + (columns - 1) * gap, rows * cell_h + (rows - 1) * gap), "white")
    for i, picture in enumerate(pictures):
        canvas.paste(picture, ((i % columns) * (cell_w + gap), (i // columns) * (cell_h + gap)))
    return canvas


def plot_losses(history: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, title: str = "",
                smooth: int = 10) -> Path:
    """Plot loss curves ({name: [(iteration, value), ...]}) to a PNG, each as a moving average over
    ``smooth`` iterations; the total ``loss`` is drawn thick, over its raw values in a faint line."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    others = iter(f"C{i % 10}" for i in range(1, 100))  # C0 (blue) is the total's
    for name, points in history.items():
        if not points:
            continue
        steps, values = (np.asarray(v, dtype=float) for v in zip(*points))
        window = max(1, min(smooth, len(values)))
        averaged = np.convolve(values, np.ones(window) / window, mode="valid")
        if name == "loss":
            ax.plot(steps, values, color="C0", alpha=0.25, linewidth=0.8)
        ax.plot(steps[window - 1:], averaged, label=name, linewidth=2.5 if name == "loss" else 1.0,
                color="C0" if name == "loss" else next(others))
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
