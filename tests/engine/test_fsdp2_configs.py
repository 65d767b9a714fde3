"""The FSDP2 switch on the large and huge V2 configs: ``--cfg-options strategy.type=cvx2_backbone.FSDP2Strategy``
(or ``configs/_base_/fsdp2.py``) gives mmengine's FlexibleRunner, and each model, built on the meta device, is
sharded by the plan (every block, the backbone, the heads the host calls by method, the root) with the same
layer-decay groups as unsharded.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import FlexibleRunner


from cvx2_backbone.engine import FSDP2Strategy, build_runner, load_config
from cvx2_backbone.engine.sharding import shard_model

ROOT = Path(__file__).resolve().parents[2]
V2 = ROOT / "configs/convnextv2"
SWITCH = {"strategy.type": "cvx2_backbone.FSDP2Strategy"}
# (config, the units besides the 36 blocks and the root)
CASES = [
    ("mask-rcnn_convnextv2-huge-fcmae_fpn_lsj-3x_coco.py", ["backbone", "neck", "rpn_head", "roi_head"]),
    ("cascade-mask-rcnn_convnextv2-large-fcmae_fpn_4conv1fc-giou_lsj-3x_coco.py",
     ["backbone", "neck", "rpn_head", "roi_head"]),
    ("upernet_convnextv2-huge-fcmae_8xb2-160k_ade20k-640x640.py", ["backbone", "decode_head", "auxiliary_head"]),
    ("mask2former_convnextv2-large-in22k_8xb2-lsj-50e_coco-panoptic.py", ["backbone", "panoptic_head"]),
    ("dino-5scale_convnextv2-huge-in22k_8xb2-12e_coco.py", ["backbone", "neck"]),
]


def _groups(model, optim_cfg) -> dict[str, tuple]:
    """Parameter name -> (lr, weight decay, group) as the config's constructor builds them (AMP aside: CPU)."""
    optim_cfg = copy.deepcopy(optim_cfg)
    for key in ("loss_scale", "dtype"):
        optim_cfg.pop(key, None)
    optim_cfg.type = "OptimWrapper"
    optimizer = build_optim_wrapper(model, optim_cfg).optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"], g["group_name"]) for g in optimizer.param_groups
            for p in g["params"]}


@pytest.mark.slow
@pytest.mark.parametrize("name,heads", CASES, ids=[n.split("_")[0] + ("-huge" if "huge" in n else "-large")
                                                   for n, _ in CASES])
def test_large_configs_shard_with_the_same_lr_decay_groups(process_group, name, heads):
    cfg = load_config(V2 / name, SWITCH)
    assert cfg.strategy.type == "cvx2_backbone.FSDP2Strategy"
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None
    with torch.device("meta"):
        plain, sharded = (MODELS.build(copy.deepcopy(cfg.model)) for _ in range(2))  # DINO edits its config
    expected = _groups(plain, cfg.optim_wrapper)
    units = shard_model(sharded)
    blocks = [f"backbone.stages.{s}.{b}" for s, depth in enumerate(sharded.backbone.depths) for b in range(depth)]
    assert len(blocks) == 36 and units == blocks + heads + [""]
    assert _groups(sharded, cfg.optim_wrapper) == expected


@pytest.mark.slow
def test_fsdp2_base_config_builds_flexible_runner_with_the_strategy(process_group, tmp_path):
    """The inheritable switch; the --cfg-options one runs in tests/engine/test_fsdp2.py."""
    inherited = tmp_path / "upernet_huge_fsdp2.py"
    inherited.write_text(f"_base_ = [{str(V2 / CASES[2][0])!r}, {str(ROOT / 'configs/_base_/fsdp2.py')!r}]\n")
    cfg = load_config(inherited)
    cfg.work_dir, cfg.launcher = str(tmp_path), "pytorch"
    cfg.env_cfg.dist_cfg = dict(backend=process_group)
    runner = build_runner(cfg)
    assert type(runner) is FlexibleRunner and isinstance(runner.strategy, FSDP2Strategy)
    assert runner.strategy.consolidate == "last" and runner.strategy.mixed_precision is None
