"""Convert a ConvNeXt V2/V1 checkpoint to this project's layout (the same as `cvx2 convert`).

    python tools/convert_checkpoint.py SRC DST [--prefix P] [--backbone-only] [--trust-pickle] [--force]
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from cvx2_backbone.commands import convert


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convert_checkpoint.py", description=convert.HELP)
    convert.add_arguments(parser)
    return convert.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
