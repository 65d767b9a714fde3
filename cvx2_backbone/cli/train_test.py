"""Command lines of tools/train.py and tools/test.py, with the flags mmdet's and mmseg's tools use.

Both run in the package's error style (``cvx2_backbone.utils.usage``): user mistakes end in one
message and exit status 2, ``--debug`` shows their traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Sequence

from cvx2_backbone.cli.cfg_options import CfgOptionsAction
from cvx2_backbone.utils.usage import HelpFormatter, add_debug_argument, print_error, run_command
from cvx2_backbone.engine.distributed import LAUNCHERS

ALLOW_PARTIAL_HELP = ("load the checkpoint even if some of the model's tensors are missing, unexpected or of another "
                      "shape (they keep their initial values and are listed in the log); without this flag that is "
                      "an error")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", help="folder for logs and checkpoints (default: ./work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=CfgOptionsAction, metavar="KEY=VALUE",
                        help="override config keys, e.g. train_dataloader.batch_size=2 "
                             "model.backbone.init_cfg=None 'key=[a,b]'")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none",
                        help="how the processes were started (pytorch: torchrun; works on CPU with gloo too)")
    parser.add_argument("--allow-partial", action="store_true", help=ALLOW_PARTIAL_HELP)
    add_debug_argument(parser)
    # torch.distributed.launch passes --local-rank (older torch: --local_rank).
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/train.py", formatter_class=HelpFormatter,
                                     description="Train a detector or segmentor (chosen by the config's "
                                                 "default_scope) with a ConvNeXt V2 / V1 backbone")
    parser.add_argument("config", help="config file")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision (GPU: fp16 with dynamic loss scale; CPU: bfloat16 autocast)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale the lr by (total batch size / auto_scale_lr.base_batch_size)")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                        help="resume from CHECKPOINT, or without a value from the work dir's newest checkpoint that "
                             "loads (a truncated latest one is passed over, with a message)")
    parser.add_argument("--load-from", metavar="CHECKPOINT",
                        help="start from this checkpoint's weights (not its optimizer or schedule), e.g. to fine-tune")
    _common(parser)
    return parser


def test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/test.py", formatter_class=HelpFormatter,
                                     description="Evaluate a detector (COCO bbox/segm AP) or a segmentor (mIoU)")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file written by tools/train.py")
    parser.add_argument("--out", help="detection: dump raw results to this .pkl; segmentation: write "
                                      "predicted masks into this folder")
    parser.add_argument("--show", action="store_true", help="show predictions in a window")
    parser.add_argument("--show-dir", help="save drawn predictions into this folder")
    parser.add_argument("--wait-time", type=float, default=2.0, help="seconds each shown image stays up")
    _common(parser)
    return parser


def _set_local_rank(args: argparse.Namespace) -> None:
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))


def _other_rank() -> bool:
    """A worker other than rank 0 of a distributed run."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0) != 0


def _report_usage_error(line: str) -> None:
    """A usage error's line: under torchrun into the worker's reply file, which :mod:`.launch` prints once for all
    ranks (a rank's own print could be cut by the agent stopping it); elsewhere printed by rank 0 only."""
    reply_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if reply_file:
        with open(reply_file, "w") as handle:  # the layout of torch's own ErrorHandler.record_exception
            json.dump({"message": {"message": line, "extraInfo": {"py_callstack": "",
                                                                  "timestamp": str(int(time.time()))}}}, handle)
    elif not _other_rank():
        print_error(line)


def train_main(argv: Sequence[str] | None = None) -> int:
    from cvx2_backbone.engine.runner import train
    args = train_parser().parse_args(argv)
    _set_local_rank(args)

    def command() -> None:
        train(args.config, work_dir=args.work_dir, amp=args.amp, resume=args.resume, load_from=args.load_from,
              auto_scale_lr=args.auto_scale_lr, cfg_options=args.cfg_options, launcher=args.launcher,
              allow_partial=args.allow_partial)

    return run_command(command, prog="tools/train.py", debug=args.debug, report=_report_usage_error)


def test_main(argv: Sequence[str] | None = None) -> int:
    from cvx2_backbone.engine.runner import test
    args = test_parser().parse_args(argv)
    _set_local_rank(args)

    def command() -> None:
        metrics = test(args.config, args.checkpoint, work_dir=args.work_dir, out=args.out, show=args.show,
                       show_dir=args.show_dir, wait_time=args.wait_time, cfg_options=args.cfg_options,
                       launcher=args.launcher, allow_partial=args.allow_partial)
        if not _other_rank():
            print("metrics:", json.dumps(metrics, default=float))

    return run_command(command, prog="tools/test.py", debug=args.debug, report=_report_usage_error)
