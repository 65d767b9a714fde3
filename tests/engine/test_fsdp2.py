"""Fully sharded training (``cvx2_backbone.FSDP2Strategy``) on CPU with 2 gloo processes through
tools/dist_train.sh, against DDP on the same data and seed: the same losses and parameters, half the
bytes per rank, the same lr and weight decay per parameter, resuming after a SIGKILL, and a
consolidated checkpoint that mmdet's ``init_detector`` loads.

Drop path and dropout are off, the seed fixed, and training in fp32 (the CPU's "AMP" is bfloat16
autocast), so DDP and FSDP2 differ only in the order of floating-point sums.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cvx2_backbone.datasets import make_ade_shapes, make_coco_shapes
from cvx2_backbone.engine import load_config
from tests.helpers.training import (DET_CONFIG, ROOT, SEG_CONFIG, as_cli, det_options, free_port, seg_options,
                                    short_schedule, small_det_heads)

FSDP2 = {"strategy.type": "cvx2_backbone.FSDP2Strategy"}
RTOL = 1e-5
# decode.acc_seg is the percentage of a batch's labelled pixels (at least one 64x64 crop's) classified right: another
# summation order can break one logit tie the other way (measured on an AVX2-only EPYC: 63.6000 vs 63.5875, one pixel
# of 8000), so accuracies may differ by one pixel; the losses beside them must agree to RTOL.
ONE_PIXEL = 100 / (64 * 64)
# Parameters: Adam divides each gradient by its running magnitude, so for near-zero gradient components the
# summation-order noise of fp32 (gloo's all-reduce under DDP, reduce-scatter under FSDP2) shows up in the step. On an
# AVX2-only EPYC (2026-12-06) the two runs' parameters differed by up to 2.9e-4 after 4 steps that moved them by up
# to 3e-3 (on the AVX-512 machine of issue 22 they agreed to 1e-5): 5e-4 is a sixth of one run's whole update, far
# below what a wrong shard, a lost update or a frozen parameter that moved gives (the whole update, >= 2e-3).
PARAM_ATOL = 5e-4
MAX_ITERS = 4
RECORDERS = "dict(type='RankLosses'), dict(type='RankHoldings'), dict(type='RankParameterSnapshots')"



def _config(folder: Path, base: Path, hooks: str = RECORDERS) -> Path:
    """The real config, plus hooks that record what each rank holds (tests/helpers/rank_snapshots.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{base.stem}_recorded.py"
    path.write_text(f"_base_ = [{str(base)!r}]\n"
                    "custom_imports = dict(imports=['cvx2_backbone', 'tests.helpers.rank_snapshots'],\n"
                    "                      allow_failed_imports=False)\n"
                    f"custom_hooks = [{hooks}]\n")
    return path


def _initial_checkpoint(config: Path, options: dict, path: Path) -> Path:
    """The model's initial weights, which both runs load: mmengine's Runner builds the model before its data
    loaders and FlexibleRunner after them, so the same seed alone would initialise them differently."""
    from mmengine.registry import MODELS, init_default_scope

    cfg = load_config(config, options)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    return path


def _dist_train(config: Path, work: Path, options: dict, *flags: str, expect_success: bool = True) -> str:
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()), CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", "tools/dist_train.sh", str(config), "2", "--work-dir", str(work),
                           *as_cli(options), *flags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == expect_success, f"exit status {proc.returncode}:\n{output[-6000:]}"
    return output


