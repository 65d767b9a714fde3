"""FCMAE end to end: tools/train.py pre-trains on a folder of images, Mask R-CNN starts from what it wrote,
and `cvx2 fcmae-show` draws reconstructions (a longer run that must really reconstruct is marked heavy)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.helpers.fcmae import CPU_CONFIG, fcmae_images
from tests.helpers.training import DET_CONFIG, as_cli, det_options, run_tool

from cvx2_backbone.cli.main import main as cvx2
from cvx2_backbone.datasets import make_coco_shapes
from cvx2_backbone.fcmae.pictures import sample_photos

ROOT = Path(__file__).resolve().parents[2]
def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_pretrain_with_tools_train_then_mask_rcnn_starts_from_the_checkpoint(tmp_path):
    images = fcmae_images(tmp_path / "images")
    work = tmp_path / "fcmae"
    run_tool(sys.executable, "tools/train.py", str(CPU_CONFIG), "--work-dir", str(work), *as_cli({
        "train_dataloader.dataset.data_root": str(images), "train_dataloader.batch_size": 2,
        "train_dataloader.num_workers": 0, "train_dataloader.dataset.pipeline.1.size": 64,
        "train_cfg.max_iters": 2, "default_hooks.checkpoint.interval": 2, "default_hooks.logger.interval": 1}))
    checkpoint = work / "iter_2.pth"
    saved = _load(checkpoint)
    assert saved["meta"]["iter"] == 2
    encoder = {k[len("encoder."):]: v for k, v in saved["state_dict"].items() if k.startswith("encoder.")}
    assert "stages.3.1.grn.gamma" in encoder and "mask_token" in saved["state_dict"]

    coco = make_coco_shapes(tmp_path / "coco", num_train=2, num_val=1, image_size=128)
    options = det_options(coco)
    options.pop("model.backbone.init_cfg")  # keep the config's Pretrained init, pointed at the FCMAE file
    det_work = tmp_path / "det"
    run_tool(sys.executable, "tools/train.py", str(DET_CONFIG), "--work-dir", str(det_work), *as_cli({
        **options, "model.backbone.init_cfg.checkpoint": str(checkpoint), "train_cfg.max_epochs": 1,
        "optim_wrapper.optimizer.lr": 0.0}))  # lr 0: the detector's backbone must still be the FCMAE encoder
    detector = _load(det_work / "epoch_1.pth")["state_dict"]
    backbone = {k[len("backbone."):]: v for k, v in detector.items() if k.startswith("backbone.")}
    assert {k for k in backbone if not k.startswith("norm")} == set(encoder)
    for key, value in encoder.items():
        assert torch.equal(backbone[key], value), key
    assert {"norm0.weight", "norm3.bias"} <= set(backbone)  # output norms: the detector's own, not in FCMAE


def test_fcmae_show_trains_briefly_and_draws(tmp_path):
    """`cvx2 fcmae-show` as a user runs it, in its own interpreter: in the suite's process, after some 600 earlier
    tests, the in-process Runner crashed CPython with SIGSEGV (heap corrupted earlier by native code, not found yet)."""
    photos = sample_photos()
    assert len(photos) >= 6  # matplotlib's photo and scikit-image's (the test extra installs it)
    out = tmp_path / "show"
    printed = run_tool(sys.executable, "-m", "cvx2_backbone.cli.main", "fcmae-show", *map(str, photos[:2]),
                       "-o", str(out), "--iters", "2", "--size", "96", "--threads", "1")
    assert "hidden-patch MSE" in printed
    pictures = sorted(out.glob("*_fcmae.png"))
    assert [p.name for p in pictures] == sorted(f"{p.stem}_fcmae.png" for p in photos[:2])
    with Image.open(pictures[0]) as picture:
        assert picture.size == (3 * 96 + 2 * 6, 96 + 18)  # original | masked input | reconstruction
    scores = json.loads((out / "scores.json").read_text())
    assert scores["hidden_patch_mse"] > 0 and scores["mean_fill_mse"] > 0
    assert (out / "fcmae_show.png").is_file() and (out / "loss_curve.png").is_file()
    assert (out / "train/iter_2.pth").is_file()

    # the checkpoint it wrote shows again (in this process), with the config stored inside it and the same masks
    # and scores
    again = tmp_path / "again"
    assert cvx2(["fcmae-show", *map(str, photos[:2]), "-o", str(again), "--checkpoint",
                 str(out / "train/iter_2.pth"), "--size", "96"]) == 0
    assert json.loads((again / "scores.json").read_text())["hidden_patch_mse"] == pytest.approx(
        scores["hidden_patch_mse"], rel=1e-5)


def test_fcmae_show_usage_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts/a.txt").write_text("x")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (24, 24)).save(tiny)
    cases = [
        ([str(tmp_path / "empty")], "no images under"),
        ([str(tmp_path / "texts")], "found 1 other files"),
        ([str(tiny)], "24x24 is smaller than one 32x32 FCMAE patch"),
        ([str(tiny), "--mask-ratio", "1.5"], "mask_ratio must be strictly between 0 and 1"),
        ([str(tmp_path / "missing.jpg")], "does not exist"),
    ]
    for args, message in cases:
        assert cvx2(["fcmae-show", *args, "-o", str(tmp_path / "out")]) == 2
        printed = capsys.readouterr().err
        assert printed.startswith("cvx2 fcmae-show: error: ") and message in printed, printed
        assert len(printed.strip().splitlines()) <= 2 and "Traceback" not in printed


@pytest.mark.heavy
def test_a_longer_run_reconstructs_real_photos(tmp_path):
    """`cvx2 fcmae-show --iters 400 --size 160` (the README's picture): 400 iterations of the CPU recipe on the
    shipped photos. Its reconstruction of hidden patches must beat a blind mean-colour fill by 10%; the untrained
    model does not beat it at all."""
    from mmengine.config import Config

    from cvx2_backbone import MODELS
    from cvx2_backbone.fcmae.showcase import fcmae_show
    from cvx2_backbone.fcmae.pictures import load_square, reconstruct

    photos = sample_photos()
    untrained = MODELS.build(Config.fromfile(str(CPU_CONFIG)).model)
    pixels = torch.from_numpy(np.stack([load_square(p, 160) for p in photos])).permute(0, 3, 1, 2)
    before = reconstruct(untrained, pixels)[3]
    assert not before.beats_mean_fill, before
    result = fcmae_show(photos, tmp_path / "show", iters=400, size=160, threads=2)
    assert result.scores.model_mse < 0.9 * result.scores.mean_fill_mse, result.scores
