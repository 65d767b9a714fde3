"""Test a detector or segmentor of this project: python tools/test.py CONFIG ... (see docs/training.md)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout too

from cvx2_backbone.cli.train_test import test_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(test_main())
