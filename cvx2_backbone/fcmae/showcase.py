"""`cvx2 fcmae-show` behind the command line: find the images, train briefly if asked, draw, score."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from cvx2_backbone.utils.machine import torch_threads
from cvx2_backbone.fcmae.data import scan_images
from cvx2_backbone.fcmae.masking import check_mask_ratio
from cvx2_backbone.fcmae.pictures import Scores, loss_history, sample_photos, write_pictures
from cvx2_backbone.engine import train
from cvx2_backbone.registry import MODELS
from cvx2_backbone.weights.reading import read_file
from cvx2_backbone.utils.pictures import mosaic, plot_losses

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = "configs/fcmae/fcmae_convnextv2-atto_1xb8-cosine-1k_image-folder-cpu.py"


class ShowError(ValueError):
    """A usage problem, with the fix in its message."""


@dataclass
class ShowResult:
    """The pictures and files written, and the reconstruction scores."""

    files: list[Path]
    scores: Scores
    history: dict = field(default_factory=dict)


def collect_images(sources: Sequence[str | os.PathLike], min_size: int) -> list[Path]:
    """Image paths from files and folders (folders searched recursively; their unusable files are listed).

    A file named explicitly must be a readable image of at least ``min_size`` pixels a side.
    """
    if not sources:
        photos = sample_photos()
        if not photos:
            raise ShowError("no images given, and no sample photos found (they ship with matplotlib); pass image "
                            "files or folders")
        return photos
    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            images, skipped = scan_images(source, min_size=min_size)
            for path, reason in skipped:
                print(f"skipped {path}: {reason}")
            paths += [Path(p) for p, _, _ in images]
        elif source.is_file():
            images, skipped = scan_images_of_file(source, min_size)
            if skipped:
                raise ShowError(f"{source}: {skipped}")
            paths.append(source)
        else:
            raise ShowError(f"{source} does not exist; pass image files or folders of images")
    return paths


def scan_images_of_file(path: Path, min_size: int) -> tuple[Path, str | None]:
    """(path, None) for a usable image file, (path, reason) otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError, ValueError) as err:
        return path, f"not a readable image ({type(err).__name__}: {err})"
    if min(width, height) < min_size:
        return path, f"{width}x{height} is smaller than one {min_size}x{min_size} FCMAE patch; use larger images"
    return path, None


def _config(config: str | None, checkpoint: str | None):
    """The config to use: --config, else the checkpoint's own (mmengine stores it), else the small CPU recipe."""
    from mmengine.config import Config

    if config is not None:
        if not Path(config).is_file():
            raise ShowError(f"config {config!r} does not exist; FCMAE configs live under configs/fcmae/")
        return Config.fromfile(config)
    if checkpoint is not None:
        text = _read_checkpoint(checkpoint).get("meta", {}).get("cfg")
        if text:
            return Config.fromstring(text, file_format=".py")
        raise ShowError(f"{checkpoint} does not name its config (a plain state dict); pass --config")
    path = REPO_ROOT / DEFAULT_CONFIG
    if not path.is_file():
        raise ShowError(f"the default config {DEFAULT_CONFIG} is not here (it ships with the source checkout); "
                        "pass --config")
    return Config.fromfile(str(path))


def _read_checkpoint(path: str) -> dict:
    if not Path(path).is_file():
        raise ShowError(f"checkpoint {path!r} does not exist; pass a .pth written by tools/train.py")
    obj = read_file(Path(path)).obj  # the safe reader: an unsafe pickle gets every command's safety refusal
    if not isinstance(obj, dict):
        raise ShowError(f"{path} holds a {type(obj).__name__}, not a checkpoint")
    state = obj.get("state_dict", obj)
    if not any(isinstance(key, str) and key.endswith("mask_token") for key in state):
        sample = ", ".join(sorted(str(key) for key in state)[:4])
        raise ShowError(f"{path} is not an FCMAE checkpoint (no mask token or decoder; its first keys: {sample}); "
                        "pass one written by tools/train.py with a configs/fcmae/ config, or leave --checkpoint "
                        "out to pre-train briefly first")
    return obj


