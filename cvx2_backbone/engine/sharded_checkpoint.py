"""Sharded training checkpoints (one folder per checkpoint, written by torch.distributed.checkpoint) and their
consolidation into the single file mmdet's and mmseg's own tools load.

A folder ``iter_N.pth/`` holds DCP's shard files and ``.metadata`` for the model and optimizer tensors,
and ``runner_state.pth`` (rank 0) for the rest of mmengine's checkpoint (meta, message hub, schedulers).
It is written under a temporary name and renamed when every rank has finished, so a folder with the
final name is complete. A consolidated file is ``{'state_dict': full tensors, 'meta': plain values}``:
it loads with ``torch.load(weights_only=True)`` and no registered globals.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from cvx2_backbone.utils.files import atomic_path
SHARDED_KEYS = ("state_dict", "optimizer")  # saved through DCP, sharded
RUNNER_STATE = "runner_state.pth"
DCP_METADATA = ".metadata"
CONSOLIDATED_SUFFIX = "_consolidated.pth"


def is_sharded_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a checkpoint folder (complete or not) rather than a file."""
    return Path(path).is_dir()


def sharded_checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why the folder ``path`` is no complete sharded checkpoint (None if it is one)."""
    path = Path(path)
    missing = [name for name in (DCP_METADATA, RUNNER_STATE) if not (path / name).is_file()]
    if missing:
        return f"not a complete sharded checkpoint: {', '.join(missing)} missing"
    return None


def consolidated_path(checkpoint: str | os.PathLike) -> Path:
    """``iter_N.pth`` (a folder) -> ``iter_N_consolidated.pth`` (a file) next to it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(".pth") + CONSOLIDATED_SUFFIX)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_sharded(path: str | os.PathLike, tensors: dict[str, Any], runner_state: dict[str, Any]) -> None:
    """Collective: every rank writes its shards of ``tensors``, rank 0 ``runner_state``; then the folder appears."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.partial")
    if _rank() == 0:
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while saving
    _barrier()
    dcp.save(tensors, checkpoint_id=staging)
    if _rank() == 0:
        torch.save(runner_state, staging / RUNNER_STATE)
    _barrier()
    if _rank() == 0:
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(staging, path)
    _barrier()


def read_runner_state(path: str | os.PathLike) -> dict[str, Any]:
    """The non-tensor part of a sharded checkpoint (meta, message hub, schedulers), read safely."""
    return torch.load(Path(path) / RUNNER_STATE, map_location="cpu", weights_only=True)


def load_sharded(path: str | os.PathLike, tensors: dict[str, Any]) -> dict[str, Any]:
    """Collective: fill ``tensors`` (sharded state dicts of the right layout) in place; return the runner state."""
    problem = sharded_checkpoint_problem(path)
    if problem:
        raise FileNotFoundError(f"{path} is {problem}")
    dcp.load(tensors, checkpoint_id=Path(path))
    return read_runner_state(path)


def plain(value: Any) -> Any:
    """``value`` with only what ``torch.load(weights_only=True)`` reads unaided; numpy becomes Python, the rest goes."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: v for k, v in ((k, plain(v)) for k, v in value.items() if isinstance(k, (str, int)))
                if v is not _DROPPED}
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        if any(v is _DROPPED for v in items):
            return _DROPPED
        return type(value)(items)
    return _DROPPED


_DROPPED = object()


def write_consolidated(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor],
                       meta: Mapping[str, Any]) -> Path:
    """Write ``{'state_dict', 'meta'}`` atomically, every tensor a plain CPU tensor."""
    tensors = {name: tensor.detach().cpu().clone() for name, tensor in state_dict.items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": tensors, "meta": plain(dict(meta))}, tmp)
    return Path(path)


def consolidate(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Turn the sharded checkpoint ``folder`` into one file (default: ``consolidated_path(folder)``), in one
    process without a process group; the optimizer state is not read."""
    problem = sharded_checkpoint_problem(folder)
    if problem:
        raise FileNotFoundError(f"{folder} is {problem}")
    metadata = FileSystemReader(folder).read_metadata()
    model: dict[str, torch.Tensor] = {}
    for key, item in metadata.state_dict_metadata.items():
        route = metadata.planner_data.get(key, (key,))
        if route[0] == "state_dict" and isinstance(item, TensorStorageMetadata):
            model[".".join(str(part) for part in route[1:])] = torch.empty(item.size, dtype=item.properties.dtype)
    dcp.load({"state_dict": model}, checkpoint_id=folder, no_dist=True)
    return write_consolidated(out or consolidated_path(folder), model, read_runner_state(folder).get("meta", {}))
