"""ConvNeXt's depthwise 7x7 convolution in NCHW and in channels-last memory, at the shapes of V2-tiny's stages.

    python tools/dwconv_layout.py --device cuda --precision bf16

This backbone runs channels-last from end to end (one conversion of the input); timm's ConvNeXt keeps NCHW and
permutes around the MLP. On CUDA the two layouts reach different depthwise kernels (cuDNN's NHWC kernels, PyTorch's
own NCHW depthwise kernel), so this times both, forward and forward + backward, at 64x224 and at the detection sizes
1x800x1216 (inference) and 1x1024 (training): the issue-30 cases where eager batch-1 inference trails timm (0.89x).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DIMS = (96, 192, 384, 768)  # V2-tiny's stage widths; strides 4, 8, 16, 32


def _time(fn, device: torch.device, calls: int) -> float:
    """Median seconds of ``calls`` calls of ``fn`` after 3 untimed ones."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(calls):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--inputs", default="64x224x224,1x800x1216,1x1024x1024", help="NxHxW, comma-separated")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.precision]
    print(f"depthwise 7x7, {args.precision}, {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), median of {args.calls}")
    print("| input | stage | channels x H x W | NCHW fwd ms | NHWC fwd ms | NCHW fwd+bwd ms | NHWC fwd+bwd ms |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for spec in args.inputs.split(","):
        n, h, w = (int(v) for v in spec.split("x"))
        for stage, channels in enumerate(DIMS):
            size = (h // (4 << stage), w // (4 << stage))
            weight = torch.randn(channels, 1, 7, 7, device=device, dtype=dtype, requires_grad=True)
            cells = {}
            for layout, memory_format in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
                x = torch.randn(n, channels, *size, device=device, dtype=dtype).contiguous(
                    memory_format=memory_format).requires_grad_()
                cw = weight.detach().contiguous(memory_format=memory_format).requires_grad_()

                def forward(x=x, cw=cw) -> torch.Tensor:
                    return F.conv2d(x, cw, None, 1, 3, 1, channels)

                def train(x=x, cw=cw) -> None:
                    forward(x, cw).sum().backward()

                with torch.no_grad():
                    cells[f"{layout} fwd"] = _time(forward, device, args.calls)
                cells[f"{layout} train"] = _time(train, device, args.calls)
            print(f"| {spec} | {stage + 1} | {channels}x{size[0]}x{size[1]} | "
                  + " | ".join(f"{1e3 * cells[k]:.3f}" for k in ("nchw fwd", "nhwc fwd", "nchw train", "nhwc train"))
                  + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
