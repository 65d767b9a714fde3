"""A hook for the DDP test: each rank saves its model's parameters when training starts and when it ends."""
from pathlib import Path

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankParameterSnapshots(Hook):
    """Writes ``params_{start,end}_rank{R}.pth`` (name -> tensor) into the work dir."""

    def before_train(self, runner) -> None:
        self._save(runner, "start")

    def after_train(self, runner) -> None:
        self._save(runner, "end")

    @staticmethod
    def _save(runner, when: str) -> None:
        model = getattr(runner.model, "module", runner.model)  # inside DDP
        state = {name: param.detach().clone() for name, param in model.named_parameters()}
        torch.save(state, Path(runner.work_dir) / f"params_{when}_rank{get_rank()}.pth")