def _losses(work: Path, rank: int) -> dict[int, dict[str, float]]:
    lines = (work / f"losses_rank{rank}.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    return {record.pop("iter"): record for record in records}


def _holdings(work: Path, rank: int) -> dict:
    return json.loads((work / f"holdings_rank{rank}.json").read_text(encoding="utf-8"))


def _assert_same_losses(expected: dict, actual: dict, what: str) -> None:
    assert expected.keys() == actual.keys(), what
    for step in expected:
        assert expected[step].keys() == actual[step].keys(), f"{what}, iteration {step}"
        for name, value in expected[step].items():
            tolerance = dict(abs_tol=ONE_PIXEL) if name.endswith("acc_seg") else dict(rel_tol=RTOL, abs_tol=1e-7)
            assert math.isclose(actual[step][name], value, **tolerance), \
                f"{what}, iteration {step}, {name}: {actual[step][name]} vs {value}"


def _no_randomness() -> dict:
    """Fixed seed, no drop path or dropout, fp32, and gradient clipping that bites (max norm below the norms)."""
    return {"randomness.seed": 0, "model.backbone.drop_path_rate": 0.0, "optim_wrapper.type": "OptimWrapper",
            "optim_wrapper.clip_grad.max_norm": 0.5}


@pytest.fixture(scope="module")
def upernet(tmp_path_factory):
    """UperNet / V2-atto, frozen stem and first stage, trained 4 iterations under DDP and under FSDP2."""
    root = tmp_path_factory.mktemp("fsdp2_upernet")
    info = make_ade_shapes(root / "ade", num_train=4, num_val=2, image_size=64)
    options = {**seg_options(info, size=64), **short_schedule(), **_no_randomness(),
               "model.decode_head.dropout_ratio": 0.0, "model.auxiliary_head.dropout_ratio": 0.0,
               "model.decode_head.channels": 32, "model.auxiliary_head.channels": 16,
               "model.backbone.frozen_stages": 1, "train_cfg.max_iters": MAX_ITERS, "train_cfg.val_interval": MAX_ITERS,
               "default_hooks.checkpoint.interval": 2}
    config = _config(root, SEG_CONFIG)
    options["load_from"] = str(_initial_checkpoint(config, options, root / "init.pth"))
    ddp, fsdp = root / "ddp", root / "fsdp2"
    _dist_train(config, ddp, options)
    output = _dist_train(config, fsdp, {**options, **FSDP2})
    return SimpleNamespace(root=root, config=config, options=options, ddp=ddp, fsdp=fsdp, output=output)


@pytest.mark.slow
def test_upernet_fsdp2_trains_like_ddp(upernet):
    assert "FSDP2: 16 fully_shard units over 2 ranks (12 backbone blocks" in upernet.output
    for rank in (0, 1):
        _assert_same_losses(_losses(upernet.ddp, rank), _losses(upernet.fsdp, rank), f"rank {rank}")
    assert sorted(_losses(upernet.fsdp, 0)) == list(range(1, MAX_ITERS + 1))

    # The consolidated checkpoint holds the same parameters as DDP's model at the end, and plain data only.
    checkpoint = upernet.fsdp / f"iter_{MAX_ITERS}_consolidated.pth"
    consolidated = torch.load(checkpoint, weights_only=True)
    assert set(consolidated) == {"state_dict", "meta"}
    assert consolidated["meta"]["iter"] == MAX_ITERS and consolidated["meta"]["dataset_meta"]["classes"]
    reference = torch.load(upernet.ddp / "params_end_rank0.pth", weights_only=True)
    start = torch.load(upernet.ddp / "params_start_rank0.pth", weights_only=True)
    for name, expected in reference.items():
        torch.testing.assert_close(consolidated["state_dict"][name], expected, rtol=RTOL, atol=PARAM_ATOL, msg=name)
    frozen = [name for name in reference if name.startswith(("backbone.downsample_layers.0.", "backbone.stages.0."))]
    assert frozen and all(torch.equal(consolidated["state_dict"][name], start[name]) for name in frozen)
    trained = [name for name in reference if not torch.equal(reference[name], start[name])]
    assert len(trained) == len(reference) - len(frozen)

    from mmseg.apis import init_model
    model = init_model(str(upernet.fsdp / upernet.config.name), str(checkpoint), device="cpu")
    assert all(torch.equal(value, consolidated["state_dict"][name]) for name, value in model.state_dict().items())


@pytest.mark.slow
def test_upernet_fsdp2_rank_holds_half_and_same_optimizer_groups(upernet):
    ddp = [_holdings(upernet.ddp, rank) for rank in (0, 1)]
    fsdp = [_holdings(upernet.fsdp, rank) for rank in (0, 1)]
    for kind in ("param", "optimizer"):
        total = fsdp[0][f"{kind}_bytes_total"]
        assert total == ddp[0][f"{kind}_bytes_total"] == ddp[0][f"{kind}_bytes_local"] > 0  # DDP: a full copy each
        assert fsdp[0][f"{kind}_bytes_local"] + fsdp[1][f"{kind}_bytes_local"] == total  # FSDP2: disjoint shards
        for rank in (0, 1):
            assert abs(fsdp[rank][f"{kind}_bytes_local"] / total - 0.5) < 0.02, (kind, rank, fsdp[rank])
    assert fsdp[0]["dtensor_params"] == fsdp[0]["params"] == ddp[0]["params"] and ddp[0]["dtensor_params"] == 0
    # Layer-wise lr decay: every trainable parameter has the same lr, weight decay and group under both.
    assert fsdp[0]["settings"] == ddp[0]["settings"]
    assert not any(name.startswith("backbone.stages.0.") for name in fsdp[0]["settings"])  # frozen: no group


@pytest.mark.slow  # two more 2-process runs, about 60-100 s on 2 cores
def test_upernet_fsdp2_resumes_after_sigkill_with_the_same_losses(upernet):
    work = upernet.root / "killed"
    killer = _config(upernet.root / "kill", SEG_CONFIG, RECORDERS + ", dict(type='KillRank', before_iter=3)")
    _dist_train(killer, work, {**upernet.options, **FSDP2}, expect_success=False)
    assert sorted(_losses(work, 0)) == [1, 2]  # rank 0 died before iteration 3
    assert (work / "iter_2.pth" / ".metadata").is_file() and not (work / "iter_4.pth").exists()

    output = _dist_train(upernet.config, work, {**upernet.options, **FSDP2}, "--resume")
    assert "resumed epoch: 0, iter: 2" in output
    for rank in (0, 1):
        resumed = {step: losses for step, losses in _losses(work, rank).items() if step > 2}
        uninterrupted = {step: losses for step, losses in _losses(upernet.fsdp, rank).items() if step > 2}
        _assert_same_losses(uninterrupted, resumed, f"rank {rank} after resuming")
    assert (work / f"iter_{MAX_ITERS}_consolidated.pth").is_file()


@pytest.mark.slow  # two more 2-process runs, about 60-100 s on 2 cores
def test_mask_rcnn_fsdp2_trains_like_ddp_and_loads_in_init_detector(tmp_path):
    from mmdet.apis import init_detector

    info = make_coco_shapes(tmp_path / "coco", num_train=8, num_val=2, image_size=64)
    options = {**det_options(info, size=64), **small_det_heads(32), **short_schedule(), **_no_randomness(),
               "train_cfg.max_epochs": 1}  # 8 images, 2 ranks x 2 per batch: 2 iterations
    config = _config(tmp_path, DET_CONFIG)
    options["load_from"] = str(_initial_checkpoint(config, options, tmp_path / "init.pth"))
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp2"
    _dist_train(config, ddp, options)
    _dist_train(config, fsdp, {**options, **FSDP2})
    for rank in (0, 1):
        _assert_same_losses(_losses(ddp, rank), _losses(fsdp, rank), f"rank {rank}")

    assert sorted(_losses(fsdp, 0)) == [1, 2]
    checkpoint = fsdp / "epoch_1_consolidated.pth"
    model = init_detector(str(fsdp / config.name), str(checkpoint), device="cpu")
    stored = torch.load(checkpoint, weights_only=True)["state_dict"]
    loaded = model.state_dict()
    assert loaded.keys() == stored.keys()
    assert all(torch.equal(loaded[name], stored[name]) for name in stored)
    assert list(model.dataset_meta["classes"]) == list(info["classes"])
    reference = torch.load(ddp / "params_end_rank0.pth", weights_only=True)
    for name, expected in reference.items():
        torch.testing.assert_close(stored[name], expected, rtol=RTOL, atol=PARAM_ATOL, msg=name)
