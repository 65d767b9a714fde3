"""Where this package's configs/, tools/ and model-index.yml are, installed or not.

A wheel carries them in ``cvx2_backbone/.mim`` (mmdet's layout, which ``mim`` reads); a source checkout
or an editable install has them next to the package. Either way ``config_path`` finds a config by
its name, so ``tools/train.py convnextv2/mask-rcnn_convnextv2-atto-fcmae_fpn_lsj-3x_coco.py`` works
from anywhere.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # cvx2_backbone/


def resource_root() -> Path:
    """The folder holding ``configs/``, ``tools/`` and ``model-index.yml``: ``.mim`` in a wheel, else the checkout."""
    for root in (PACKAGE_DIR / ".mim", PACKAGE_DIR.parent):
        if (root / "configs").is_dir():
            return (root / "configs").resolve().parent  # a checkout's .mim (made for mim) links back to it
    raise FileNotFoundError(f"no configs/ next to {PACKAGE_DIR}: this installation of cvx2_backbone lacks its "
                            "configs; reinstall it from a wheel or a source checkout")


def config_path(name: str | Path) -> Path:
    """A config file by path, or by its path under configs/ (``configs/`` prefix and ``.py`` suffix optional)."""
    path = Path(name)
    if path.is_file():
        return path
    relative = Path(*path.parts[1:]) if path.parts[:1] == ("configs",) else path
    candidate = resource_root() / "configs" / relative
    candidate = candidate if candidate.suffix == ".py" else candidate.with_name(candidate.name + ".py")
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(f"config file {str(name)!r} does not exist, here or under {resource_root() / 'configs'} "
                            "(e.g. configs/convnextv2/mask-rcnn_convnextv2-atto-fcmae_fpn_lsj-3x_coco.py)")
