"""The published ConvNeXt V2 and V1 sizes as data (no torch here, so the command line can list them at once)."""
from __future__ import annotations

# Presets as data: name -> (depths, dims).
V2_ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "huge": ((3, 3, 27, 3), (352, 704, 1408, 2816)),
}
V1_ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    **{k: V2_ARCHS[k] for k in ("atto", "femto", "pico", "nano", "tiny", "base", "large")},
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}
