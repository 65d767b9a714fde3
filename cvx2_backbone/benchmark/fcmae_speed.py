"""How long an FCMAE training step takes next to a plain dense forward + backward of the same backbone.

Cases, timed interleaved (round robin) in one process, on the same random weights and batch:

* ``dense-backbone``: the plain ConvNeXt V2 forward + backward (no mask, no decoder);
* ``fcmae-dense``: an FCMAE step (mask, encoder, decoder, loss, backward) with every encoder layer on the full map;
* ``fcmae-gather``: the same step with LayerNorm, MLP and GRN on visible sites only (identical values).
Used by tools/benchmark_fcmae.py.
"""
from __future__ import annotations

import argparse
import statistics
from typing import Callable, Sequence

import torch

from cvx2_backbone.benchmark.models import randomize_
from cvx2_backbone.benchmark.run import _device, time_interleaved
from cvx2_backbone.utils.machine import torch_threads
from cvx2_backbone.models.convnext import ConvNeXtV2
from cvx2_backbone.fcmae.model import FCMAE

CASES = ("dense-backbone", "fcmae-dense", "fcmae-gather")


def _steps(arch: str, batch: int, resolution: int, device: torch.device, seed: int) -> dict[str, Callable[[], None]]:
    torch.manual_seed(seed)
    images = torch.randn(batch, 3, resolution, resolution, device=device)
    models = {impl: randomize_(FCMAE(arch=arch, masked_impl=impl), seed).to(device).train()
              for impl in ("dense", "gather")}
    backbone = ConvNeXtV2(arch=arch, out_indices=(-1,), out_norm=False).to(device).train()
    backbone.load_state_dict(models["dense"].encoder.state_dict())
    mask = models["dense"].random_mask(images)

    def fcmae_step(model: FCMAE) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            model(images, mode="loss", mask=mask)["loss"].backward()
        return step

    def backbone_step() -> None:
        backbone.zero_grad(set_to_none=True)
        backbone(images)[0].square().mean().backward()

    return {"dense-backbone": backbone_step, "fcmae-dense": fcmae_step(models["dense"]),
            "fcmae-gather": fcmae_step(models["gather"])}


def measure(arch: str = "atto", batch: int = 16, resolution: int = 224, repeats: int = 5, warmup: int = 1,
            threads: int | None = None, device: str = "auto", seed: int = 0) -> list[dict]:
    """Median seconds per step and images per second of each case."""
    where = _device(device)
    with torch_threads(threads):
        steps = _steps(arch, batch, resolution, where, seed)
        time_interleaved(steps, warmup, where)
        times = time_interleaved(steps, repeats, where)
    base = statistics.median(times["dense-backbone"])
    rows = []
    for case in CASES:
        median = statistics.median(times[case])
        rows.append({"case": case, "arch": arch, "batch": batch, "resolution": resolution, "seconds": median,
                     "img_per_s": batch / median, "x_dense_backbone": base / median})
    return rows


def format_rows(rows: Sequence[dict]) -> str:
    """A Markdown table of :func:`measure`'s rows."""
    lines = ["| size | case | input | s / step | img/s | speed vs dense backbone |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['case']} | {r['batch']}x{r['resolution']} | {r['seconds']:.3f} | "
                     f"{r['img_per_s']:.2f} | {r['x_dense_backbone']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FCMAE training step vs a dense forward + backward of the backbone")
    parser.add_argument("--arch", default="atto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    rows = measure(args.arch, args.batch, args.resolution, args.repeats, threads=args.threads, device=args.device)
    print(format_rows(rows))
    return 0
