"""Speed and memory of this ConvNeXt V2 backbone next to timm's and Hugging Face's (same as `cvx2 bench`).

    python tools/benchmark.py --sizes tiny --threads 2 --json bench.json

See docs/performance.md for the cases, the method and the results.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout too

from cvx2_backbone.cli.main import command_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(command_main("bench", "tools/benchmark.py"))
