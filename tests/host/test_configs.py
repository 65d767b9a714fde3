"""Every config under configs/ parses, follows its published recipe (tests.recipes) field by field,
and builds its model and optimizer.

Models are built on the meta device (structure and shapes without memory or init time), each
distinct model once; huge and xlarge are built but never run.
"""
from __future__ import annotations

import copy
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import cvx2_backbone
from cvx2_backbone.engine import adapt_to_cpu, load_config
from tests.recipes import RECIPES, Deviation, check_config, render_markdown, row_problems

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"
# Detection and segmentation configs; FCMAE pre-training configs are checked in tests/fcmae/test_model.py.
CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.py") if "_base_" not in p.parts and p.parent.name != "fcmae")
OFFICIAL_WEIGHTS = re.compile(
    r"^https://dl\.fbaipublicfiles\.com/convnext/("
    r"convnextv2/pt_only/convnextv2_(?P<v2pt>\w+)_1k_224_fcmae\.pt"
    r"|convnextv2/im1k/convnextv2_(?P<v2ft>\w+)_1k_224_ema\.pt"
    r"|convnextv2/im22k/convnextv2_(?P<v2ft22k>\w+)_22k_384_ema\.pt"
    r"|convnext_(?P<v1>\w+)_(1k|22k)_224\.pth)$")
# Model families: the config name's first field. The query-based and single-stage heads are issue 14's.
R_CNN = ("mask-rcnn", "cascade-mask-rcnn")
QUERY_BASED = ("dino-4scale", "dino-5scale", "mask2former")


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIG_DIR))


def _family(path: Path) -> str:
    return path.name.split("_")[0]


@lru_cache(maxsize=None)
def _parsed(path: Path) -> Config:
    return load_config(path)


def _config(path: Path) -> Config:
    """A private copy of the parsed config (parsing resolves mmdet::/mmseg:: bases and is slow)."""
    return copy.deepcopy(_parsed(path))


def _registry(scope: str):
    if scope == "mmdet":
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return MODELS


@lru_cache(maxsize=None)
def _build_on_meta(scope: str, model_text: str) -> torch.nn.Module:
    """Build a model from its config text once per distinct model (1x and 3x variants share one)."""
    model_cfg = Config.fromstring(model_text, ".py").model
    with DefaultScope.overwrite_default_scope(scope), torch.device("meta"):
        return _registry(scope).build(model_cfg)


def _model(cfg: Config) -> torch.nn.Module:
    model_cfg = cfg.model.copy()
    model_cfg.backbone = dict(model_cfg.backbone, init_cfg=None)
    return _build_on_meta(cfg.default_scope, Config(dict(model=model_cfg)).pretty_text)


