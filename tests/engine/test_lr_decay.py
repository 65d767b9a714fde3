"""Layer-wise lr decay: rules, the optimizer constructor on a real Mask R-CNN and UperNet, errors, table, CLI."""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, DefaultScope
from torch import nn

import cvx2_backbone
from cvx2_backbone.cli.commands import lr_groups
from cvx2_backbone.engine.config import read_config
from cvx2_backbone.engine.optimizers import ConvNeXtLayerDecayOptimizerConstructor

LR, WD, RATE = 1e-4, 0.05, 0.9
ATTO_DIMS = [40, 80, 160, 320]

DET_CONFIG = f"""
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
default_scope = 'mmdet'
custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='cvx2_backbone.ConvNeXtV2', arch='atto', drop_path_rate=0.1),
    neck=dict(in_channels={ATTO_DIMS}))
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr={LR}, weight_decay={WD}),
    constructor='ConvNeXtLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate={RATE}, decay_type='layer_wise'))
"""

SEG_CONFIG = f"""
_base_ = ['mmseg::_base_/models/upernet_r50.py']
default_scope = 'mmseg'
custom_imports = dict(imports=['cvx2_backbone'], allow_failed_imports=False)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(_delete_=True, type='cvx2_backbone.ConvNeXtV2', arch='atto'),
    decode_head=dict(in_channels={ATTO_DIMS}, channels=64, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels={ATTO_DIMS[2]}, channels=32, norm_cfg=norm_cfg))
"""


def _build(config_text: str, path: Path) -> nn.Module:
    path.write_text(config_text)
    cfg = read_config(path)  # mmseg:: bases resolve on the forks too
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(cfg.model)


@pytest.fixture(scope="module")
def det_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("lr_decay") / "mask_rcnn_cvx2_atto.py"
    path.write_text(DET_CONFIG)
    return path


@pytest.fixture(scope="module")
def detector(det_config):
    return _build(DET_CONFIG, det_config)


@pytest.fixture(scope="module")
def segmentor(tmp_path_factory):
    return _build(SEG_CONFIG, tmp_path_factory.mktemp("lr_decay") / "upernet_cvx2_atto.py")


def _constructor(decay_type="layer_wise", lr=LR, **paramwise) -> ConvNeXtLayerDecayOptimizerConstructor:
    return ConvNeXtLayerDecayOptimizerConstructor(
        dict(optimizer=dict(type="AdamW", lr=lr, weight_decay=WD)),
        dict(decay_rate=RATE, decay_type=decay_type, **paramwise))


def _settings(groups, model) -> dict[str, tuple[float, float, int | None]]:
    """parameter name -> (lr, weight decay, layer id) from a list of param groups."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"], g.get("layer_id")) for g in groups for p in g["params"]}


def _groups(model, decay_type="layer_wise", **paramwise) -> list[dict]:
    params: list[dict] = []
    _constructor(decay_type, **paramwise).add_params(params, model)
    return params


def _small_backbone(**kwargs) -> cvx2_backbone.ConvNeXtV2:
    kwargs.setdefault("arch", dict(depths=[1, 1, 2, 1], dims=[8, 16, 32, 64]))
    return cvx2_backbone.ConvNeXtV2(**kwargs)


class Detector(nn.Module):
    """The smallest model with a ``backbone`` attribute and a head, as mmdet's constructor expects."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(8, 4, 1)


