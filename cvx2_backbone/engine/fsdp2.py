"""``cvx2_backbone.FSDP2Strategy``: fully sharded training (torch's ``fully_shard``, FSDP2) for mmengine's
``FlexibleRunner``.

The model is cut into units by :mod:`.sharding`, then the optimizer is built on the sharded (DTensor)
parameters by the config's constructor (layer-wise lr decay included: names, shapes and ``requires_grad``
are those of the unsharded model). Checkpoints are folders written by torch.distributed.checkpoint
(:mod:`.sharded_checkpoint`); the last one (or every one) is also consolidated into a single file that
mmdet's and mmseg's tools load. Works on GPUs (NCCL) and on CPUs (gloo).
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

import mmengine
import torch.distributed as dist
from mmengine._strategy import DDPStrategy  # mmengine 0.10 keeps its strategies in a private package
from mmengine.device import get_device
from mmengine.optim import AmpOptimWrapper, BaseOptimWrapper
from mmengine.runner.checkpoint import _load_checkpoint
from mmengine.utils import get_git_hash
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule

from cvx2_backbone.registry import STRATEGIES
from cvx2_backbone.utils.usage import UsageError
from cvx2_backbone.engine.sharded_checkpoint import (consolidated_path, is_sharded_checkpoint, load_sharded,
                                                     save_sharded, write_consolidated)
from cvx2_backbone.engine.sharding import mixed_precision_policy, shard_model

CONSOLIDATE = ("last", "every", "never")


@STRATEGIES.register_module()
class FSDP2Strategy(DDPStrategy):
    """Fully sharded data parallel training with FSDP2 (``torch.distributed.fsdp.fully_shard``).

    Args:
        mixed_precision: None (fp32), ``'bf16'`` or ``'fp16'`` (parameters and compute in that dtype,
            gradient reduction in fp32), or a dict of ``MixedPrecisionPolicy`` arguments.
        offload_to_cpu: keep sharded parameters, gradients and optimizer states in CPU memory.
        reshard_after_forward: torch's default (None) frees every unit but the root after forward.
        shard_heads: shard the neck and heads as units of their own (else they stay in the root unit).
        consolidate: write ``<checkpoint>_consolidated.pth`` for the ``'last'`` checkpoint of the run,
            ``'every'`` checkpoint, or ``'never'``.
        **kwargs: :class:`mmengine._strategy.DDPStrategy`'s (``sync_bn``, ``work_dir``, ...).
    """

    def __init__(self, *, mixed_precision: str | dict | None = None, offload_to_cpu: bool = False,
                 reshard_after_forward: bool | None = None, shard_heads: bool = True, consolidate: str = "last",
                 **kwargs: Any) -> None:
        if consolidate not in CONSOLIDATE:
            raise ValueError(f"FSDP2Strategy consolidate={consolidate!r}; use one of {CONSOLIDATE}")
        mixed_precision_policy(mixed_precision)  # fail on a bad setting before the process group starts
        super().__init__(**kwargs)
        self.mixed_precision = mixed_precision
        self.offload_to_cpu = offload_to_cpu
        self.reshard_after_forward = reshard_after_forward
        self.shard_heads = shard_heads
        self.consolidate = consolidate
        self.units: list[str] = []
        self._resume_optimizer = False

    # --- model and optimizer ---------------------------------------------------------------
    def prepare(self, model, *, optim_wrapper=None, param_scheduler=None, compile=False, dispatch_kwargs=None):
        # mmengine's FlexibleRunner passes an optimizer only to train; test and val runs evaluate
        self._evaluating = optim_wrapper is None
        return super().prepare(model, optim_wrapper=optim_wrapper, param_scheduler=param_scheduler, compile=compile,
                               dispatch_kwargs=dispatch_kwargs)

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        if isinstance(model, FSDPModule):
            return model
        if not dist.is_initialized() and getattr(self, "_evaluating", False):
            # mmdet's / mmseg's own tools/test.py on the config an FSDP2 run wrote, with its consolidated checkpoint:
            # nothing to shard in one process, so the plain model is evaluated
            self.logger.info("FSDP2: one process and nothing to train: the model is evaluated unsharded")
            return self.convert_model(model.to(get_device()))
        if not dist.is_initialized():
            raise UsageError("FSDP2Strategy shards over a process group: start training with tools/dist_train.sh "
                             "CONFIG NUM_GPUS (1 works too) or tools/slurm_train.sh, not plain tools/train.py")
        model = self.convert_model(model.to(get_device()))
        self.units = shard_model(model, mixed_precision=self.mixed_precision, offload_to_cpu=self.offload_to_cpu,
                                 reshard_after_forward=self.reshard_after_forward, shard_heads=self.shard_heads)
        blocks = sum(name.split(".")[-1].isdigit() for name in self.units)
        self.logger.info(f"FSDP2: {len(self.units)} fully_shard units over {dist.get_world_size()} ranks "
                         f"({blocks} backbone blocks; others: {[n or '<root>' for n in self.units[blocks:]]}); "
                         f"mixed precision {self.mixed_precision or 'off'}, CPU offload {self.offload_to_cpu}")
        return model

    def build_optim_wrapper(self, optim_wrapper: Any, model: nn.Module | None = None) -> BaseOptimWrapper:
        """As mmengine's, after sharding (``prepare`` wraps first); AMP's loss scaler is the sharded one."""
        if isinstance(optim_wrapper, dict) and optim_wrapper.get("type") in ("AmpOptimWrapper", AmpOptimWrapper):
            optim_wrapper.setdefault("use_fsdp", True)
        return super().build_optim_wrapper(optim_wrapper, model)

    # --- state dicts -----------------------------------------------------------------------
    def model_state_dict(self) -> dict:
        """This rank's shards (DTensors), keyed like the unsharded model."""
        return get_model_state_dict(self.model)

    def optim_state_dict(self) -> dict:
        """This rank's optimizer state shards, keyed by parameter names."""
        return get_optimizer_state_dict(self.model, self.optim_wrapper.optimizer)

    def load_optim_state_dict(self, state_dict: dict) -> None:
        scaler = state_dict.pop("loss_scaler", None)
        set_optimizer_state_dict(self.model, self.optim_wrapper.optimizer, state_dict)
        if scaler is not None and hasattr(self.optim_wrapper, "loss_scaler"):
            self.optim_wrapper.loss_scaler.load_state_dict(scaler)

    def full_model_state_dict(self) -> dict:
        """Collective: the unsharded weights, on the CPU of rank 0 (other ranks get an empty dict)."""
        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    # --- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, filename: str, *, save_optimizer: bool = True, save_param_scheduler: bool = True,
                        extra_ckpt: dict | None = None, callback: Callable | None = None) -> None:
        """Collective: the sharded folder ``filename`` (see :mod:`.sharded_checkpoint`), and when
        ``consolidate`` asks, ``<filename>_consolidated.pth``."""
        checkpoint = self._runner_checkpoint(extra_ckpt)
        checkpoint["state_dict"] = self.model_state_dict()
        if save_optimizer and hasattr(self, "optim_wrapper"):
            checkpoint["optimizer"] = self.optim_state_dict()
            scaler = getattr(self.optim_wrapper, "loss_scaler", None)
            if scaler is not None:
                checkpoint["loss_scaler"] = scaler.state_dict()
        if save_param_scheduler and hasattr(self, "param_schedulers"):
            checkpoint["param_schedulers"] = self.scheduler_state_dict()
        if callback is not None:
            callback(checkpoint)
        tensors = {key: checkpoint.pop(key) for key in ("state_dict", "optimizer") if key in checkpoint}
        save_sharded(filename, tensors, checkpoint)
        if self._consolidate_now(checkpoint["meta"]):
            self.save_consolidated(consolidated_path(filename), checkpoint["meta"])

    def save_consolidated(self, path: str | Path, meta: dict | None = None) -> Path:
        """Collective: write the full weights to the single file ``path`` (rank 0), as mmdet/mmseg load them."""
        state_dict = self.full_model_state_dict()
        if dist.get_rank() == 0:
            write_consolidated(path, state_dict, meta if meta is not None else self._runner_checkpoint(None)["meta"])
            self.logger.info(f"FSDP2: consolidated weights written to {path}")
        dist.barrier()
        return Path(path)

    def _runner_checkpoint(self, extra_ckpt: dict | None) -> dict:
        checkpoint = dict(extra_ckpt or {})
        meta = dict(checkpoint.get("meta", {}))
        # the fields mmengine's strategies add
        meta.update(seed=self.seed, time=time.strftime("%Y%m%d_%H%M%S", time.localtime()),
                    mmengine=mmengine.__version__ + get_git_hash())
        checkpoint["meta"] = meta
        return checkpoint

    def _consolidate_now(self, meta: dict) -> bool:
        if self.consolidate == "every":
            return True
        last = self.dispatch_kwargs.get("max_iters")
        return self.consolidate == "last" and last is not None and meta.get("iter", -1) >= last

    def load_checkpoint(self, filename: str, *, map_location: Any = "cpu", strict: bool = False,
                        revise_keys: list = [(r"^module.", "")], callback: Callable | None = None) -> dict:
        """A sharded folder (this strategy's) or any single-file checkpoint of the model (e.g. ``load_from``)."""
        self.logger.info(f"Load checkpoint from {filename}")
        if is_sharded_checkpoint(filename):
            tensors = {"state_dict": get_model_state_dict(self.model)}
            if self._resume_optimizer:
                tensors["optimizer"] = self.optim_state_dict()
            checkpoint = {**load_sharded(filename, tensors), **tensors}
            if "optimizer" in checkpoint and "loss_scaler" in checkpoint:
                checkpoint["optimizer"]["loss_scaler"] = checkpoint.pop("loss_scaler")
            if callback is not None:
                callback(checkpoint)
            set_model_state_dict(self.model, checkpoint.pop("state_dict"))
            return checkpoint
        checkpoint = _load_checkpoint(filename, map_location="cpu")
        if callback is not None:
            callback(checkpoint)
        state_dict = checkpoint.pop("state_dict")
        for pattern, replacement in revise_keys:
            state_dict = {re.sub(pattern, replacement, key): value for key, value in state_dict.items()}
        result = set_model_state_dict(self.model, state_dict,
                                      options=StateDictOptions(full_state_dict=True, strict=strict))
        if result.missing_keys or result.unexpected_keys:
            self.logger.warning(f"{filename}: missing keys {result.missing_keys}, unexpected keys "
                                f"{result.unexpected_keys}")
        return checkpoint

    def resume(self, filename: str, *, resume_optimizer: bool = True, resume_param_scheduler: bool = True,
               map_location: Any = "default", callback: Callable | None = None) -> dict:
        """mmengine's resume (optimizer, schedulers, seed) from a sharded folder written by this strategy."""
        if not is_sharded_checkpoint(filename):
            raise UsageError(f"FSDP2Strategy resumes from the sharded checkpoint folders it writes, and {filename} "
                             "is a file; start from its weights with --load-from instead")
        self._resume_optimizer = resume_optimizer
        try:
            return super().resume(filename, resume_optimizer=resume_optimizer,
                                  resume_param_scheduler=resume_param_scheduler, map_location=map_location,
                                  callback=callback)
        finally:
            self._resume_optimizer = False
