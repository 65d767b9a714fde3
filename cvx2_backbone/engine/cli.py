"""Command lines of tools/train.py and tools/test.py, with the flags mmdet's and mmseg's tools use."""
from __future__ import annotations

import argparse
import json
import os
from typing import Sequence

from mmengine.config import DictAction

from .distributed import LAUNCHERS


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", help="folder for logs and checkpoints (default: ./work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override config keys, e.g. train_dataloader.batch_size=2 "
                             "model.backbone.init_cfg=None 'key=[a,b]'")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none",
                        help="how the processes were started (pytorch: torchrun; works on CPU with gloo too)")
    # torch.distributed.launch passes --local-rank (older torch: --local_rank).
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train a detector or segmentor (chosen by the config's "
                                                 "default_scope) with a ConvNeXt V2 / V1 backbone")
    parser.add_argument("config", help="config file")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision (GPU: fp16 with dynamic loss scale; CPU: bfloat16 autocast)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale the lr by (total batch size / auto_scale_lr.base_batch_size)")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                        help="resume from CHECKPOINT, or without a value from the work dir's latest checkpoint")
    _common(parser)
    return parser


def test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate a detector (COCO bbox/segm AP) or a segmentor (mIoU)")
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


def train_main(argv: Sequence[str] | None = None) -> int:
    from .runner import train
    args = train_parser().parse_args(argv)
    _set_local_rank(args)
    train(args.config, work_dir=args.work_dir, amp=args.amp, resume=args.resume,
          auto_scale_lr=args.auto_scale_lr, cfg_options=args.cfg_options, launcher=args.launcher)
    return 0


def test_main(argv: Sequence[str] | None = None) -> int:
    from .runner import test
    args = test_parser().parse_args(argv)
    _set_local_rank(args)
    metrics = test(args.config, args.checkpoint, work_dir=args.work_dir, out=args.out, show=args.show,
                   show_dir=args.show_dir, wait_time=args.wait_time, cfg_options=args.cfg_options,
                   launcher=args.launcher)
    if int(os.environ.get("RANK", "0")) == 0:
        print("metrics:", json.dumps(metrics, default=float))
    return 0