# Chosen parameters of Mask R-CNN with atto (depths 2, 2, 6, 2): layer ids in layer_wise / stage_wise /
# block_wise with the default num_layers (5 / 5 / 12), worked out by hand from docs/lr_decay.md.
EXPECTED_IDS = {
    "backbone.downsample_layers.0.0.weight": (0, 0, 1),
    "backbone.stages.0.1.dwconv.weight": (1, 1, 2),
    "backbone.downsample_layers.1.1.weight": (2, 0, 3),
    "backbone.stages.1.1.pwconv2.weight": (2, 2, 4),
    "backbone.downsample_layers.2.1.bias": (3, 0, 5),
    "backbone.stages.2.2.grn.gamma": (3, 3, 7),
    "backbone.stages.2.3.pwconv1.weight": (4, 3, 8),
    "backbone.stages.2.5.norm.weight": (4, 3, 10),
    "backbone.downsample_layers.3.1.weight": (5, 0, 11),
    "backbone.stages.3.1.pwconv2.bias": (5, 4, 12),
    "backbone.norm3.weight": (6, 6, 13),
    "neck.fpn_convs.0.conv.weight": (6, 6, 13),
    "roi_head.mask_head.conv_logits.weight": (6, 6, 13),
}
DEFAULT_NUM_LAYERS = {"layer_wise": 5, "stage_wise": 5, "block_wise": 12}


@pytest.mark.parametrize("mode", range(3), ids=["layer_wise", "stage_wise", "block_wise"])
def test_layer_ids_and_scales_on_mask_rcnn(detector, mode):
    decay_type = ("layer_wise", "stage_wise", "block_wise")[mode]
    num_layers = DEFAULT_NUM_LAYERS[decay_type]
    settings = _settings(_groups(detector, decay_type), detector)
    for name, ids in EXPECTED_IDS.items():
        lr, _, layer_id = settings[name]
        assert layer_id == ids[mode], name
        assert lr == pytest.approx(LR * RATE ** (num_layers + 1 - ids[mode])), name
    assert max(lr for lr, _, _ in settings.values()) == pytest.approx(LR)


def test_given_num_layers_moves_the_last_stage(detector):
    settings = _settings(_groups(detector, num_layers=12), detector)  # the official value for T..H
    assert settings["backbone.stages.3.0.dwconv.weight"][2] == 12
    assert settings["backbone.downsample_layers.3.1.weight"][2] == 12
    assert settings["backbone.stages.2.5.pwconv1.weight"][2] == 4
    assert settings["neck.fpn_convs.0.conv.weight"][:3:2] == (LR, 13)
    assert settings["backbone.stages.0.0.dwconv.weight"][0] == pytest.approx(LR * RATE ** 12)


def test_segmentor_and_get_layer_depth(segmentor):
    """UperNet: heads at scale 1; the backbone's mmpretrain-style hook gives the same scales as layer_wise."""
    settings = _settings(_groups(segmentor), segmentor)
    backbone = segmentor.backbone
    for name, (lr, _, layer_id) in settings.items():
        depth, count = backbone.get_layer_depth(name, "backbone.")
        assert (depth, count) == (layer_id, 7), name
        assert lr == pytest.approx(LR * RATE ** (count - depth - 1)), name  # mmpretrain's formula
    assert settings["decode_head.conv_seg.weight"][0] == LR
    assert settings["auxiliary_head.conv_seg.weight"][0] == LR
    assert settings["backbone.stages.2.4.pwconv1.weight"][2] == 4


def test_weight_decay_rules(detector):
    settings = _settings(_groups(detector), detector)
    no_decay = ["backbone.downsample_layers.0.0.bias", "backbone.downsample_layers.1.0.weight",
                "backbone.stages.0.0.norm.weight", "backbone.stages.0.0.grn.gamma", "backbone.stages.0.0.grn.beta",
                "backbone.stages.0.0.pwconv1.bias", "backbone.norm0.bias", "neck.lateral_convs.0.conv.bias",
                "rpn_head.rpn_conv.bias"]
    decay = ["backbone.downsample_layers.0.0.weight", "backbone.stages.0.0.dwconv.weight",
             "backbone.stages.0.0.pwconv1.weight", "neck.lateral_convs.0.conv.weight",
             "roi_head.bbox_head.fc_cls.weight", "roi_head.mask_head.conv_logits.weight"]
    assert all(settings[n][1] == 0.0 for n in no_decay)
    assert all(settings[n][1] == WD for n in decay)
    params = dict(detector.named_parameters())
    for name, (_, wd, _) in settings.items():
        if params[name].dim() <= 1:
            assert wd == 0.0, name


