"""Per-GPU training memory of configs under DDP and under FSDP2 (the table in docs/training.md).

    python tools/fsdp2_memory.py CONFIG [CONFIG ...] [--gpus 8] [--measure-size 256]

Computed (from the model built on the meta device): fp32 weights 4 B and fp32 gradients 4 B per parameter,
AdamW's two fp32 moments 8 B per trainable parameter. Under FSDP2 each is divided by the number of GPUs, plus
the all-gathered weights and gradients of the largest unit, twice (the unit running and the one prefetched).
Measured: the backbone's activations (tensors autograd saves for backward, without ``with_cp``) for one image
at ``--measure-size`` on the CPU, scaled by pixel count to the config's training size and images per GPU.
"""
from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout too

import torch  # noqa: E402
from torch import nn  # noqa: E402

GIB = 1024 ** 3


def train_size(cfg: Any) -> tuple[int, int]:
    """The largest training image (h, w): the top-level RandomCrop's size, else the largest resize scale."""
    pipeline = cfg.train_dataloader.dataset.get("pipeline") or cfg.train_dataloader.dataset.dataset.pipeline
    crops = [step["crop_size"] for step in pipeline if step.get("type") == "RandomCrop"]
    if crops:
        return tuple(crops[-1])
    scales: list[tuple[int, int]] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("scale", "scales"):
                value = node.get(key)
                if isinstance(value, (list, tuple)) and value and isinstance(value[0], int):
                    scales.append(tuple(value))
                elif isinstance(value, (list, tuple)):
                    scales.extend(tuple(v) for v in value if isinstance(v, (list, tuple)))
            for value in node.values():
                collect(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                collect(value)

    collect(pipeline)
    # DETR-style (400..600, 4200) scales only bound the short side (keep_ratio); the other branch's 1333x800 is larger
    bounded = [scale for scale in scales if max(scale) <= 2048] or scales
    long, short = max(bounded, key=lambda s: s[0] * s[1])
    return (min(long, short), max(long, short))


def saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for backward during ``model(x)``."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    return sum(size for ptr, size in storages.items() if ptr not in params)


@lru_cache(maxsize=None)
def _backbone_activations(backbone_type: str, arch: str, measure_size: int) -> int:
    """Saved-for-backward bytes of one image at ``measure_size``, training mode, drop path off, no ``with_cp``."""
    from mmengine.registry import MODELS

    backbone = MODELS.build(dict(type=backbone_type, arch=arch, drop_path_rate=0.0)).train()
    return saved_activation_bytes(backbone, torch.randn(1, 3, measure_size, measure_size))


def measure(config: str, gpus: int, measure_size: int) -> dict[str, Any]:
    from mmengine.registry import MODELS, DefaultScope

    from cvx2_backbone.engine import load_config
    from cvx2_backbone.engine.sharding import shard_units

    cfg = load_config(config)
    DefaultScope.get_instance(f"memory-{Path(config).stem}", scope_name=cfg.default_scope)
    cfg.model.backbone.init_cfg = None
    with torch.device("meta"):
        model = MODELS.build(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    owned: set[int] = set()
    largest = 0
    for _, unit in shard_units(model):
        size = sum(p.numel() for p in unit.parameters() if id(p) not in owned)
        owned.update(id(p) for p in unit.parameters())
        largest = max(largest, size)

    per_image = _backbone_activations(cfg.model.backbone.type, cfg.model.backbone.arch, measure_size)
    h, w = train_size(cfg)
    batch = cfg.train_dataloader.batch_size
    activations = per_image * (h * w) / (measure_size ** 2) * batch
    ddp = dict(params=4 * params, grads=4 * trainable, optimizer=8 * trainable)
    fsdp = dict(params=4 * params / gpus, grads=4 * trainable / gpus, optimizer=8 * trainable / gpus,
                gathered=2 * 8 * largest)
    return dict(config=Path(config).stem, params=params, largest_unit=largest, size=(h, w), batch=batch,
                activations=activations, ddp=ddp, fsdp=fsdp)


def markdown(rows: list[dict[str, Any]], gpus: int, measure_size: int) -> str:
    def gib(value: float) -> str:
        return f"{value / GIB:.2f}"

    lines = [f"| config | params | images/GPU, size | DDP: weights + grads + AdamW (computed) | FSDP2 at {gpus} GPUs: "
             "shards + gathered unit (computed) | backbone activations (measured at "
             f"{measure_size}², scaled) | DDP total | FSDP2 total |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        ddp, fsdp = sum(row["ddp"].values()), sum(row["fsdp"].values())
        h, w = row["size"]
        lines.append(f"| {row['config']} | {row['params'] / 1e6:.0f} M | {row['batch']} x {h}x{w} | "
                     f"{gib(row['ddp']['params'])} + {gib(row['ddp']['grads'])} + {gib(row['ddp']['optimizer'])} "
                     f"= {gib(ddp)} | {gib(fsdp - row['fsdp']['gathered'])} + {gib(row['fsdp']['gathered'])} = "
                     f"{gib(fsdp)} | {gib(row['activations'])} | {gib(ddp + row['activations'])} | "
                     f"{gib(fsdp + row['activations'])} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--measure-size", type=int, default=256)
    args = parser.parse_args(argv)
    rows = [measure(config, args.gpus, args.measure_size) for config in args.configs]
    print(markdown(rows, args.gpus, args.measure_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
