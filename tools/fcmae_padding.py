"""How padding changes ConvNeXt features, with and without masking it (docs/fcmae.md)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout too

from cvx2_backbone.benchmark.fcmae_padding import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
