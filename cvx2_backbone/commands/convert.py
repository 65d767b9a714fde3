"""`cvx2 convert SRC DST`: any supported ConvNeXt checkpoint -> a clean file in this project's layout.

SRC is anything ``init_cfg=dict(type='Pretrained', checkpoint=SRC)`` accepts (file, folder, URL,
``hf://<repo id>``, ``timm/<model>.<tag>``); DST ending in ``.safetensors`` is written as such
(recommended), ``.pth``/``.pt``/``.bin``/``.ckpt`` as a torch file that loads with ``weights_only=True``;
other suffixes (``.onnx``: use ``cvx2 export``) are refused.
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("convert a ConvNeXt V2/V1 checkpoint (official, FCMAE, timm, Hugging Face, mmpretrain, detector) "
        "to this project's layout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="checkpoint: file, folder, http(s) URL, hf://<repo id> or timm/<model>.<tag>")
    parser.add_argument("dst", help="output file: NAME.safetensors (recommended) or NAME.pth (.pt, .bin, .ckpt)")
    parser.add_argument("--prefix", default=None,
                        help="take the weights under this key prefix (e.g. backbone.); default: detected")
    parser.add_argument("--backbone-only", action="store_true",
                        help="leave out the classifier (norm.*, head.*) if the checkpoint has one")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a torch pickle that needs arbitrary Python objects (runs code from the file: "
                             "only for files from a source you trust)")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")


TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def _check_destination(dst: Path) -> None:
    """Refuse a file name whose suffix promises another format than the one written; clear stale staging files."""
    from ..files import remove_stale_temporaries
    from ..usage import UsageError

    if dst.suffix not in (".safetensors", *TORCH_SUFFIXES):
        export = " (an ONNX file is what `cvx2 export` writes)" if dst.suffix == ".onnx" else ""
        raise UsageError(f"cvx2 convert writes .safetensors or a torch file ({', '.join(TORCH_SUFFIXES)}), not "
                         f"{dst.suffix or 'a name without suffix'}{export}; e.g. {dst.with_suffix('.safetensors')}")
    remove_stale_temporaries(dst.parent, recursive=False, suffixes=(".safetensors", *TORCH_SUFFIXES))


def run(args: argparse.Namespace) -> int:
    from ..usage import UsageError, user_input
    from ..weights import read_checkpoint, save_checkpoint

    dst = Path(args.dst)
    _check_destination(dst)
    if dst.exists() and not args.force:
        raise UsageError(f"{dst} exists; pass --force to overwrite it")
    with user_input():
        checkpoint = read_checkpoint(args.src, args.prefix, trust_pickle=True if args.trust_pickle else None)
        arch = checkpoint.arch
        if any(dst.resolve() == f.resolve() for f in checkpoint.files):
            raise ValueError(f"{dst} is the source file; write the converted checkpoint elsewhere")
        written = save_checkpoint(checkpoint, dst, backbone_only=args.backbone_only)
    kept = len(checkpoint.backbone_state_dict() if args.backbone_only else checkpoint.state_dict)
    print(f"source:     {checkpoint.reference}")
    print(f"detected:   {checkpoint.format} ({checkpoint.format_description})")
    print(f"arch:       {arch.describe()}" + (f", {arch.num_classes}-class head" if arch.num_classes else ""))
    for note in checkpoint.notes:
        print(f"note:       {note}")
    left_out = dict(checkpoint.discarded, **({"neck": len(checkpoint.neck)} if checkpoint.neck else {}))
    if left_out:
        print("left out:   " + ", ".join(f"{k} ({n} tensors)" for k, n in sorted(left_out.items())))
    print(f"wrote:      {written} ({kept} tensors)")
    print(f"use it as:  init_cfg=dict(type='Pretrained', checkpoint='{written}') "
          f"in a {arch.backbone_cfg()['type']} backbone")
    return 0
