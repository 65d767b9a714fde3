"""Layer ids for layer-wise lr decay of the ConvNeXt backbones, as pure functions of parameter names.

Three rules (see docs/lr_decay.md):

- ``layer_wise``: the official detection/segmentation rule (copied by mmdet and mmseg): the
  second-to-last stage, the deep one, is split into groups of three blocks, every other stage is
  one layer, and the last stage with its downsampling layer has id ``num_layers``;
- ``stage_wise``: every downsampling layer has id 0, stage ``s`` has id ``s + 1``;
- ``block_wise``: every block is its own layer, as in the official ConvNeXt V2 fine-tuning; a
  downsampling layer shares the id of the first block after it.

Whatever is not in ``downsample_layers``/``stages`` (the output norms, neck, heads) has id
``num_layers + 1`` and lr scale 1; layer id ``i`` has scale ``decay_rate ** (num_layers + 1 - i)``.
"""
from __future__ import annotations

from numbers import Real
from typing import Sequence

DECAY_TYPES = ("layer_wise", "stage_wise", "block_wise")
# The official rule splits the deep stage into groups of this many blocks.
BLOCKS_PER_GROUP = 3


def check_decay_type(decay_type: object) -> str:
    """Return ``decay_type`` if it is one of ``DECAY_TYPES``, else raise ValueError."""
    if decay_type not in DECAY_TYPES:
        raise ValueError(f"unknown decay_type {decay_type!r}; choose one of {list(DECAY_TYPES)}")
    return decay_type


def check_decay_rate(decay_rate: object) -> float:
    """Return ``decay_rate`` as a float if it lies in (0, 1], else raise ValueError/TypeError."""
    if isinstance(decay_rate, bool) or not isinstance(decay_rate, Real):
        raise TypeError(f"decay_rate must be a number in (0, 1], got {decay_rate!r} "
                        "(the official settings use 0.9 or 0.95)")
    if not 0.0 < decay_rate <= 1.0:
        raise ValueError(f"decay_rate must be in (0, 1] (1 means no decay), got {decay_rate}; "
                         "the official settings use 0.9 or 0.95")
    return float(decay_rate)


def check_num_layers(num_layers: object) -> int | None:
    """Return ``num_layers`` if it is None or a positive int, else raise TypeError/ValueError."""
    if num_layers is None:
        return None
    if isinstance(num_layers, bool) or not isinstance(num_layers, int):
        raise TypeError(f"num_layers must be a positive int (or left out to derive it), got {num_layers!r}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be a positive int (or left out to derive it), got {num_layers}")
    return num_layers


def _layer_wise_count(depths: Sequence[int]) -> int:
    """Id of the last stage under ``layer_wise``: one past the deep stage's last group."""
    if len(depths) == 1:
        return 1
    deep = len(depths) - 2
    return deep + 1 + (depths[deep] - 1) // BLOCKS_PER_GROUP + 1


def default_num_layers(depths: Sequence[int], decay_type: str) -> int:
    """``num_layers`` used when the config leaves it out.

    ``layer_wise`` and ``stage_wise``: the layer_wise layer count (6 for T, 12 for S/B/L/H), which
    the official detection and UperNet configs pass for both rules. ``block_wise``: the number of
    blocks, as the official fine-tuning does.
    """
    check_decay_type(decay_type)
    return sum(depths) if decay_type == "block_wise" else _layer_wise_count(depths)


def min_num_layers(depths: Sequence[int], decay_type: str) -> int:
    """Smallest ``num_layers`` that keeps every backbone layer id in network order and at most ``num_layers``.

    Below it, some backbone layers would get lr scales of 1 or more (above the head's) or a later
    layer a smaller lr than an earlier one.
    """
    check_decay_type(decay_type)
    if decay_type == "stage_wise":
        return len(depths)
    return default_num_layers(depths, decay_type)


def resolve_num_layers(depths: Sequence[int], decay_type: str, num_layers: object = None) -> int:
    """The given ``num_layers`` after validation, or the default for ``depths`` when it is None."""
    if check_num_layers(num_layers) is None:
        return default_num_layers(depths, decay_type)
    needed = min_num_layers(depths, decay_type)
    if num_layers < needed:
        raise ValueError(
            f"num_layers={num_layers} is too small for decay_type={decay_type!r} on a backbone with depths "
            f"{list(depths)}: its layer ids reach {needed}, so some backbone layers would get an lr scale of 1 "
            f"or more, or a smaller lr than the layers before them. Use num_layers >= {needed} "
            f"(leave it out to get {default_num_layers(depths, decay_type)})")
    return num_layers


def _parse(param_name: str) -> tuple[str, int, int] | None:
    """('downsample', stage, 0) or ('block', stage, block) for a backbone-relative name; None elsewhere."""
    parts = param_name.split(".")
    if parts[0] == "downsample_layers" and len(parts) > 2:
        return "downsample", int(parts[1]), 0
    if parts[0] == "stages" and len(parts) > 3:
        return "block", int(parts[1]), int(parts[2])
    return None


def convnext_layer_id(param_name: str, depths: Sequence[int], decay_type: str, num_layers: int) -> int:
    """Layer id of a backbone parameter (name relative to the backbone, e.g. ``stages.2.4.pwconv1.weight``)."""
    parsed = _parse(param_name)
    if parsed is None:
        return num_layers + 1
    kind, stage, block = parsed
    if not 0 <= stage < len(depths):
        raise ValueError(f"parameter {param_name!r} names stage {stage}, but the backbone has {len(depths)} stages")
    if decay_type == "stage_wise":
        return 0 if kind == "downsample" else stage + 1
    if decay_type == "block_wise":
        return sum(depths[:stage]) + 1 + block
    check_decay_type(decay_type)
    if kind == "downsample" and stage == 0:
        return 0  # the stem
    if stage == len(depths) - 1:
        return num_layers
    if kind == "block" and stage == len(depths) - 2:
        return stage + 1 + block // BLOCKS_PER_GROUP
    return stage + 1


def lr_scale(decay_rate: float, layer_id: int, num_layers: int) -> float:
    """Learning-rate multiplier of layer ``layer_id``: 1 for ``num_layers + 1``, one more factor per layer below."""
    return decay_rate ** (num_layers + 1 - layer_id)


def backbone_layer_depth(backbone, param_name: str, prefix: str = "") -> tuple[int, int]:
    """``(layer id, number of layer ids)`` of a parameter, mmpretrain's ``get_layer_depth`` convention.

    Uses the ``layer_wise`` rule with the default ``num_layers`` N; the count is N + 2 (ids 0..N+1),
    so mmpretrain's scale ``decay_rate ** (count - layer_id - 1)`` equals :func:`lr_scale`. Names
    outside ``prefix`` (heads, necks) get id N + 1.
    """
    num_layers = default_num_layers(backbone.depths, "layer_wise")
    if not param_name.startswith(prefix):
        return num_layers + 1, num_layers + 2
    layer_id = convnext_layer_id(param_name[len(prefix):], backbone.depths, "layer_wise", num_layers)
    return layer_id, num_layers + 2
