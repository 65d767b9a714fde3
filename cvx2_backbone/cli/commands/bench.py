"""`cvx2 bench`: this backbone timed beside timm, Hugging Face, ONNX Runtime and OpenVINO (see docs/performance.md)."""
from __future__ import annotations

import argparse

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
    require_device(args.device)
    return run_from_args(args)
