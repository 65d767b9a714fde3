"""Resolving a checkpoint reference to local files.

A reference is a local file, a folder (a ``save_pretrained`` folder or a hub snapshot), an http(s)
URL, ``hf://<repo id>[@revision]`` or ``timm/<model>[.<tag>]`` (timm's weights live on the
Hugging Face hub as the repo ``timm/<model>.<tag>``). Safetensors files are preferred wherever a
folder or repo offers both. In a distributed job, local rank 0 of each node downloads first.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cvx2_backbone.weights.errors import CheckpointError, HubUnavailableError
from cvx2_backbone.weights.hub import Downloader, current_downloader, once_per_node

# What a folder or hub repo may hold, best first.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_FORMS = ("a local file or folder, an http(s) URL, hf://<repo id> (Hugging Face hub) or timm/<model>.<tag> "
          "(timm weights, e.g. timm/convnextv2_tiny.fcmae_ft_in22k_in1k)")


@dataclass(frozen=True)
class ResolvedSource:
    """The local files behind a reference: one weights file (or the shards of one) and an optional config.json."""

    reference: str
    weight_files: tuple[Path, ...]
    config_file: Path | None = None

    def read_config(self) -> dict | None:
        """The parsed config.json, if the source has one."""
        if self.config_file is None:
            return None
        try:
            return json.loads(self.config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{self.config_file} is not a readable JSON config: {err}") from err


def resolve_source(source: str | os.PathLike, downloader: Downloader | None = None) -> ResolvedSource:
    """Local files for ``source`` (see the module docstring), downloading hub files and URLs through the cache."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"a checkpoint reference must be a path or a string, got {type(source).__name__}")
    reference = os.fspath(source)
    path = Path(reference).expanduser()
    if path.is_dir():
        return _resolve_folder(reference, path)
    if path.is_file():
        return ResolvedSource(reference, (path,))
    downloader = downloader or current_downloader()
    if reference.startswith("hf://"):
        repo_id, _, revision = reference[len("hf://"):].strip("/").partition("@")
        if repo_id.count("/") > 1 or not repo_id:
            raise ValueError(f"{reference!r} is not a Hugging Face reference; write hf://<owner>/<name>[@revision]")
        return once_per_node(lambda: _resolve_hub(reference, repo_id, revision or None, downloader), reference)
    if reference.startswith("timm/"):
        repo_id = _timm_repo_id(reference)
        return once_per_node(lambda: _resolve_hub(reference, repo_id, None, downloader), reference)
    if reference.startswith(("http://", "https://")):
        return once_per_node(lambda: ResolvedSource(reference, (downloader.url(reference),)), reference)
    raise FileNotFoundError(f"checkpoint {reference!r} not found: no such file or folder. A checkpoint is {_FORMS}")


def _timm_repo_id(reference: str) -> str:
    """``timm/<model>[.<tag>]`` -> the hub repo timm publishes it in (the default tag when none is given)."""
    name = reference[len("timm/"):].strip("/")
    if not name or "/" in name:
        raise ValueError(f"{reference!r} is not a timm reference; write timm/<model>.<tag>, "
                         "e.g. timm/convnextv2_tiny.fcmae_ft_in22k_in1k")
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, allow_unregistered=False)
    if cfg is not None and cfg.hf_hub_id:
        return cfg.hf_hub_id
    if "." not in name:
        import timm
        tags = timm.list_pretrained(f"{name}.*")
        hint = f"; timm knows {', '.join(tags)}" if tags else ""
        raise ValueError(f"{reference!r} names no pretrained tag and timm has no default for {name!r}{hint}")
    return f"timm/{name}"


def _resolve_folder(reference: str, folder: Path) -> ResolvedSource:
    config = folder / "config.json"
    config_file = config if config.is_file() else None
    for name in WEIGHT_FILES:
        candidate = folder / name
        if candidate.is_file():
            files = _shards(candidate, lambda shard: folder / shard) if name.endswith(".json") else (candidate,)
            return ResolvedSource(reference, files, config_file)
    checkpoints = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    safetensors = [p for p in checkpoints if p.suffix == ".safetensors"]
    chosen = safetensors if len(safetensors) == 1 else checkpoints
    if len(chosen) == 1:
        return ResolvedSource(reference, (chosen[0],), config_file)
    found = ", ".join(p.name for p in checkpoints) or "no checkpoint files"
    raise FileNotFoundError(f"folder {folder} holds {found}; expected one of {', '.join(WEIGHT_FILES)} or a single "
                            "checkpoint file: pass the file itself")


def _shards(index_file: Path, locate: Callable[[str], Path]) -> tuple[Path, ...]:
    """The shard files a ``*.index.json`` lists, located with ``locate`` (local folder or downloader)."""
    try:
        weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{index_file} is not a valid shard index (a JSON object with a 'weight_map'): "
                              f"{err}") from err
    paths = tuple(locate(name) for name in names)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"shards listed in {index_file} are missing: {', '.join(missing)}")
    return paths


def _resolve_hub(reference: str, repo_id: str, revision: str | None, downloader: Downloader) -> ResolvedSource:
    """Fetch the best weights file a hub repo offers, its shards if it is sharded, and its config.json."""
    unavailable: HubUnavailableError | None = None
    for name in WEIGHT_FILES:
        try:
            path = Path(downloader.hf_file(repo_id, name, revision))
        except FileNotFoundError:
            continue
        except HubUnavailableError as err:
            unavailable = unavailable or err  # a cached fallback (e.g. pytorch_model.bin) may still be there
            continue
        if name.endswith(".json"):
            files = _shards(path, lambda shard: Path(downloader.hf_file(repo_id, shard, revision)))
        else:
            files = (path,)
        return ResolvedSource(reference, files, _optional_hub_file(downloader, repo_id, "config.json", revision))
    if unavailable is not None:
        raise HubUnavailableError(f"{reference}: {unavailable}") from unavailable
    raise FileNotFoundError(f"{reference}: the Hugging Face repo {repo_id} holds none of {', '.join(WEIGHT_FILES)}")


def _optional_hub_file(downloader: Downloader, repo_id: str, name: str, revision: str | None) -> Path | None:
    try:
        return Path(downloader.hf_file(repo_id, name, revision))
    except (FileNotFoundError, HubUnavailableError):
        return None