def load_fcmae(cfg, checkpoint: str):
    """The config's FCMAE with the checkpoint's weights (all of them: encoder and decoder)."""
    model = MODELS.build(cfg.model)
    obj = _read_checkpoint(checkpoint)
    state = obj.get("state_dict", obj)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ShowError(f"{checkpoint} does not fit the config's FCMAE model ({str(err).splitlines()[0]}); pass the "
                        "--config it was trained with") from None
    return model


def _link_images(paths: Sequence[Path], folder: Path) -> Path:
    """Symbolic links to ``paths`` in a fresh ``folder``, for the image-folder dataset of the training run."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_symlink():
            old.unlink()
    for i, path in enumerate(paths):
        (folder / f"{i:04d}_{path.name}").symlink_to(path.resolve())
    return folder


def _check_iters(cfg, iters: int | None) -> None:
    if iters is None:
        return
    if iters < 1:
        raise ShowError(f"--iters must be >= 1, got {iters}")
    if cfg.train_cfg.get("type") != "IterBasedTrainLoop":
        raise ShowError("--iters needs an iteration-based config (train_cfg.type='IterBasedTrainLoop')")


def _check_size(size: int, patch: int) -> None:
    if size < patch or size % patch:
        raise ShowError(f"--size {size}: the picture is cut into {patch}-pixel patches, so give a multiple of "
                        f"{patch} (e.g. {max(patch, round(size / patch) * patch)}, or 224)")


def _train(cfg, paths: Sequence[Path], output: Path, iters: int | None):
    """Pre-train on ``paths`` with ``cfg`` (shortened to ``iters`` with its warm-up and cosine scaled to fit)."""
    _check_iters(cfg, iters)
    cfg.train_dataloader.dataset.data_root = str(_link_images(paths, output / "images"))
    if iters is not None:
        warmup = max(1, iters // 10)
        cfg.train_cfg.max_iters = iters
        cfg.param_scheduler = [
            dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=warmup),
            dict(type="CosineAnnealingLR", T_max=max(1, iters - warmup), eta_min=0.0, by_epoch=False, begin=warmup,
                 end=max(iters, warmup + 1))]
        cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=False, interval=iters, max_keep_ckpts=1)
        logger = cfg.default_hooks.logger
        logger.interval = min(logger.get("interval", 10), max(1, iters // 20))  # a loss curve even for short runs
    config_path = output / "config.py"  # the run's exact config, next to its pictures
    cfg.dump(str(config_path))
    work_dir = output / "train"
    runner = train(str(config_path), work_dir=str(work_dir))
    return runner.model, loss_history(work_dir)


def fcmae_show(images: Sequence[str | os.PathLike], output: str | os.PathLike, *, checkpoint: str | None = None,
               config: str | None = None, iters: int | None = None, mask_ratio: float | None = None,
               size: int = 224, seed: int = 0, threads: int | None = None) -> ShowResult:
    """Pictures (one per image and all in one), the loss curve and ``scores.json`` under ``output``."""
    output = Path(output)
    if mask_ratio is not None:
        check_mask_ratio(mask_ratio)
    cfg = _config(config, checkpoint)
    if mask_ratio is not None:
        cfg.model.mask_ratio = mask_ratio
    with torch_threads(threads):
        if checkpoint is None:
            patch = MODELS.build(cfg.model).patch_size  # checks the model options before collecting images
            _check_size(size, patch)  # every refusal before the first file is written
            _check_iters(cfg, iters)
            paths = collect_images(images, patch)
            model, history = _train(cfg, paths, output, iters)
        else:
            model = load_fcmae(cfg, checkpoint)
            _check_size(size, model.patch_size)
            paths = collect_images(images, model.patch_size)
            history = loss_history(Path(checkpoint).parent)
        files, scores = write_pictures(model, paths, output, size=size, seed=seed)
    from PIL import Image
    overview = output / "fcmae_show.png"
    mosaic([Image.open(f) for f in files], columns=1).save(overview)
    written = [overview, *files]
    if history.get("loss"):
        written.append(plot_losses(history, output / "loss_curve.png", title="FCMAE pre-training loss", smooth=5))
    (output / "scores.json").write_text(json.dumps(
        {"hidden_patch_mse": scores.model_mse, "mean_fill_mse": scores.mean_fill_mse,
         "images": [str(p) for p in paths], "seed": seed, "size": size}, indent=2))
    return ShowResult(written + [output / "scores.json"], scores, history)
