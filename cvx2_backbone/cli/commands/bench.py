"""`cvx2 bench`: this backbone timed beside timm, Hugging Face, ONNX Runtime and OpenVINO (see docs/performance.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("speed and peak memory of this backbone next to timm, Hugging Face, ONNX Runtime and OpenVINO "
        "(same weights, interleaved timing)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cvx2_backbone.benchmark.options import add_arguments as benchmark_arguments

    benchmark_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cvx2_backbone.benchmark.run import config_from_args, run_from_args
    from cvx2_backbone.utils.usage import require_device, user_input

    with user_input():  # check the arguments before anything is built
        config_from_args(args)
    if args.json:  # a report that could not be written would cost the whole run: check the path first
        _check_json_path(Path(args.json))
    require_device(args.device)
    return run_from_args(args)


def _check_json_path(path: Path) -> None:
    from cvx2_backbone.utils.files import unwritable_reason
    from cvx2_backbone.utils.usage import UsageError

    if path.is_dir():
        raise UsageError(f"--json {path} is a folder; give a file path such as {path / 'bench.json'}")
    reason = unwritable_reason(path.parent)
    if reason:
        raise UsageError(f"--json {path}: cannot write there ({reason}); give a path in a folder you can write to")