def test_config_tree_is_complete():
    names = {p.name for p in CONFIGS}
    for size in ("atto", "femto", "pico", "nano", "tiny", "base", "large", "huge"):
        assert f"mask-rcnn_convnextv2-{size}-fcmae_fpn_lsj-3x_coco.py" in names
        crop = 640 if size in ("large", "huge") else 512
        assert f"upernet_convnextv2-{size}-fcmae_8xb2-160k_ade20k-{crop}x{crop}.py" in names
    for size in ("tiny", "base", "large"):
        assert f"cascade-mask-rcnn_convnextv2-{size}-fcmae_fpn_4conv1fc-giou_lsj-3x_coco.py" in names
    assert sum("ms-1x" in n for n in names) >= 4
    assert sum(p.parent.name == "convnext" for p in CONFIGS) >= 10  # the official V1 configs
    for size in ("tiny", "base", "large", "huge"):
        scales, weights = (4, "in1k") if size == "tiny" else (4 if size == "base" else 5, "in22k")
        for epochs in (12, 36):
            assert f"dino-{scales}scale_convnextv2-{size}-{weights}_8xb2-{epochs}e_coco.py" in names
        crop = 640 if size in ("large", "huge") else 512
        assert f"mask2former_convnextv2-{size}-{weights}_8xb2-160k_ade20k-{crop}x{crop}.py" in names
        if size != "huge":
            for task in ("coco-panoptic", "coco"):
                assert f"mask2former_convnextv2-{size}-{weights}_8xb2-lsj-50e_{task}.py" in names
    for size in ("atto", "femto", "pico", "nano", "tiny"):
        for schedule in ("1x", "ms-640-800-3x"):
            assert f"retinanet_convnextv2-{size}-in1k_fpn_{schedule}_coco.py" in names


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_config_names_what_it_holds(path: Path):
    cfg = _config(path)
    backbone = cfg.model.backbone
    assert "cvx2_backbone" in cfg.custom_imports.imports and cfg.custom_imports.allow_failed_imports is False
    assert dict(type="cvx2_backbone.PlainCheckpointHook") in cfg.custom_hooks  # checkpoints any safe load reads
    v2 = path.parent.name == "convnextv2"
    assert backbone.type == ("cvx2_backbone.ConvNeXtV2" if v2 else "cvx2_backbone.ConvNeXt")
    assert backbone.arch in path.name

    if path.parent.name == "dinov3":  # DINOv3 weights (tests/test_configs_dinov3.py checks these configs further)
        assert backbone.init_cfg.checkpoint == f"timm/convnext_{backbone.arch}.dinov3_lvd1689m"
        assert ("-frozen" in path.name) == (backbone.get("frozen_stages", 0) == 4)
    else:
        weights = OFFICIAL_WEIGHTS.match(backbone.init_cfg.checkpoint)
        assert weights, f"not an official weight URL: {backbone.init_cfg.checkpoint}"
        assert backbone.arch == next(v for v in weights.groupdict().values() if v)
        assert ("fcmae" in path.name) == bool(weights["v2pt"])
        assert ("-in22k" in path.name) == ("22k" in backbone.init_cfg.checkpoint)

    optim = cfg.optim_wrapper
    assert optim.constructor == "ConvNeXtLayerDecayOptimizerConstructor"
    assert optim.optimizer.type == "AdamW"
    assert optim.optimizer.weight_decay == (1e-4 if path.name.startswith("dino") else 0.05)  # DINO: mmdet's value
    per_gpu = cfg.train_dataloader.batch_size
    assert cfg.auto_scale_lr.base_batch_size == 8 * per_gpu  # the batch the lr was tuned for: 8 GPUs

    family = _family(path)
    if family.startswith(QUERY_BASED):
        _check_query_based_recipe(cfg, path)
    elif family == "retinanet":
        _check_retinanet_recipe(cfg, path)
    elif cfg.default_scope == "mmdet":
        dims = (cvx2_backbone.V2_ARCHS if v2 else cvx2_backbone.V1_ARCHS)[backbone.arch][1]
        assert list(cfg.model.neck.in_channels) == list(dims)
        assert cfg.train_cfg.max_epochs == (36 if "3x" in path.name else 12)
    else:
        crop = int(re.search(r"ade20k-(\d+)x", path.name).group(1))
        assert cfg.crop_size == (crop, crop) and cfg.model.decode_head.num_classes == 150


# --- the published recipes -----------------------------------------------------------------------

@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_config_follows_its_published_recipe(path: Path):
    """Every field of tests.recipes (optimizer to test mode) as its source publishes it, or as documented."""
    assert check_config(_config(path), _id(path)) == []


def test_every_recipe_row_is_a_shipped_config():
    assert sorted(RECIPES) == sorted(_id(p) for p in CONFIGS)


