"""`cvx2 export -o OUT.onnx`: a backbone (optionally with its FPN) to ONNX, optionally verified and to OpenVINO IR.

The model options are those of ``cvx2 extract`` (a preset and weights, or a detector / segmentor checkpoint,
``--fpn`` for its trained FPN). The graph has dynamic batch, height and width, outputs named after the model's
outputs, and ``cvx2.*`` metadata (strides, channels, mean/std, preset, exporter, opset). Files appear only when
complete (and, with ``--verify``, only when verified); existing ones are replaced only with ``--force``; staging
folders of killed exports (``.OUT.onnx.tmpPID``, their process gone) are removed. Exit status: 0 written,
1 verification failed (nothing written), 2 bad arguments or unusable weights, 130 / 143 stopped by SIGINT / SIGTERM
(nothing written).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cvx2_backbone.utils.files import remove_stale_temporaries
from cvx2_backbone.cli.commands.model_options import add_model_arguments, build_extractor

HELP = "export a backbone (optionally with its FPN) to ONNX (and OpenVINO IR), dynamic batch and size"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, help="the ONNX file to write (.onnx)")
    add_model_arguments(parser)
    parser.add_argument("--exporter", default="dynamo",
                        help="torch exporter: dynamo (torch.export + onnxscript) or torchscript (the tracing "
                             "exporter, several times faster to run)")
    parser.add_argument("--no-fp16-safe", dest="fp16_safe", action="store_false",
                        help="trace GRN's norms as the plain sum of squares (overflows if the graph is run in "
                             "fp16); by default they are computed on inputs scaled by their maxima (same fp32 values)")
    parser.add_argument("--verify", action="store_true",
                        help="run the written files with ONNX Runtime (and OpenVINO) on an input of another batch "
                             "and size and print the max relative error against PyTorch; above 1e-4 nothing is "
                             "written and the exit status is 1")
    parser.add_argument("--openvino", action="store_true", help="also write OUT.xml / OUT.bin (OpenVINO IR, fp32)")
    parser.add_argument("--force", action="store_true", help="replace OUT (and OUT.xml / OUT.bin) if they exist")


def _check_output(output: Path, force: bool, openvino: bool) -> None:
    """Refuse before any work: a wrong suffix, a folder, files that exist (without --force), a place not writable."""
    from cvx2_backbone.utils.files import unwritable_reason
    from cvx2_backbone.utils.usage import UsageError

    if output.suffix != ".onnx":
        raise UsageError(f"the output file must end in .onnx, got {output}; e.g. -o {output.with_suffix('.onnx')}")
    if output.is_dir():
        raise UsageError(f"output {output} is a folder; give a file path such as {output / 'backbone.onnx'}")
    targets = [output] + ([output.with_suffix(".xml"), output.with_suffix(".bin")] if openvino else [])
    existing = [str(path) for path in targets if path.exists()]
    if existing and not force:
        raise UsageError(f"{' and '.join(existing)} exist{'s' if len(existing) == 1 else ''}; pass --force to "
                         "replace, or choose another -o")
    reason = unwritable_reason(output.parent)
    if reason:
        raise UsageError(f"cannot write {output}: {reason}; choose a file path in a folder you can write to")


def run(args: argparse.Namespace) -> int:
    from cvx2_backbone.export.onnx import VERIFY_SHAPE, VerificationError, check_exporter, export_backbone
    from cvx2_backbone.utils.usage import user_input

    output = Path(args.output)
    with user_input():
        check_exporter(args.exporter)
        _check_output(output, args.force, args.openvino)
        extractor = build_extractor(args)
    stale = remove_stale_temporaries(output.parent, recursive=False, suffixes=(".onnx",))
    undone = [path for path in stale if ".backup" in path.name]
    if undone:
        print(f"put back the earlier files of an export that was killed while it put its files in place in "
              f"{output.parent}")
    if len(stale) > len(undone):
        print(f"removed {len(stale) - len(undone)} staging folder(s) that a killed export left in {output.parent}")
    start = time.perf_counter()
    try:
        result = export_backbone(extractor, output, exporter=args.exporter, fp16_safe=args.fp16_safe,
                                 openvino=args.openvino, verify=VERIFY_SHAPE if args.verify else None,
                                 weights=args.weights)
    except VerificationError as err:
        print(f"cvx2 export: verification failed: {err}", file=sys.stderr)
        return 1
    meta = result.metadata
    print(f"wrote {result.onnx}" + (f" and {result.openvino} (+ .bin)" if result.openvino else "")
          + f" in {time.perf_counter() - start:.1f} s: {meta['model']}, {meta['exporter']} exporter, opset "
          f"{meta['opset']}, fp16-safe GRN {'on' if meta['fp16_safe'] else 'off'}")
    print("outputs " + ", ".join(f"{n} (stride {s}, {c} ch)" for n, s, c in
                                 zip(meta["outputs"], meta["strides"], meta["channels"])))
    for check in result.checks:
        print(f"verified with {check.runtime} on input {'x'.join(map(str, check.input_shape))}: max relative error "
              f"{check.max_error:.2e} (limit 1e-04)")
    return 0
