"""``FSDP2Strategy`` inside mmengine's ``FlexibleRunner`` in this process (world size 1): a ConvNeXt V2 with a
small head trains exactly as under ``SingleDeviceStrategy``, with the same layer-decay groups, writes sharded
and consolidated checkpoints, and runs with a bf16 mixed-precision policy.

Needs torch, mmengine and this package only (no mmcv/mmdet/mmseg): on CPU with gloo in the default
suite, and on a CUDA GPU with NCCL in the ``gpu`` lane (``pytest -m gpu tests/engine/test_fsdp2_runner.py``).
"""
from __future__ import annotations

import math
import runpy
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import FlexibleRunner
from torch import nn
from torch.distributed.tensor import DTensor


import cvx2_backbone  # noqa: F401  (registers the strategy and the optimizer constructor)
from cvx2_backbone import ConvNeXtV2

ROOT = Path(__file__).resolve().parents[2]
ITERS = 3
DEVICES = [pytest.param("cpu", id="cpu-gloo"),
           pytest.param("cuda", id="cuda-nccl", marks=[pytest.mark.gpu, pytest.mark.skipif(
               not torch.cuda.is_available(), reason="needs a CUDA GPU")])]


class TinySegmentor(BaseModel):
    """ConvNeXt V2-atto and a 1x1 classifier on its last stage: the shape of a segmentor, without mmseg."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ConvNeXtV2("atto", drop_path_rate=0.0, out_indices=(3,), frozen_stages=1)
        self.decode_head = nn.Conv2d(320, 4, 1)

    def forward(self, inputs, labels=None, mode="tensor"):
        logits = self.decode_head(self.backbone(inputs)[-1])
        if mode == "loss":
            return {"loss": F.cross_entropy(logits.float(), labels)}
        return logits


class LossLog(Hook):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.losses.append(outputs["loss"].item())


def _batches(count: int = 2 * ITERS):
    generator = torch.Generator().manual_seed(0)
    return [{"inputs": torch.randn(3, 64, 64, generator=generator),
             "labels": torch.randint(0, 4, (2, 2), generator=generator)} for _ in range(count)]


def _train(work_dir, strategy: dict, launcher: str, backend: str) -> tuple[FlexibleRunner, LossLog]:
    torch.manual_seed(0)
    log = LossLog()
    runner = FlexibleRunner(
        model=TinySegmentor(), work_dir=str(work_dir), launcher=launcher, strategy=strategy,
        train_dataloader=dict(dataset=_batches(), sampler=dict(type="DefaultSampler", shuffle=False), batch_size=2,
                              collate_fn=dict(type="default_collate")),
        optim_wrapper=dict(constructor="ConvNeXtLayerDecayOptimizerConstructor",
                           optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05), clip_grad=dict(max_norm=0.5),
                           paramwise_cfg=dict(decay_rate=0.8, decay_type="layer_wise")),
        train_cfg=dict(by_epoch=False, max_iters=ITERS),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=ITERS, by_epoch=False)),
        custom_hooks=[log], env_cfg=dict(dist_cfg=dict(backend=backend)), randomness=dict(seed=0))
    runner.train()
    return runner, log


def _settings(runner) -> dict[str, tuple]:
    names = {id(p): n for n, p in runner.model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"], g["group_name"])
            for g in runner.optim_wrapper.optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("process_group", DEVICES, indirect=True)
def test_fsdp2_strategy_trains_like_a_single_device(process_group, tmp_path):
    plain, plain_log = _train(tmp_path / "single", dict(type="SingleDeviceStrategy"), "none", process_group)
    sharded, sharded_log = _train(tmp_path / "fsdp2", dict(type="cvx2_backbone.FSDP2Strategy"), "pytorch",
                                  process_group)
    assert sharded.strategy.units == [f"backbone.stages.{s}.{b}" for s, d in enumerate((2, 2, 6, 2))
                                      for b in range(d)] + ["backbone", "decode_head", ""]
    assert all(isinstance(p, DTensor) for p in sharded.model.parameters())
    torch.testing.assert_close(torch.tensor(sharded_log.losses), torch.tensor(plain_log.losses), rtol=1e-5, atol=0)
    assert _settings(sharded) == _settings(plain)  # layer-wise lr decay: same groups, lr and weight decay

    final = {name: p.full_tensor().cpu() for name, p in sharded.model.named_parameters()}
    for name, param in plain.model.named_parameters():
        torch.testing.assert_close(final[name], param.detach().cpu(), rtol=1e-5, atol=1e-6, msg=name)

    folder = tmp_path / "fsdp2" / f"iter_{ITERS}.pth"
    assert (folder / ".metadata").is_file()
    written = torch.load(tmp_path / "fsdp2" / f"iter_{ITERS}_consolidated.pth", weights_only=True)
    assert written["meta"]["iter"] == ITERS
    tool = runpy.run_path(str(ROOT / "tools/consolidate_checkpoint.py"))["main"]  # one process, no group needed
    assert tool([str(folder), str(tmp_path / "offline.pth")]) == 0
    assert tool([str(tmp_path)]) == 2  # not a sharded checkpoint: a usage error
    offline = torch.load(tmp_path / "offline.pth", weights_only=True)
    for name, tensor in final.items():
        assert torch.equal(written["state_dict"][name], tensor) and torch.equal(offline["state_dict"][name], tensor)


@pytest.mark.parametrize("process_group", DEVICES, indirect=True)
def test_fsdp2_bf16_mixed_precision_keeps_fp32_shards(process_group, tmp_path):
    _, reference = _train(tmp_path / "fp32", dict(type="cvx2_backbone.FSDP2Strategy"), "pytorch", process_group)
    runner, log = _train(tmp_path / "bf16", dict(type="cvx2_backbone.FSDP2Strategy", mixed_precision="bf16"),
                         "pytorch", process_group)
    assert all(p.dtype == torch.float32 for p in runner.model.parameters())  # sharded master weights stay fp32
    assert all(math.isfinite(v) for v in log.losses)
    torch.testing.assert_close(torch.tensor(log.losses), torch.tensor(reference.losses), rtol=3e-2, atol=0)
    assert log.losses != reference.losses  # the forward really ran in bf16




def test_resume_and_test_tools_handle_sharded_folders(tmp_path):
    from mmengine.config import Config

    from cvx2_backbone.engine.config import ConfigError, apply_test_args
    from cvx2_backbone.engine.resume import newest_loadable
    from cvx2_backbone.engine.runner import check_weights
    from cvx2_backbone.utils.usage import UsageError

    complete, partial = tmp_path / "iter_2.pth", tmp_path / "iter_4.pth"
    for folder in (complete, partial):
        folder.mkdir()
        (folder / ".metadata").write_bytes(b"")
    (complete / "runner_state.pth").write_bytes(b"")  # iter_4 lacks it: the run died before the rename
    (tmp_path / "last_checkpoint").write_text(str(partial))
    point = newest_loadable(tmp_path)
    assert point.path == complete and point.skipped[0][0] == partial
    with pytest.raises(UsageError, match="runner_state.pth missing"):
        check_weights(None, str(partial), what="--resume checkpoint")
    cfg = Config(dict(default_scope="mmdet", test_dataloader=dict(a=1), test_evaluator=dict(a=1),
                      test_cfg=dict(type="TestLoop")))
    with pytest.raises(ConfigError, match="tools/consolidate_checkpoint.py"):
        apply_test_args(cfg, checkpoint=str(complete))
