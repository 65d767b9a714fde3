"""Turn a sharded (FSDP2) training checkpoint folder into one file that mmdet's and mmseg's tools load.

    python tools/consolidate_checkpoint.py work_dirs/CONFIG/iter_N.pth [OUT.pth]

Runs in one process without GPUs; OUT defaults to iter_N_consolidated.pth next to the folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout too

from cvx2_backbone.utils.usage import HelpFormatter, UsageError, add_debug_argument, run_command  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/consolidate_checkpoint.py", formatter_class=HelpFormatter,
                                     description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="sharded checkpoint folder written by FSDP2Strategy (iter_N.pth, epoch_N.pth)")
    parser.add_argument("out", nargs="?", help="output file (default: <folder name>_consolidated.pth next to it)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)

    def command() -> None:
        from cvx2_backbone.engine.sharded_checkpoint import consolidate, sharded_checkpoint_problem
        problem = sharded_checkpoint_problem(args.folder)
        if problem:
            raise UsageError(f"{args.folder} is {problem}; pass a folder written by FSDP2Strategy "
                             "(work_dirs/<config>/iter_N.pth)")
        print(consolidate(args.folder, args.out))

    return run_command(command, prog="tools/consolidate_checkpoint.py", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
