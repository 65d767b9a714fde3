"""The FCMAE model (loss, masks, official layout and loading into ConvNeXtV2), its configs, dataset and errors."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from PIL import Image

import cvx2_backbone
from cvx2_backbone import FCMAE, MODELS, ConvNeXtV2
from cvx2_backbone.engine import load_config
from cvx2_backbone.fcmae import ImageFolder, patchify, random_patch_mask, unpatchify, upsample_mask

ROOT = Path(__file__).resolve().parents[2]
FCMAE_CONFIGS = sorted((ROOT / "configs/fcmae").glob("*.py"))
SIZES = ("atto", "femto", "pico", "nano", "tiny", "base", "large", "huge")
TINY = dict(depths=[1, 1, 1, 1], dims=[8, 16, 24, 32])


def _tiny(**kwargs) -> FCMAE:
    torch.manual_seed(0)
    return MODELS.build(dict(type="cvx2_backbone.FCMAE", arch=TINY, decoder_dim=16, **kwargs))


def test_build_loss_and_gradients():
    torch.manual_seed(0)  # this seed once gave NaN gradients (GRN's norm of an all-zero channel)
    model = MODELS.build(dict(type="cvx2_backbone.FCMAE", arch="atto"))
    assert isinstance(model, FCMAE) and isinstance(model.encoder, ConvNeXtV2) and model.patch_size == 32
    assert model.pred.out_channels == 32 * 32 * 3 and model.mask_token.shape == (1, 512, 1, 1)
    losses = model(torch.randn(2, 3, 224, 224), mode="loss")
    assert set(losses) == {"loss"} and losses["loss"].dim() == 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert model.encoder.downsample_layers[0][0].weight.grad.abs().sum() > 0
    assert model.encoder.stages[3][1].pwconv2.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_random_masks_hide_the_official_share_per_image():
    mask = random_patch_mask(4, (7, 7), 0.6, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (4, 7, 7) and mask.dtype == torch.bool
    assert mask.view(4, -1).sum(dim=1).tolist() == [49 - int(49 * 0.4)] * 4  # the official int(L * (1 - ratio))
    assert len({tuple(m.flatten().tolist()) for m in mask}) == 4  # a different mask per image


def test_patchify_round_trip_and_layout():
    images = torch.randn(2, 3, 64, 96)
    patches = patchify(images, 32)
    assert patches.shape == (2, 6, 32 * 32 * 3)
    torch.testing.assert_close(patches[1, 4].view(32, 32, 3), images[1, :, 32:64, 32:64].permute(1, 2, 0))
    torch.testing.assert_close(unpatchify(patches, 32, (2, 3), 3), images)


def test_encoding_ignores_hidden_pixels_and_loss_counts_hidden_patches_only():
    model = _tiny(norm_pix_loss=False).eval()
    images = torch.randn(2, 3, 96, 128)
    mask = random_patch_mask(2, (3, 4), 0.5, generator=torch.Generator().manual_seed(1))
    hidden = upsample_mask(mask, 32)[:, None]
    scribbled = torch.where(hidden, torch.randn_like(images) * 100, images)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(scribbled, mask), model.encode(images, mask), atol=0, rtol=0)
        prediction, used = model(images, mode="tensor", mask=mask)
        assert torch.equal(used, mask) and prediction.shape == (2, 32 * 32 * 3, 3, 4)
        perfect = patchify(images, 32).transpose(1, 2).reshape(2, -1, 3, 4)
        wrong_where_visible = torch.where(mask[:, None], perfect, perfect + 5)
        assert model.loss_of(images, wrong_where_visible, mask) == 0
        assert model.loss_of(images, torch.where(mask[:, None], perfect + 1, perfect), mask) == pytest.approx(1.0)


def test_norm_pix_targets_and_reconstruction():
    model = _tiny(norm_pix_loss=True).eval()
    images = torch.randn(1, 3, 64, 64) * 3 + 2
    target = model.targets(images)
    torch.testing.assert_close(target.mean(dim=-1), torch.zeros(1, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.std(dim=-1), torch.ones(1, 4), atol=1e-3, rtol=0)
    mask = torch.tensor([[[True, False], [False, True]]])
    with torch.no_grad():
        recon = model.reconstruct(images, mask)
    visible = ~upsample_mask(mask, 32)[:, None].expand_as(images)
    torch.testing.assert_close(recon[visible], images[visible])  # visible patches are the input itself
    assert not torch.allclose(recon[~visible], images[~visible])
    with torch.no_grad():
        predicted = model(images, mode="predict", mask=mask)
    assert len(predicted) == 1 and torch.equal(predicted[0]["mask"], mask[0])
    torch.testing.assert_close(predicted[0]["reconstruction"], recon[0])


def test_state_dict_is_the_official_layout_and_loads_into_convnextv2(tmp_path):
    model = MODELS.build(dict(type="cvx2_backbone.FCMAE", arch="atto"))
    keys = list(model.state_dict())
    assert {k.split(".")[0] for k in keys} == {"encoder", "proj", "mask_token", "decoder", "pred"}
    assert "encoder.stages.2.5.grn.gamma" in keys and "encoder.downsample_layers.0.0.weight" in keys
    path = tmp_path / "fcmae.pth"
    torch.save(model.state_dict(), path)

    backbone = ConvNeXtV2(arch="atto", init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    backbone.init_weights()
    for name, value in backbone.state_dict().items():
        if not name.startswith("norm"):
            assert torch.equal(value, model.encoder.state_dict()[name]), name

    from cvx2_backbone.weights import load_pretrained
    report = load_pretrained(ConvNeXtV2(arch="atto"), str(path))
    assert report.clean and len(report.loaded) == len(model.encoder.state_dict())
    assert report.discarded == {"decoder": 10, "mask_token": 1, "pred": 2, "proj": 2}
    assert any("FCMAE" in note for note in report.notes)


def test_model_argument_errors():
    for ratio in (0, 1, 1.2, -0.1, True):
        with pytest.raises(ValueError, match="mask_ratio must be strictly between 0 and 1"):
            _tiny(mask_ratio=ratio)
    with pytest.raises(ValueError, match="grn_stats"):
        _tiny(grn_stats="global")
    with pytest.raises(ValueError, match="init must be one of"):
        _tiny(init="xavier")
    model = _tiny()
    with pytest.raises(ValueError, match="smaller than one 32x32 FCMAE patch"):
        model(torch.randn(1, 3, 16, 64), mode="loss")
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 64, 80), mode="loss")
    with pytest.raises(ValueError, match="at least one visible and one hidden patch"):
        model(torch.randn(1, 3, 32, 32), mode="loss")  # one patch: 0.6 of it leaves nothing visible


def test_official_init_draws_std_one_where_the_official_code_does():
    torch.manual_seed(0)
    arch = dict(depths=[1, 1, 2, 1], dims=[32, 64, 96, 128])
    official = MODELS.build(dict(type="cvx2_backbone.FCMAE", arch=arch, init="official"))
    convnext = MODELS.build(dict(type="cvx2_backbone.FCMAE", arch=arch, init="convnext"))
    for name in ("encoder.downsample_layers.0.0.weight", "encoder.stages.2.1.dwconv.weight",
                 "encoder.stages.2.1.pwconv1.weight", "proj.weight", "pred.weight", "decoder.0.dwconv.weight"):
        assert official.state_dict()[name].std().item() == pytest.approx(0.88, abs=0.05), name  # cut at 2 sigma
        assert convnext.state_dict()[name].std().item() == pytest.approx(0.02, abs=0.003), name
    assert official.encoder.downsample_layers[2][1].weight.std().item() == pytest.approx(0.02, abs=0.003)
    bound = 1 / 512 ** 0.5  # torch's default Linear init in the official decoder block
    assert official.decoder[0].pwconv1.weight.abs().max() <= bound


# --- configs ------------------------------------------------------------------------------------
def test_config_tree():
    names = {p.name for p in FCMAE_CONFIGS}
    assert names >= {f"fcmae_convnextv2-{s}_8xb512-1600e_image-folder.py" for s in SIZES}
    assert "fcmae_convnextv2-atto_1xb8-cosine-1k_image-folder-cpu.py" in names


@pytest.mark.parametrize("size", SIZES)
def test_official_recipe(size):
    cfg = load_config(ROOT / f"configs/fcmae/fcmae_convnextv2-{size}_8xb512-1600e_image-folder.py")
    assert cfg.default_scope == "cvx2_backbone" and cfg.model.arch == size
    model, optim = cfg.model, cfg.optim_wrapper
    assert (model.mask_ratio, model.decoder_dim, model.decoder_depth, model.norm_pix_loss) == (0.6, 512, 1, True)
    assert optim.optimizer.type == "AdamW" and optim.optimizer.betas == (0.9, 0.95)
    assert optim.optimizer.weight_decay == 0.05
    total = 8 * cfg.train_dataloader.batch_size
    assert total == cfg.auto_scale_lr.base_batch_size == 4096
    assert optim.optimizer.lr == pytest.approx(1.5e-4 * total / 256)  # the official linear scaling rule
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end, cosine.type, cosine.begin, cosine.end) == ("LinearLR", 40, "CosineAnnealingLR",
                                                                                40, 1600)
    assert warmup.convert_to_iter_based and cosine.convert_to_iter_based and cosine.eta_min == 0
    assert cfg.train_cfg.max_epochs == 1600
    crop = cfg.train_dataloader.dataset.pipeline[1]
    assert (crop.transform, crop.size, crop.scale, crop.interpolation) == ("RandomResizedCrop", 224, (0.2, 1.0),
                                                                           "bicubic")


def test_weight_decay_follows_the_official_rule():
    """timm's add_weight_decay as the official pre-training calls it: no decay on biases and 1-D tensors, which
    in the official (MinkowskiEngine) layout are the LayerNorms only; GRN (1, C) and the mask token are decayed."""
    from mmengine.optim import build_optim_wrapper

    cfg = load_config(ROOT / "configs/fcmae/fcmae_convnextv2-atto_8xb512-1600e_image-folder.py")
    model = MODELS.build(cfg.model)
    with DefaultScope.overwrite_default_scope("cvx2_backbone"):
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g["weight_decay"] for g in wrapper.optimizer.param_groups for p in g["params"]}
    norms = {f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)
             for p in ("weight", "bias")}
    for name, param in model.named_parameters():
        official_no_decay = name.endswith(".bias") or name in norms
        assert decay[id(param)] == (0.0 if official_no_decay else 0.05), name
    assert decay[id(model.mask_token)] == 0.05 and decay[id(model.encoder.stages[0][0].grn.gamma)] == 0.05


def test_auto_scale_lr_counts_accumulated_batches():
    from cvx2_backbone.engine.config import apply_train_args

    cfg = load_config(ROOT / "configs/fcmae/fcmae_convnextv2-base_8xb512-1600e_image-folder.py",
                      {"optim_wrapper.accumulative_counts": 8, "train_dataloader.batch_size": 64})
    apply_train_args(cfg, auto_scale_lr=True)
    # 8 GPUs x 64 x 8 accumulated = 4096: mmengine's ratio (8 x 64) / base must be 1
    assert cfg.auto_scale_lr.enable and 8 * 64 / cfg.auto_scale_lr.base_batch_size == 1


def test_cpu_recipe_builds_and_says_how_it_differs():
    path = ROOT / "configs/fcmae/fcmae_convnextv2-atto_1xb8-cosine-1k_image-folder-cpu.py"
    cfg = load_config(path)
    assert cfg.train_cfg.max_iters == 1000 and cfg.train_dataloader.batch_size == 8
    assert cfg.model.norm_pix_loss is False and cfg.model.init == "convnext"
    text = path.read_text()
    assert "far above the linear scaling rule" in text and "norm_pix_loss=False" in text  # deviations stated
    assert cfg.optim_wrapper.optimizer.lr == 1e-3
    assert isinstance(MODELS.build(cfg.model), FCMAE)


def test_package_exports_and_registries():
    assert cvx2_backbone.FCMAE is FCMAE
    from mmengine.registry import DATASETS, TRANSFORMS
    assert DATASETS.get("cvx2_backbone.ImageFolder") is ImageFolder
    for name in ("LoadImage", "Torchvision", "PackImage"):
        assert TRANSFORMS.get(f"cvx2_backbone.{name}") is not None
    cfg = Config.fromfile(str(FCMAE_CONFIGS[0]))
    assert cfg.custom_imports.imports == ["cvx2_backbone"]
    assert cfg.custom_hooks == [dict(type="cvx2_backbone.PlainCheckpointHook")]


# --- the image folder -------------------------------------------------------------------------
def _write_image(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _folder(root: Path) -> Path:
    _write_image(root / "a.jpg", (80, 64))
    _write_image(root / "nested/deeper/b.PNG", (64, 96), seed=1)
    _write_image(root / "tiny.png", (20, 40))
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "notes.txt").write_text("ignored: not an image name")
    return root


def test_image_folder_finds_nested_images_and_lists_what_it_skips(tmp_path):
    root = _folder(tmp_path / "images")
    pipeline = [dict(type="cvx2_backbone.LoadImage"),
                dict(type="cvx2_backbone.Torchvision", transform="RandomResizedCrop", size=64, scale=(0.2, 1.0),
                     interpolation="bicubic"),
                dict(type="cvx2_backbone.PackImage")]
    dataset = ImageFolder(data_root=str(root), pipeline=pipeline)
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    assert [Path(d["img_path"]).relative_to(root).as_posix() for d in infos] == [
        "a.jpg", "nested/deeper/b.PNG"]
    skipped = {Path(p).name: reason for p, reason in dataset.skipped}
    assert set(skipped) == {"broken.jpg", "tiny.png"}
    assert "not a readable image" in skipped["broken.jpg"] and "smaller than one 32x32 patch" in skipped["tiny.png"]
    sample = dataset[1]
    assert sample["inputs"].shape == (3, 64, 64) and sample["inputs"].dtype == torch.uint8


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images under .*found nothing"):
        ImageFolder(data_root=str(tmp_path / "empty"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/readme.txt").write_text("x")
    with pytest.raises(ValueError, match=re.escape("found 1 other files (e.g. readme.txt)")):
        ImageFolder(data_root=str(tmp_path / "docs"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/x.png").write_bytes(b"\x89PNG broken")
    _write_image(tmp_path / "bad/small.jpg", (31, 100))
    with pytest.raises(ValueError, match="none of the 2 image files .* can be used"):
        ImageFolder(data_root=str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolder(data_root=str(tmp_path / "missing"))


def test_image_folder_reads_a_linked_folder_once(tmp_path):
    root = tmp_path / "images"
    _write_image(root / "real/a.png", (64, 64))
    (root / "again").symlink_to(root / "real")
    (root / "real/loop").symlink_to(root)  # a cycle
    dataset = ImageFolder(data_root=str(root))
    assert len(dataset) == 1