def test_recipe_check_reports_each_difference():
    name = "convnext/upernet_convnext-tiny-in1k_8xb2-160k_ade20k-512x512.py"
    cfg = _config(CONFIG_DIR / name)
    cfg.model.test_cfg = dict(mode="whole")
    cfg.optim_wrapper.optimizer.lr = 2e-4
    cfg.train_dataloader.dataset.pipeline[3].cat_max_ratio = 1.0
    problems = check_config(cfg, name)
    assert [p.split(": ")[1].split(" ")[0] for p in problems] == ["lr", "train_pipeline", "test_mode"], problems
    assert "step 3" in problems[1] and "(the published recipe)" in problems[2]
    assert check_config(cfg, "convnext/unknown.py")[0].startswith("convnext/unknown.py has no row")

    row = RECIPES["convnextv2/mask-rcnn_convnextv2-atto-fcmae_fpn_lsj-3x_coco.py"]
    stale = replace(row, deviations={**row.deviations, "lr": Deviation(1e-4, "stale")})
    assert row_problems(stale) == ["the deviation of 'lr' equals the published value"]
    assert row_problems(replace(row, published={k: v for k, v in row.published.items() if k != "nms"})) == [
        "the row lacks the field 'nms'"]


def test_poly_schedule_is_the_official_mmcv_one():
    """mmcv's poly (the official configs) runs over all iterations with the warm-up multiplied in; the configs'
    LinearLR + PolyLR(begin=0) give the same lr (mmseg's port, PolyLR from 1500, is up to 0.9% higher)."""
    from mmengine.optim.scheduler import LinearLR, PolyLR

    cfg = _config(CONFIG_DIR / "convnext/upernet_convnext-tiny-in1k_8xb2-160k_ade20k-512x512.py")
    warm, poly = [dict(s) for s in cfg.param_scheduler]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedulers = [LinearLR(optimizer, **{k: v for k, v in warm.items() if k != "type"}),
                  PolyLR(optimizer, **{k: v for k, v in poly.items() if k != "type"})]
    worst = 0.0
    for step in range(3000):  # the warm-up and where the two schedules would part
        official = (1 - step / 160000) * (1e-6 + (1 - 1e-6) * min(step / 1500, 1.0))
        if step > 0:
            worst = max(worst, abs(optimizer.param_groups[0]["lr"] / official - 1))
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    assert worst < 1e-3  # mmengine ends its warm-up one iteration earlier: 1/1500 at most


def test_docs_hold_the_recipe_table():
    assert render_markdown() in (ROOT / "docs" / "training.md").read_text(), (
        "docs/training.md is out of date: paste the output of `python -m tests.recipes`")


def _check_query_based_recipe(cfg: Config, path: Path) -> None:
    """DINO and Mask2Former: the source's optimizer with block-wise decay 0.9 in place of its 0.1x backbone lr."""
    optim = cfg.optim_wrapper
    assert optim.type == "OptimWrapper" and optim.optimizer.lr == 1e-4  # the sources train in fp32
    assert dict(optim.paramwise_cfg, custom_keys=None) == dict(
        decay_rate=0.9, decay_type="block_wise", custom_keys=None,
        **({} if path.name.startswith("dino") else {"norm_decay_mult": 0.0}))
    assert "backbone" not in optim.paramwise_cfg.get("custom_keys", {})  # no flat multiplier on top of the decay
    if path.name.startswith("dino"):
        assert optim.clip_grad.max_norm == 0.1
        levels = int(path.name[len("dino-")])
        assert cfg.model.get("num_feature_levels", 4) == levels == cfg.model.neck.num_outs
        assert len(cfg.model.backbone.out_indices) == levels - 1 if levels == 4 else levels
        epochs = int(re.search(r"-(\d+)e_", path.name).group(1))
        assert cfg.train_cfg.max_epochs == epochs and cfg.param_scheduler[-1].end == epochs
        return
    assert optim.clip_grad.max_norm == 0.01
    assert {k: v.decay_mult for k, v in optim.paramwise_cfg.custom_keys.items()} == dict(
        query_embed=0.0, query_feat=0.0, level_embed=0.0)
    assert list(cfg.model.backbone.out_indices) == [0, 1, 2, 3]
    if cfg.default_scope == "mmdet":
        assert cfg.train_cfg.max_iters == 368750  # 50 epochs at batch 16
        panoptic = path.name.endswith("coco-panoptic.py")
        assert cfg.model.panoptic_head.num_stuff_classes == (53 if panoptic else 0)
        assert cfg.train_dataloader.dataset.type == ("CocoPanopticDataset" if panoptic else "CocoDataset")
    else:
        assert cfg.train_cfg.max_iters == 160000 and cfg.param_scheduler[0].type == "PolyLR"
        crop = int(re.search(r"ade20k-(\d+)x", path.name).group(1))
        assert cfg.crop_size == (crop, crop) and cfg.model.data_preprocessor.size == (crop, crop)
        assert cfg.model.decode_head.num_classes == 150


