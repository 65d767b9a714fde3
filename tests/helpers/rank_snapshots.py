"""Hooks for the DDP and FSDP2 tests: what each rank holds, written into the work dir as the run goes."""
import json
import os
import signal
from pathlib import Path

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch.distributed.tensor import DTensor


def _model(runner):
    return getattr(runner.model, "module", runner.model)  # inside DDP


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


@HOOKS.register_module()
class RankParameterSnapshots(Hook):
    """Writes ``params_{start,end}_rank{R}.pth`` (name -> tensor) into the work dir."""

    def before_train(self, runner) -> None:
        self._save(runner, "start")

    def after_train(self, runner) -> None:
        self._save(runner, "end")

    @staticmethod
    def _save(runner, when: str) -> None:
        state = {name: _local(param).detach().clone() for name, param in _model(runner).named_parameters()}
        torch.save(state, Path(runner.work_dir) / f"params_{when}_rank{get_rank()}.pth")


@HOOKS.register_module()
class RankLosses(Hook):
    """Appends ``{"iter": i, loss name: value}`` per training iteration to ``losses_rank{R}.jsonl`` (flushed at
    once, so a killed run keeps what it logged)."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        record = {"iter": runner.iter + 1, **{key: float(value) for key, value in outputs.items()}}
        with open(Path(runner.work_dir) / f"losses_rank{get_rank()}.jsonl", "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")


@HOOKS.register_module()
class RankHoldings(Hook):
    """At the end of training writes ``holdings_rank{R}.json``: the bytes of parameters and optimizer states this
    rank stores (local shards) and in all (global shapes), and every parameter's lr and weight decay."""

    def after_train(self, runner) -> None:
        model = _model(runner)
        optimizer = runner.optim_wrapper.optimizer
        names = {id(param): name for name, param in model.named_parameters()}
        params = list(model.parameters())
        states = [value for state in optimizer.state.values() for value in state.values()
                  if isinstance(value, torch.Tensor) and value.dim() > 0]
        record = {
            "param_bytes_local": sum(_local(p).numel() * p.element_size() for p in params),
            "param_bytes_total": sum(p.numel() * p.element_size() for p in params),
            "optimizer_bytes_local": sum(_local(s).numel() * s.element_size() for s in states),
            "optimizer_bytes_total": sum(s.numel() * s.element_size() for s in states),
            "params": len(params),
            "dtensor_params": sum(isinstance(p, DTensor) for p in params),
            "settings": {names[id(p)]: [group["lr"], group["weight_decay"], group.get("group_name")]
                         for group in optimizer.param_groups for p in group["params"]},
        }
        (Path(runner.work_dir) / f"holdings_rank{get_rank()}.json").write_text(json.dumps(record), encoding="utf-8")


@HOOKS.register_module()
class KillRank(Hook):
    """SIGKILLs rank ``rank`` just before training iteration ``before_iter`` (1-based), as a crash would."""

    def __init__(self, before_iter: int, rank: int = 0) -> None:
        self.before_iter, self.rank = before_iter, rank

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter + 1 == self.before_iter and get_rank() == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)
