"""`cvx2 convert SRC DST [--to FORMAT]`: any supported ConvNeXt checkpoint -> a clean file in the layout asked for.

SRC is anything ``init_cfg=dict(type='Pretrained', checkpoint=SRC)`` accepts (file, folder, URL,
``hf://<repo id>``, ``timm/<model>.<tag>``). ``--to cvx2`` (default): this project's layout, DST ending in
``.safetensors`` written as such (recommended), ``.pth``/``.pt``/``.bin``/``.ckpt`` as a torch file that loads with
``weights_only=True``; ``hf``: a transformers ``save_pretrained`` folder; ``timm``: a timm state dict;
``official``: the official repositories' ``{'model': ...}``. The writers live in ``cvx2_backbone.weights.writers``.
A file suffix that promises another format (``.onnx``: use ``cvx2 export``) is refused.
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("convert a ConvNeXt V2/V1 checkpoint (official, FCMAE, timm, Hugging Face, mmpretrain, detector) "
        "to this project's layout, or to Hugging Face's, timm's or the official one")
FORMATS = ("cvx2", "hf", "timm", "official")  # cvx2_backbone.weights.writers.FORMATS, without importing torch here


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="checkpoint: file, folder, http(s) URL, hf://<repo id> or timm/<model>.<tag>")
    parser.add_argument("dst", help="output: NAME.safetensors (recommended) or NAME.pth; a folder for --to hf")
    parser.add_argument("--to", default="cvx2", metavar="FORMAT",
                        help=f"output layout, one of {', '.join(FORMATS)} (default: cvx2, this project's)")
    parser.add_argument("--prefix", default=None,
                        help="take the weights under this key prefix (e.g. backbone.); default: detected")
    parser.add_argument("--backbone-only", action="store_true",
                        help="leave out the classifier (norm.*, head.*) if the checkpoint has one")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a torch pickle that needs arbitrary Python objects (runs code from the file: "
                             "only for files from a source you trust)")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")


TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def _check_destination(dst: Path, to: str) -> None:
    """Refuse a file name whose suffix promises another format than the one written; clear stale staging files
    (``--to hf`` writes a folder: only that folder's own staging is cleared)."""
    from cvx2_backbone.utils.files import remove_stale_temporaries, unwritable_reason
    from cvx2_backbone.utils.usage import UsageError

    reason = unwritable_reason(dst.parent)
    if reason:
        raise UsageError(f"cannot write {dst}: {reason}; write to a folder you can write to, on a writable disk")
    if to == "hf":
        remove_stale_temporaries(dst.parent, recursive=False, suffixes=(dst.name,))
        return
    if dst.suffix not in (".safetensors", *TORCH_SUFFIXES):
        export = " (an ONNX file is what `cvx2 export` writes)" if dst.suffix == ".onnx" else ""
        raise UsageError(f"cvx2 convert writes .safetensors or a torch file ({', '.join(TORCH_SUFFIXES)}), not "
                         f"{dst.suffix or 'a name without suffix'}{export}; e.g. {dst.with_suffix('.safetensors')}")
    remove_stale_temporaries(dst.parent, recursive=False, suffixes=(".safetensors", *TORCH_SUFFIXES))


def run(args: argparse.Namespace) -> int:
    from cvx2_backbone.utils.usage import UsageError, user_input
    from cvx2_backbone.weights.convert import convert_checkpoint

    if args.to not in FORMATS:
        raise UsageError(f"--to {args.to!r} is not an output format; choose one of {', '.join(FORMATS)}")
    dst = Path(args.dst)
    _check_destination(dst, args.to)
    if dst.exists() and not args.force:
        raise UsageError(f"{dst} exists; pass --force to overwrite it")
    with user_input():
        result = convert_checkpoint(args.src, dst, args.to, prefix=args.prefix, backbone_only=args.backbone_only,
                                    trust_pickle=True if args.trust_pickle else None)
    checkpoint, written = result.checkpoint, result.written
    print(f"source:     {args.src if checkpoint is None else checkpoint.reference}")
    print(f"detected:   {result.description}")
    if checkpoint is not None:
        arch = checkpoint.arch
        print(f"arch:       {arch.describe()}" + (f", {arch.num_classes}-class head" if arch.num_classes else ""))
        print(f"license:    {checkpoint.license.text()}")
        for note in checkpoint.notes:
            print(f"note:       {note}")
        left_out = dict(checkpoint.discarded, **({"neck": len(checkpoint.neck)} if checkpoint.neck else {}))
        if left_out:
            print("left out:   " + ", ".join(f"{k} ({n} tensors)" for k, n in sorted(left_out.items())))
    for part in written.left_out:
        print(f"left out:   {part}")
    for part in written.filled_in:
        print(f"filled in:  {part}")
    for note in written.notes:
        print(f"note:       {note}")
    print(f"wrote:      {written.path} ({written.tensors} tensors, {written.format} layout)")
    print(f"use it as:  {written.usage}")
    return 0
