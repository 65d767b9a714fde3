"""The feature files ``cvx2 extract`` writes and reads: one ``.safetensors`` or ``.npz`` file per image, holding
``{name: (C, h, w) array}`` and JSON metadata (``format`` = :data:`FORMAT_VERSION`); and how inputs are found.

No torch at import (numpy and safetensors load on use), so the command line answers ``--help`` at once.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
FORMAT_VERSION = "cvx2-features/1"
PICTURE_SUFFIX = ".pyramid.png"  # the --viz picture of an image: <name>.pyramid.png


def encode_features(features: Mapping[str, Any], metadata: Mapping[str, Any], fmt: str) -> bytes:
    """Serialise ``{name: (C, h, w) tensor}`` with JSON-able metadata as safetensors or npz bytes."""
    import numpy as np

    if fmt == "safetensors":
        from safetensors.torch import save
        return save({k: v.contiguous() for k, v in features.items()},
                    metadata={k: json.dumps(v) for k, v in metadata.items()})
    buffer = io.BytesIO()
    np.savez(buffer, __metadata__=np.array(json.dumps(dict(metadata))),
             **{k: v.numpy() for k, v in features.items()})
    return buffer.getvalue()


def load_features(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a file written by ``cvx2 extract``: ({name: numpy array (C, h, w)}, metadata)."""
    import numpy as np

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        from safetensors import safe_open
        with safe_open(str(path), framework="numpy") as handle:
            metadata = {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
        return load_file(str(path)), metadata
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            metadata = json.loads(str(data["__metadata__"]))
            return {k: data[k] for k in data.files if k != "__metadata__"}, metadata
    raise ValueError(f"{path}: not a feature file (expected .safetensors or .npz)")


def is_own_picture(path: Path) -> bool:
    """A ``--viz`` picture this command wrote (in any output folder): never read back as an input image."""
    return path.name.endswith(PICTURE_SUFFIX)


def find_images(inputs: Iterable[str], exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """(image path, output stem relative to OUT) for every input; folders are searched recursively.

    Files inside ``exclude`` (the output folder) and ``*.pyramid.png`` pictures of any earlier run are left out:
    the command never reads its own outputs. A file listed twice is read once.
    """
    outside = exclude.resolve() if exclude is not None else None

    def wanted(path: Path) -> bool:
        return (outside is None or outside not in path.resolve().parents) and not is_own_picture(path)

    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and wanted(p))
            found += [(p, p.relative_to(path).with_suffix("")) for p in files]
        elif path.exists():
            if wanted(path):
                found.append((path, Path(path.stem)))
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    seen: dict[Path, Path] = {}
    unique = []
    for source, stem in found:
        if stem in seen:
            if seen[stem].resolve() == source.resolve():
                continue  # the same file named twice (a file and its folder, or a repeated argument)
            raise ValueError(f"{seen[stem]} and {source} are different images that would both write "
                             f"{stem}.* in the output folder; give them in separate runs with separate -o folders")
        seen[stem] = source
        unique.append((source, stem))
    return unique