def test_no_decay_for_grn_and_layer_scale_whatever_their_shape():
    """The documented fix: mmdet decays GRN stored as (1, 1, 1, C) (official layout); we never do."""
    from mmdet.engine.optimizers import LearningRateDecayOptimizerConstructor

    model = Detector(_small_backbone())
    grn = model.backbone.stages[2][1].grn
    grn.gamma = nn.Parameter(grn.gamma.detach().view(1, 1, 1, -1))
    grn.beta = nn.Parameter(grn.beta.detach().view(1, 1, 1, -1))
    v1 = cvx2_backbone.ConvNeXt(arch=dict(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64]))
    block = v1.stages[1][0]
    block.gamma = nn.Parameter(block.gamma.detach().view(1, -1))
    ours = {**_settings(_groups(model), model), **_settings(_groups(v1), v1)}
    for name in ("backbone.stages.2.1.grn.gamma", "backbone.stages.2.1.grn.beta", "stages.1.0.gamma",
                 "stages.0.0.gamma"):
        assert ours[name][1] == 0.0, name
    reference = LearningRateDecayOptimizerConstructor(dict(optimizer=dict(type="AdamW", lr=LR, weight_decay=WD)),
                                                      dict(decay_rate=RATE, num_layers=5))
    mmdet_groups: list[dict] = []
    reference.add_params(mmdet_groups, model)
    assert _settings(mmdet_groups, model)["backbone.stages.2.1.grn.gamma"][1] == WD


@pytest.mark.parametrize("decay_type,num_layers", [("layer_wise", None), ("layer_wise", 12),
                                                   ("stage_wise", None), ("stage_wise", 9)])
def test_same_as_mmdet_and_mmseg(detector, segmentor, decay_type, num_layers):
    """Every parameter gets the lr and weight decay of mmdet's (Mask R-CNN) and mmseg's (UperNet) constructor."""
    from mmdet.engine.optimizers import LearningRateDecayOptimizerConstructor as MMDetConstructor
    from mmseg.engine.optimizers import LearningRateDecayOptimizerConstructor as MMSegConstructor

    given = {} if num_layers is None else {"num_layers": num_layers}
    reference_cfg = dict(decay_rate=RATE, decay_type=decay_type, num_layers=num_layers or 5)
    for model, reference_type in ((detector, MMDetConstructor), (segmentor, MMSegConstructor)):
        reference: list[dict] = []
        reference_type(dict(optimizer=dict(type="AdamW", lr=LR, weight_decay=WD)),
                       reference_cfg).add_params(reference, model)
        expected = {n: (lr, wd) for n, (lr, wd, _) in _settings(reference, model).items()}
        ours = {n: (pytest.approx(lr), wd) for n, (lr, wd, _) in _settings(_groups(model, decay_type, **given),
                                                                             model).items()}
        assert len(ours) == len(list(model.parameters()))
        assert ours == expected


@pytest.mark.parametrize("decay_type,too_small,needed", [("layer_wise", 4, 5), ("stage_wise", 3, 4),
                                                         ("block_wise", 11, 12)])
def test_num_layers_too_small(detector, decay_type, too_small, needed):
    with pytest.raises(ValueError, match=rf"num_layers={too_small} is too small.*num_layers >= {needed}"):
        _groups(detector, decay_type, num_layers=too_small)
    assert _groups(detector, decay_type, num_layers=needed)


def test_mmdet_accepts_scales_above_one(detector):
    """The trap the num_layers check closes: mmdet silently gives lr scales > 1."""
    from mmdet.engine.optimizers import LearningRateDecayOptimizerConstructor

    groups: list[dict] = []
    LearningRateDecayOptimizerConstructor(dict(optimizer=dict(type="AdamW", lr=LR, weight_decay=WD)),
                                          dict(decay_rate=RATE, num_layers=2)).add_params(groups, detector)
    assert max(g["lr_scale"] for g in groups) > 1


