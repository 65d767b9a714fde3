"""Where compiled inference spends its time: this backbone and timm's ConvNeXt V2, both under ``torch.compile``.

    python tools/compile_profile.py --device cuda --size tiny --batch 64 --resolution 224 --precision bf16 \
        --out profile_dir

Both models get the same random weights (as in ``cvx2 bench``), are compiled with ``dynamic=False``, warmed up and
profiled over ``--calls`` forwards. For each model it prints the kernels that took the most device time (name,
calls per forward, share) and a line with the totals: kernels per forward, device ms per forward, and the time in
kernels that only move memory (copies, layout conversions: names with copy / transpose / permute / clone /
contiguous / nchw / nhwc). ``--out`` also gets the full tables as text. With ``TORCH_LOGS=output_code`` set,
inductor's generated code goes to the log as well (tools/gpu_check.sh does that). Issue 30: find why the compiled
model is slower than timm's on CUDA.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout too

from cvx2_backbone.benchmark.run import build_models, stage_outputs  # noqa: E402

MEMORY_ONLY = re.compile(r"copy|transpose|permute|clone|contiguous|nchw|nhwc|convert_layout", re.IGNORECASE)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _kernel_table(prof: torch.profiler.profile, device: str, calls: int, top: int) -> tuple[list[str], dict]:
    """Rows of the ``top`` kernels by device time (per forward) and the totals."""
    attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    if device == "cuda":  # device kernels only (the CPU-side aten ops carry no self device time of their own)
        events = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    else:
        events = [e for e in events if not e.key.startswith(("ProfilerStep", "## ", "Torch-Compiled", "CompiledFx"))]
    total = sum(getattr(e, attr) for e in events) or 1.0
    memory_only = sum(getattr(e, attr) for e in events if MEMORY_ONLY.search(e.key))
    rows = []
    for e in sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:top]:
        rows.append(f"  {100 * getattr(e, attr) / total:5.1f}%  {getattr(e, attr) / 1e3 / calls:8.3f} ms  "
                    f"{e.count / calls:6.1f}x  {e.key[:110]}")
    totals = {"kernels_per_forward": sum(e.count for e in events) / calls,
              "ms_per_forward": total / 1e3 / calls, "memory_only_share": memory_only / total}
    return rows, totals


def profile_model(impl: str, model: torch.nn.Module, x: torch.Tensor, precision: str, calls: int,
                  top: int) -> tuple[list[str], dict]:
    """Compile ``model``, warm it up and profile ``calls`` forwards; the kernel table and totals."""
    device = x.device.type
    run = torch.compile(model.eval(), dynamic=False)
    autocast = torch.autocast(device, dtype=DTYPES[precision], enabled=precision != "fp32")
    start = time.perf_counter()
    with torch.inference_mode(), autocast:
        for _ in range(3):
            stage_outputs(impl, run, x)
        if device == "cuda":
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - start
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(calls):
                stage_outputs(impl, run, x)
            if device == "cuda":
                torch.cuda.synchronize()
    rows, totals = _kernel_table(prof, device, calls, top)
    totals["compile_s"] = compile_s
    return rows, totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--impls", default="cvx2,timm")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--width", type=int, default=None, help="image width (default: --resolution)")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=None, help="folder for the full tables")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    models = build_models(args.size, args.impls.split(","), seed=0, device=device)
    x = torch.randn(args.batch, 3, args.resolution, args.width or args.resolution,
                    generator=torch.Generator().manual_seed(0)).to(device)
    label = f"{args.size} {args.precision} {tuple(x.shape)} on {device}"
    summary = []
    for impl, model in models.items():
        rows, totals = profile_model(impl, model.to(device), x, args.precision, args.calls, args.top)
        head = (f"{impl}: {totals['kernels_per_forward']:.0f} kernels and {totals['ms_per_forward']:.2f} ms "
                f"per forward, {100 * totals['memory_only_share']:.1f}% in copies/layout kernels, compiled and "
                f"warmed up in {totals['compile_s']:.0f} s")
        text = f"== {label}: {head}\n" + "\n".join(rows)
        print(text, flush=True)
        summary.append(head)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            Path(args.out, f"kernels_{impl}_{args.precision}_{args.batch}x{args.resolution}.txt").write_text(text)
        torch._dynamo.reset()
    print("\n".join(["", f"compiled {label}:", *summary]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
