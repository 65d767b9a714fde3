"""Convert a ConvNeXt V2/V1 checkpoint to this project's layout, or another (the same as `cvx2 convert`).

    python tools/convert_checkpoint.py SRC DST [--to cvx2|hf|timm|official] [--prefix P] [--backbone-only]
        [--trust-pickle] [--force]
"""
from __future__ import annotations

import sys
from typing import Sequence

from cvx2_backbone.cli.main import command_main


def main(argv: Sequence[str] | None = None) -> int:
    return command_main("convert", "convert_checkpoint.py", argv)


if __name__ == "__main__":
    sys.exit(main())