@pytest.mark.parametrize("paramwise,error,message", [
    (dict(decay_type="layerwise"), ValueError, "unknown decay_type 'layerwise'"),
    (dict(decay_rate=0.0), ValueError, r"decay_rate must be in \(0, 1\]"),
    (dict(decay_rate=1.5), ValueError, r"decay_rate must be in \(0, 1\]"),
    (dict(decay_rate="0.9"), TypeError, "decay_rate must be a number"),
    (dict(decay_rate=None), TypeError, "decay_rate must be a number"),
    (dict(decay_rates=0.9), ValueError, r"unknown paramwise_cfg keys \['decay_rates'\]"),
    (dict(norm_decay_mult=1.0), ValueError, "never decays biases, norms"),
    (dict(num_layers=0), ValueError, "num_layers must be a positive int"),
    (dict(num_layers=6.0), TypeError, "num_layers must be a positive int"),
])
def test_bad_settings(paramwise, error, message):
    cfg = {"decay_rate": RATE, **paramwise}
    with pytest.raises(error, match=message):
        ConvNeXtLayerDecayOptimizerConstructor(dict(optimizer=dict(type="AdamW", lr=LR)), cfg)


def test_missing_decay_rate_and_lr():
    with pytest.raises(ValueError, match="needs paramwise_cfg=dict\\(decay_rate"):
        ConvNeXtLayerDecayOptimizerConstructor(dict(optimizer=dict(type="AdamW", lr=LR)), None)
    with pytest.raises(ValueError, match="optimizer has no 'lr'"):
        ConvNeXtLayerDecayOptimizerConstructor(dict(optimizer=dict(type="Adafactor")), dict(decay_rate=RATE))


def test_model_without_or_with_two_backbones():
    with pytest.raises(TypeError, match="Sequential has none"):
        _groups(nn.Sequential(nn.Conv2d(3, 8, 3)))
    two = nn.ModuleDict(dict(rgb=_small_backbone(), depth=_small_backbone()))
    with pytest.raises(ValueError, match="found 2 ConvNeXt backbones"):
        _groups(two)


def test_bare_backbone_frozen_stages_and_ddp(tmp_path):
    """A bare backbone gets the same ids as inside a detector; frozen parameters stay out; DDP is unwrapped."""
    backbone = _small_backbone(frozen_stages=1)
    bare = _settings(_groups(backbone), backbone)
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert set(bare) == trainable and not any(n.startswith(("stages.0.", "downsample_layers.0.")) for n in bare)
    wrapped = Detector(backbone)
    inside = _settings(_groups(wrapped), wrapped)
    in_backbone = {n: s for n, s in inside.items() if n.startswith("backbone.")}
    assert {f"backbone.{n}": s for n, s in bare.items()} == in_backbone
    assert inside["head.weight"][:3:2] == (LR, 5)  # depths [1, 1, 2, 1]: num_layers 4

    started = not torch.distributed.is_initialized()
    if started:
        torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(wrapped)
        optim_wrapper = build_optim_wrapper(ddp, dict(
            optimizer=dict(type="AdamW", lr=LR, weight_decay=WD),
            constructor="ConvNeXtLayerDecayOptimizerConstructor", paramwise_cfg=dict(decay_rate=RATE)))
        assert _settings(optim_wrapper.optimizer.param_groups, wrapped) == inside
        direct: list[dict] = []
        _constructor().add_params(direct, ddp)
        assert _settings(direct, wrapped) == inside
    finally:
        if started:
            torch.distributed.destroy_process_group()


