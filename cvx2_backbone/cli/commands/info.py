"""`cvx2 info PRESET...`: parameters, FLOPs, and channels/strides of every output, as a table.
`cvx2 info --weights SRC`: what a checkpoint holds (layout, architecture, what loading leaves out) and its license.

Counts follow the paper: parameters of the ImageNet classifier (backbone, final LayerNorm and a
1000-way head) and FLOPs as multiply-accumulates (torch's FLOP counter divided by 2), at 224x224.
"""
from __future__ import annotations

import argparse
import json

HELP = "parameters, FLOPs (MACs, as in the paper) and output channels/strides of ConvNeXt presets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("presets", nargs="*", metavar="PRESET",
                        help="preset names such as convnextv2_atto or convnext_tiny; none: every preset")
    parser.add_argument("--image-size", type=int, default=224, help="square input size for FLOPs and map sizes")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier head size counted in 'params'")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--weights", metavar="SRC", default=None,
                        help="describe a checkpoint instead (file, folder, URL, hf://<repo id>, timm/<model>.<tag>): "
                             "layout, architecture, license")


def describe_weights(source: str) -> dict:
    """What ``cvx2 info --weights`` prints: layout, architecture, notes, what is left out, and the license."""
    from cvx2_backbone.weights import read_checkpoint

    checkpoint = read_checkpoint(source)
    return {"source": checkpoint.reference, "format": f"{checkpoint.format} ({checkpoint.format_description})",
            "arch": checkpoint.arch.describe(), "backbone": checkpoint.arch.backbone_cfg(),
            "license": checkpoint.license.identifier, "license_line": checkpoint.license.line(),
            "notes": list(checkpoint.notes), "left_out": dict(checkpoint.discarded)}


def describe(preset: str, image_size: int = 224, num_classes: int = 1000) -> dict:
    """Sizes of one preset, computed on the meta device (no memory, no arithmetic)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cvx2_backbone.models.factory import parse_preset

    if image_size < 32:
        raise ValueError(f"--image-size must be at least 32 (the network's total stride), got {image_size}")
    cls, arch = parse_preset(preset)
    with torch.device("meta"):
        backbone = cls(arch=arch, out_features=["stem", "stage1", "stage2", "stage3", "stage4"], out_norm=False)
        x = torch.empty(1, 3, image_size, image_size)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            outputs = backbone(x)
    width = backbone.dims[-1]
    head_params = 2 * width + (width + 1) * num_classes  # final LayerNorm + Linear
    backbone_params = sum(p.numel() for p in backbone.parameters())
    macs = counter.get_total_flops() / 2 + width * num_classes
    return {
        "preset": preset, "depths": backbone.depths, "dims": backbone.dims,
        "params": backbone_params + head_params, "backbone_params": backbone_params,
        "gmacs": macs / 1e9, "image_size": image_size,
        "outputs": [{"name": n, "channels": c, "stride": s, "size": list(o.shape[-2:])}
                    for n, c, s, o in zip(backbone.out_features, backbone.out_channels, backbone.out_strides, outputs)],
    }


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if j else cell.ljust(w) for j, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from cvx2_backbone.models.factory import parse_preset, preset_names
    from cvx2_backbone.utils.usage import UsageError, user_input

    if args.weights is not None:
        if args.presets:
            raise UsageError("give either preset names or --weights SRC, not both")
        with user_input():
            info = describe_weights(args.weights)
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        print(f"source:     {info['source']}\nformat:     {info['format']}\narch:       {info['arch']}")
        print(f"backbone:   {info['backbone']}")
        for note in info["notes"]:
            print(f"note:       {note}")
        for name, count in sorted(info["left_out"].items()):
            print(f"left out:   {name} ({count} tensors)")
        print(info["license_line"])
        return 0
    presets = args.presets or preset_names()
    if args.image_size < 32:
        raise UsageError(f"--image-size {args.image_size} is below the network's total stride 32; use 32 or more "
                         "(224 is the paper's)")
    if args.num_classes < 0:
        raise UsageError(f"--num-classes {args.num_classes}: give 0 (no head) or more (1000 is ImageNet-1k's)")
    with user_input():
        for preset in presets:
            parse_preset(preset)
    infos = [describe(p, args.image_size, args.num_classes) for p in presets]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    size = args.image_size
    print(_table([["preset", "depths", "dims", "params (M)", "backbone (M)", f"GFLOPs@{size} (MACs)"]] + [
        [i["preset"], ",".join(map(str, i["depths"])), ",".join(map(str, i["dims"])),
         f"{i['params'] / 1e6:.2f}", f"{i['backbone_params'] / 1e6:.2f}", f"{i['gmacs']:.2f}"] for i in infos]))
    print(f"\nparams: ImageNet classifier ({args.num_classes} classes) as the paper counts it; backbone: without the "
          "head and final norm (add 2*C per output norm).\n")
    for info in infos:
        print(f"{info['preset']} outputs at {size}x{size}:")
        print(_table([["output", "channels", "stride", "size"]] + [
            [o["name"], str(o["channels"]), str(o["stride"]), "x".join(map(str, o["size"]))]
            for o in info["outputs"]]))
        print()
    return 0
