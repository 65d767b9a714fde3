"""What an FCMAE model does, for people: per image the original, the masked input and the reconstruction.

Also the numbers behind the picture: the mean squared error on hidden patches of the model's
reconstruction and of a blind guess that fills every hidden patch with the mean colour of the
image's visible pixels (a model that learned nothing does worse than that guess). For a model
trained with ``norm_pix_loss`` the reconstruction borrows each hidden patch's true mean and
variance (see ``FCMAE.reconstruct``), so its score flatters it; the CPU recipe regresses raw pixels.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from cvx2_backbone.fcmae.masking import patchify, upsample_mask

# Real photographs that ship inside installed packages (matplotlib always comes with mmengine).
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
LABEL_HEIGHT = 18
_GAP = 6


def sample_photos() -> list[Path]:
    """Photos from matplotlib's sample data and, when scikit-image is installed, its data folder."""
    import matplotlib

    photos = [Path(matplotlib.get_data_path()) / "sample_data" / name for name in MATPLOTLIB_PHOTOS]
    try:
        from importlib.resources import files
        folder = Path(str(files("skimage") / "data"))
        photos += [folder / name for name in SKIMAGE_PHOTOS]
    except ModuleNotFoundError:
        pass
    return [p for p in photos if p.is_file()]


def load_square(path: str | Path, size: int) -> np.ndarray:
    """An image as RGB uint8 (size, size, 3): the shorter side resized to ``size`` (bicubic), centre-cropped."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


@dataclass
class Scores:
    """Mean squared error on hidden patches (in normalised pixels) of the model and of the blind guess."""

    model_mse: float
    mean_fill_mse: float

    @property
    def beats_mean_fill(self) -> bool:
        return self.model_mse < self.mean_fill_mse


def mean_fill(images: Tensor, mask: Tensor, patch: int) -> Tensor:
    """Hidden patches filled with the mean colour of each image's visible pixels."""
    visible = (~upsample_mask(mask, patch))[:, None].to(images.dtype)
    colour = (images * visible).sum(dim=(2, 3), keepdim=True) / visible.sum(dim=(2, 3), keepdim=True)
    return images * visible + colour * (1 - visible)


def hidden_mse(estimate: Tensor, images: Tensor, mask: Tensor, patch: int) -> float:
    """Mean squared error over the pixels of hidden patches."""
    per_patch = (patchify(estimate, patch) - patchify(images, patch)).square().mean(dim=-1)
    hidden = mask.reshape(mask.shape[0], -1).to(per_patch.dtype)
    return float((per_patch * hidden).sum() / hidden.sum())


def fixed_masks(model, images: Tensor, seed: int) -> Tensor:
    """The same random masks every time for a given seed (for pictures and comparable scores)."""
    return model.random_mask(images, generator=torch.Generator(device=images.device).manual_seed(seed))


@torch.no_grad()
def reconstruct(model, pixels: Tensor, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Scores]:
    """(normalised images, masks, reconstructions, scores) for uint8 (N, 3, H, W) ``pixels``."""
    model.eval()
    images = model.data_preprocessor({"inputs": list(pixels)})["inputs"]
    mask = fixed_masks(model, images, seed)
    recon = model.reconstruct(images, mask)
    scores = Scores(hidden_mse(recon, images, mask, model.patch_size),
                    hidden_mse(mean_fill(images, mask, model.patch_size), images, mask, model.patch_size))
    return images, mask, recon, scores


def to_uint8(images: Tensor, preprocessor) -> np.ndarray:
    """Normalised (N, 3, H, W) back to RGB uint8 (N, H, W, 3) with the preprocessor's mean and std."""
    pixels = images * preprocessor.std.to(images) + preprocessor.mean.to(images)
    return pixels.clamp(0, 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def masked_input(image: np.ndarray, mask: Tensor, patch: int) -> np.ndarray:
    """The image with hidden patches greyed out, as the encoder sees it."""
    hidden = upsample_mask(mask[None], patch)[0].cpu().numpy()
    out = image.copy()
    out[hidden] = (out[hidden] * 0.15 + 110).astype(np.uint8)
    return out


def triptych(original: np.ndarray, masked: np.ndarray, recon: np.ndarray, title: str = "") -> Image.Image:
    """Three labelled tiles side by side: original, masked input, reconstruction."""
    h, w = original.shape[:2]
    canvas = Image.new("RGB", (3 * w + 2 * _GAP, h + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (tile, label) in enumerate(((original, title or "original"), (masked, "masked input"),
                                       (recon, "reconstruction"))):
        canvas.paste(Image.fromarray(tile), (i * (w + _GAP), LABEL_HEIGHT))
        draw.text((i * (w + _GAP) + 2, 3), label, fill="black")
    return canvas


def write_pictures(model, paths: Sequence[str | Path], out_dir: str | Path, size: int = 224,
                   seed: int = 0) -> tuple[list[Path], Scores]:
    """One PNG per image (original | masked input | reconstruction) in ``out_dir``, plus the scores."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pixels = torch.from_numpy(np.stack([load_square(p, size) for p in paths])).permute(0, 3, 1, 2)
    pixels = pixels.to(next(model.parameters()).device)
    images, mask, recon, scores = reconstruct(model, pixels, seed)
    originals = to_uint8(images, model.data_preprocessor)
    recons = to_uint8(recon, model.data_preprocessor)
    written = []
    for path, original, m, rec in zip(paths, originals, mask, recons):
        picture = triptych(original, masked_input(original, m, model.patch_size), rec, Path(path).name)
        target = out_dir / f"{Path(path).stem}_fcmae.png"
        picture.save(target)
        written.append(target)
    return written, scores


def loss_history(work_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The training loss per logged iteration from the newest ``vis_data/scalars.json`` under ``work_dir``."""
    logs = sorted(Path(work_dir).glob("*/vis_data/scalars.json"))
    if not logs:
        return {}
    points = []
    for line in logs[-1].read_text().splitlines():
        record = json.loads(line)
        if "loss" in record and "step" in record:
            points.append((int(record["step"]), float(record["loss"])))
    return {"loss": points}
