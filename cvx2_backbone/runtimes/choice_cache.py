"""Where ``runtime='auto'`` keeps what it measured: one JSON file per machine identity and model, written atomically.

The key holds everything that can change which engine is fastest or whether it is exact: the CPU (model name,
flags, torch's kernel level), the thread count, the versions of torch, ONNX Runtime, OpenVINO and this package, and
a digest of the model (architecture and every weight). Another machine or another model never reuses a choice.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from cvx2_backbone.utils.files import write_atomic
from cvx2_backbone.utils.machine import cpu_flags_digest, cpu_model_name, package_version

CACHE_ENV = "CVX2_CACHE_DIR"
_VERSIONED = ("torch", "onnxruntime", "openvino", "onnx", "cvx2_backbone")


def cache_dir() -> Path:
    """``$CVX2_CACHE_DIR``, else ``$XDG_CACHE_HOME/cvx2_backbone``, else ``~/.cache/cvx2_backbone``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cvx2_backbone"


def machine_identity(threads: int) -> dict[str, Any]:
    """What about this machine and process decides engine speed and exactness."""
    return {"cpu": cpu_model_name(), "cpu_flags": cpu_flags_digest(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), "threads": int(threads),
            **{package: package_version(package) for package in _VERSIONED}}


def model_digest(model: nn.Module) -> str:
    """SHA-256 of a model's architecture (its repr) and every tensor of its state dict (names, shapes, bytes)."""
    digest = hashlib.sha256(repr(model).encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class ChoiceCache:
    """The measured choices (``{bucket: record}``) of one model on one machine, in ``<dir>/engines/<key>.json``."""

    def __init__(self, identity: Mapping[str, Any], digest: str, folder: Path | None = None) -> None:
        self.identity, self.digest = dict(identity), digest
        key = hashlib.sha256(json.dumps([self.identity, digest], sort_keys=True).encode()).hexdigest()[:32]
        self.path = (folder or cache_dir()) / "engines" / f"{key}.json"

    def load(self) -> dict[str, Any]:
        """The recorded choices; an unreadable or foreign file counts as empty (it is rewritten)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if data.get("identity") != self.identity or data.get("model") != self.digest:
            return {}
        return dict(data.get("choices", {}))

    def store(self, bucket: str, record: Mapping[str, Any]) -> None:
        """Add one bucket's record to what is on disk (read, merge, atomic rename)."""
        choices = self.load()
        choices[bucket] = dict(record)
        text = json.dumps({"identity": self.identity, "model": self.digest, "choices": choices}, indent=1)
        write_atomic(self.path, text.encode())
