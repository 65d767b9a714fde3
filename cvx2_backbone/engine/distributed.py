"""Distributed training without a GPU: gloo process groups and a DDP wrapper for CPU modules.

mmengine's launchers call ``torch.cuda.set_device`` and its default wrapper passes
``device_ids=[LOCAL_RANK]`` to DDP; both fail on a machine without CUDA. On such a machine the
tools start the gloo process group themselves (the Runner then skips its own ``init_dist``) and
wrap the model in :class:`DeviceAwareDDP`. With CUDA nothing here is used and mmengine's NCCL
path runs unchanged.
"""
from __future__ import annotations

import os
import subprocess
from datetime import timedelta

import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from torch import nn

from cvx2_backbone.registry import MODEL_WRAPPERS
from cvx2_backbone.utils.usage import UsageError

LAUNCHERS = ("none", "pytorch", "slurm", "mpi")
DEFAULT_PORT = "29500"


@MODEL_WRAPPERS.register_module()
class DeviceAwareDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that drops ``device_ids`` when the module lives on the CPU.

    DDP accepts ``device_ids`` only for single-GPU modules; the Runner always passes them.
    """

    def __init__(self, module: nn.Module, device_ids: list[int] | None = None, **kwargs) -> None:
        on_cpu = all(p.device.type == "cpu" for p in module.parameters())
        super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)


def _slurm_environment() -> dict[str, str]:
    nodes = os.environ["SLURM_NODELIST"]
    master = os.environ.get("MASTER_ADDR") or subprocess.getoutput(
        f"scontrol show hostname {nodes} | head -n1").strip()
    return {"RANK": os.environ["SLURM_PROCID"], "WORLD_SIZE": os.environ["SLURM_NTASKS"],
            "LOCAL_RANK": os.environ["SLURM_LOCALID"], "MASTER_ADDR": master}


def _mpi_environment() -> dict[str, str]:
    return {"RANK": os.environ["OMPI_COMM_WORLD_RANK"], "WORLD_SIZE": os.environ["OMPI_COMM_WORLD_SIZE"],
            "LOCAL_RANK": os.environ["OMPI_COMM_WORLD_LOCAL_RANK"],
            "MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1")}


def _launcher_environment(launcher: str) -> dict[str, str]:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT as ``env://`` wants them, from the launcher's variables."""
    try:
        if launcher == "pytorch":
            env = {key: os.environ[key] for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
            env["MASTER_ADDR"] = os.environ.get("MASTER_ADDR", "127.0.0.1")
        elif launcher == "slurm":
            env = _slurm_environment()
        else:
            env = _mpi_environment()
    except KeyError as missing:
        raise UsageError(f"--launcher {launcher} needs the environment variable {missing} that its launcher "
                           "sets; start the job with torchrun (tools/dist_train.sh), srun "
                           "(tools/slurm_train.sh) or mpirun, or use --launcher none") from None
    env["MASTER_PORT"] = os.environ.get("MASTER_PORT", DEFAULT_PORT)
    return env


def init_cpu_process_group(launcher: str, timeout_s: float | None = None) -> None:
    """Join the job's gloo process group (CPU-only machines); a no-op when one exists already."""
    if launcher not in LAUNCHERS[1:]:
        raise ValueError(f"launcher must be one of {LAUNCHERS[1:]} for distributed runs, got {launcher!r}")
    if dist.is_initialized():
        return
    os.environ.update(_launcher_environment(launcher))
    kwargs = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
    dist.init_process_group(backend="gloo", init_method="env://", **kwargs)
