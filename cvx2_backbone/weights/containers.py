"""Finding the backbone's tensors inside a checkpoint object.

Checkpoints wrap their state dict in a container (``model``, ``model_ema``, ``state_dict``, ...)
and prefix the keys with the module path of the backbone (``module.`` from DDP, ``_orig_mod.``
from torch.compile, ``backbone.`` in detectors, segmentors and mmpretrain classifiers,
``encoder.`` in FCMAE pre-training). This module peels those layers off and says what it did.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import Tensor

from cvx2_backbone.weights.errors import CheckpointError

# Container keys, best first: EMA weights are the ones the published results use.
CONTAINER_KEYS = ("model_ema", "state_dict", "model", "module", "ema", "net", "params")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Top-level keys of an mmpretrain ImageClassifier head kept next to its backbone.
_CLASSIFIER_HEAD = "head.fc."
_NECK = "neck."


@dataclass
class Unwrapped:
    """The backbone's tensors (keys relative to the backbone), and what was peeled off to get them."""

    state_dict: dict[str, Tensor]
    notes: list[str] = field(default_factory=list)
    discarded: dict[str, int] = field(default_factory=dict)  # top-level name -> tensors left out
    neck: dict[str, Tensor] = field(default_factory=dict)  # a detector's ``neck.*`` (keys without the prefix)


def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping whose values are all tensors."""
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def find_state_dict(obj: Any, notes: list[str], where: str = "checkpoint") -> dict[str, Tensor]:
    """The state dict inside ``obj``: ``obj`` itself, or the first container key that holds one."""
    if is_state_dict(obj):
        return dict(obj)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"the {where} holds a {type(obj).__name__}, not a state dict (a mapping of names to "
                              "tensors); if it is a whole pickled model, save model.state_dict() instead")
    for key in CONTAINER_KEYS:
        if isinstance(obj.get(key), Mapping) and obj[key]:
            notes.append(f"weights from {where}[{key!r}]" + (" (EMA)" if "ema" in key else ""))
            return find_state_dict(obj[key], notes, f"{where}[{key!r}]")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if tensors and len(tensors) >= len(obj) / 2:
        notes.append(f"ignored {len(obj) - len(tensors)} non-tensor entries of the {where}")
        return tensors
    raise CheckpointError(f"no state dict found in the {where}: its keys are {sorted(map(str, obj))[:12]}; "
                          f"expected tensors, or one of the containers {', '.join(CONTAINER_KEYS)}")


def unwrap(obj: Any, prefix: str | None = None) -> Unwrapped:
    """Peel containers and module prefixes off ``obj``; ``prefix`` picks a sub-module explicitly."""
    result = Unwrapped({})
    state = find_state_dict(obj, result.notes)
    state = _strip_wrappers(state, result.notes)
    if prefix:
        result.state_dict = _select(state, prefix if prefix.endswith(".") else prefix + ".", result, explicit=True)
    elif any(k.startswith("backbone.") for k in state):
        result.state_dict = _select(state, "backbone.", result, explicit=False)
    elif any(k.startswith("encoder.downsample_layers.") for k in state):
        result.state_dict = _select(state, "encoder.", result, explicit=False)
        if "mask_token" in result.discarded:
            result.notes.append("an FCMAE pre-training checkpoint: only its encoder belongs to the backbone")
    else:
        result.state_dict = state
    if not result.state_dict:
        raise CheckpointError("the checkpoint holds no tensors" + (f" under the prefix {prefix!r}" if prefix else ""))
    return result


def _strip_wrappers(state: dict[str, Tensor], notes: list[str]) -> dict[str, Tensor]:
    changed = True
    while changed:
        changed = False
        for wrapper in WRAPPER_PREFIXES:
            if all(k.startswith(wrapper) for k in state):
                state = {k[len(wrapper):]: v for k, v in state.items()}
                notes.append(f"stripped the {wrapper!r} prefix")
                changed = True
    return state


def _select(state: dict[str, Tensor], prefix: str, result: Unwrapped, explicit: bool) -> dict[str, Tensor]:
    """Keys under ``prefix`` (stripped); the rest is counted as discarded, except a classifier head and a neck."""
    selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if explicit and not selected:
        tops = sorted({k.split(".", 1)[0] + "." for k in state})
        raise CheckpointError(f"no keys start with the prefix {prefix!r}; the checkpoint's top-level names are "
                              f"{', '.join(tops[:12])}")
    rest = Counter()
    for key, value in state.items():
        if key.startswith(prefix):
            continue
        if not explicit and prefix == "backbone." and key.startswith(_CLASSIFIER_HEAD):
            selected[key] = value  # mmpretrain classifier head: its format converter renames it
        elif key.startswith(_NECK):
            result.neck[key[len(_NECK):]] = value
        else:
            rest[key.split(".", 1)[0]] += 1
    result.notes.append(f"took the {prefix.rstrip('.')!r} sub-module")
    result.discarded.update(rest)
    return selected