def _check_retinanet_recipe(cfg: Config, path: Path) -> None:
    """RetinaNet: the V2 Mask R-CNN optimizer (layer-wise 0.95) on mmdet's RetinaNet data and schedules."""
    optim = cfg.optim_wrapper
    assert optim.optimizer.lr == 1e-4 and optim.paramwise_cfg.decay_type == "layer_wise"
    assert optim.paramwise_cfg.decay_rate == 0.95
    assert list(cfg.model.backbone.out_indices) == [1, 2, 3] and cfg.model.neck.num_outs == 5
    assert cfg.model.neck.start_level == 0 and cfg.model.neck.add_extra_convs == "on_input"
    multi_scale = "_ms-640-800-3x" in path.name
    assert cfg.train_cfg.max_epochs == (36 if multi_scale else 12)
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert (resize.type, resize.scale) == (("RandomResize", [(1333, 640), (1333, 800)]) if multi_scale
                                           else ("Resize", (1333, 800)))


def _input_channels(model: torch.nn.Module, family: str) -> list[int]:
    """The channels each head/neck input layer takes, in backbone output order."""
    if family == "mask2former":
        head = getattr(model, "panoptic_head", None) or model.decode_head
        decoder = head.pixel_decoder  # input_convs top-down for the encoder levels, then lateral_convs
        return [c.conv.in_channels for c in reversed([*decoder.input_convs, *decoder.lateral_convs])]
    if family.startswith("dino"):
        return [c.conv.in_channels for c in model.neck.convs]
    return [conv.conv.in_channels for conv in model.neck.lateral_convs]


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_config_builds_model_and_optimizer(path: Path):
    cfg = _config(path)
    model = _model(cfg)
    backbone = model.backbone
    assert isinstance(backbone, cvx2_backbone.ConvNeXt)
    assert isinstance(backbone, cvx2_backbone.ConvNeXtV2) == (path.parent.name == "convnextv2")
    # the neck/decode head takes exactly the backbone's outputs
    family = _family(path)
    if cfg.default_scope == "mmdet" or family == "mask2former":
        assert _input_channels(model, family) == backbone.out_channels
    if family.startswith("dino"):  # and the neck adds the one extra (stride 64) level the transformer expects
        assert len(model.neck.extra_convs) == 1 and model.num_feature_levels == len(backbone.out_channels) + 1
    elif cfg.default_scope == "mmseg" and family != "mask2former":
        assert model.decode_head.in_channels == backbone.out_channels
        assert model.auxiliary_head.in_channels == backbone.out_channels[2]
    # stochastic depth reaches the configured rate at the last block
    last_block = backbone.stages[-1][-1]
    rate = cfg.model.backbone.drop_path_rate
    assert getattr(last_block.drop_path, "drop_prob", 0.0) == pytest.approx(rate)

    # the optimizer (layer-decay constructor, CPU stand-in for AMP) builds on the same parameters
    from mmengine.optim import build_optim_wrapper
    adapt_to_cpu(cfg, "none")  # no-op with CUDA
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lrs = [group["lr"] for group in wrapper.optimizer.param_groups]
    assert max(lrs) == pytest.approx(cfg.optim_wrapper.optimizer.lr)
    if cfg.model.backbone.get("frozen_stages", 0) < len(backbone.depths):  # a frozen backbone has nothing to decay
        assert min(lrs) < max(lrs)  # the decay does reach the backbone
    assert sum(len(g["params"]) for g in wrapper.optimizer.param_groups) == len(
        [p for p in model.parameters() if p.requires_grad])
