"""What the FCMAE training tests share: the CPU config and a folder of small pictures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CPU_CONFIG = ROOT / "configs/fcmae/fcmae_convnextv2-atto_1xb8-cosine-1k_image-folder-cpu.py"


def fcmae_images(root: Path, count: int = 5) -> Path:
    """Smooth random pictures of assorted sizes in nested folders, plus a file that only looks like an image."""
    rng = np.random.default_rng(0)
    for i in range(count):
        h, w = int(rng.integers(64, 160)), int(rng.integers(64, 160))
        small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        path = root / f"set{i % 2}" / f"img{i}.{'png' if i % 2 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(path)
    (root / "set0/corrupt.jpg").write_bytes(b"\xff\xd8 truncated")
    return root