@pytest.mark.parametrize("depths,expected", [
    # per decay_type: ids of downsample_layers.i, of every block stage by stage, of the output norms
    ([1, 4, 1], dict(layer_wise=([0, 2, 4], [1, 2, 2, 2, 3, 4], 5), stage_wise=([0, 0, 0], [1, 2, 2, 2, 2, 3], 5),
                     block_wise=([1, 2, 6], [1, 2, 3, 4, 5, 6], 7))),
    ([3], dict(layer_wise=([0], [1, 1, 1], 2), stage_wise=([0], [1, 1, 1], 2), block_wise=([1], [1, 2, 3], 4))),
])
def test_any_number_of_stages(depths, expected):
    backbone = cvx2_backbone.ConvNeXtV2(arch=dict(depths=depths, dims=[8 * 2 ** i for i in range(len(depths))]))
    for decay_type, (downsample_ids, block_ids, head_id) in expected.items():
        settings = _settings(_groups(backbone, decay_type), backbone)
        assert [settings[f"downsample_layers.{i}.0.weight"][2] for i in range(len(depths))] == downsample_ids
        assert [settings[f"stages.{s}.{b}.dwconv.weight"][2]
                for s, d in enumerate(depths) for b in range(d)] == block_ids
        assert settings[f"norm{len(depths) - 1}.weight"][:3:2] == (LR, head_id)


def test_custom_keys_compose(detector):
    settings = _settings(_groups(detector, custom_keys={"neck": dict(lr_mult=0.5, decay_mult=2.0)}), detector)
    assert settings["neck.fpn_convs.0.conv.weight"][:2] == (pytest.approx(LR * 0.5), pytest.approx(2 * WD))
    assert settings["neck.fpn_convs.0.conv.bias"][:2] == (pytest.approx(LR * 0.5), 0.0)
    assert settings["backbone.stages.3.0.pwconv1.weight"][:2] == (pytest.approx(LR * RATE), WD)


def _table_rows(table: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in table.splitlines() if re.match(r"layer_\d+_", line)}


def test_table_is_logged_once_when_the_optimizer_is_built(detector):
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with DefaultScope.overwrite_default_scope("mmdet"):
            optim_wrapper = build_optim_wrapper(detector, dict(
                optimizer=dict(type="AdamW", lr=LR, weight_decay=WD),
                constructor="ConvNeXtLayerDecayOptimizerConstructor", paramwise_cfg=dict(decay_rate=RATE)))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    tables = [r for r in records if "Layer-wise lr decay" in r]
    assert len(tables) == 1
    rows = _table_rows(tables[0])
    groups = optim_wrapper.optimizer.param_groups
    assert len(rows) == len(groups) == 14  # layers 0..6, each with and without weight decay
    for group in groups:
        row = rows[group["group_name"]]
        assert int(row[1]) == group["layer_id"]
        assert float(row[2]) == pytest.approx(RATE ** (6 - group["layer_id"]), rel=1e-3)
        assert float(row[4]) == group["weight_decay"]
        assert int(row[6].replace(",", "")) == sum(p.numel() for p in group["params"])
    total = tables[0].splitlines()[-1].split()
    assert int(total[-1].replace(",", "")) == sum(p.numel() for p in detector.parameters() if p.requires_grad)


def test_lr_groups_command(det_config, detector, capsys):
    parser = argparse.ArgumentParser()
    lr_groups.add_arguments(parser)
    args = parser.parse_args([str(det_config), "--cfg-options", "optim_wrapper.paramwise_cfg.decay_type=block_wise"])
    assert lr_groups.run(args) == 0
    out = capsys.readouterr().out
    assert "decay_type=block_wise" in out and "num_layers=12 (derived from depths)" in out
    rows = _table_rows(out)
    assert {int(r[1]) for r in rows.values()} == set(range(1, 14))
    assert float(rows["layer_13_decay"][2]) == 1.0 and float(rows["layer_1_decay"][2]) == pytest.approx(RATE ** 12,
                                                                                                        rel=1e-3)
    total = int(out.strip().splitlines()[-1].split()[-1].replace(",", ""))
    assert total == sum(p.numel() for p in detector.parameters())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lr_groups.run(parser.parse_args([str(det_config.with_name("missing.py"))]))
