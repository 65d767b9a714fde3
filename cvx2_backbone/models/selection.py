"""Choosing which backbone outputs to return: OpenMMLab ``out_indices`` or Hugging Face ``out_features``.

``out_indices`` numbers the stages 0..N-1 (negatives count from the end) and cannot name the
stem; ``out_features`` uses the Hugging Face names ``stem``, ``stage1``..``stageN``.
"""
from __future__ import annotations

from typing import Sequence


def stage_names(num_stages: int) -> list[str]:
    """All selectable output names, in network order."""
    return ["stem"] + [f"stage{i + 1}" for i in range(num_stages)]


def _normalise_indices(out_indices: Sequence[int] | int, num_stages: int) -> list[int]:
    if isinstance(out_indices, int):
        out_indices = [out_indices]
    if isinstance(out_indices, (str, bytes)) or not isinstance(out_indices, Sequence):
        raise ValueError(
            f"out_indices must be a list of ints, got {out_indices!r}; "
            f"for example out_indices=(0, 1, 2, 3) for all {num_stages} stages")
    indices = []
    for index in out_indices:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"out_indices must contain ints, got {index!r} in {list(out_indices)!r}")
        if not -num_stages <= index < num_stages:
            raise ValueError(
                f"out_indices {list(out_indices)!r}: index {index} is out of range for a backbone with "
                f"{num_stages} stages; valid values are 0..{num_stages - 1} (stage1..stage{num_stages}) "
                f"or -{num_stages}..-1. The stem has no index: select it with out_features=['stem', ...]")
        indices.append(index % num_stages)
    for position, index in enumerate(indices):
        first = indices.index(index)
        if first < position:
            given = list(out_indices)
            raise ValueError(
                f"out_indices {given!r}: {given[first]} and {given[position]} both select stage{index + 1} "
                f"(negative indices count from the end: -1 is stage{num_stages}); list each stage once")
    return indices


def _check_order(names: list[str], all_names: list[str], given: str) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1}, key=all_names.index)
    if duplicates:
        raise ValueError(f"{given} contains duplicates: {duplicates}; list each output once")
    ordered = sorted(names, key=all_names.index)
    if names != ordered:
        raise ValueError(
            f"{given} must follow the network order {all_names}, got {names}; use {ordered}")


def resolve_outputs(
    num_stages: int,
    out_indices: Sequence[int] | int | None = None,
    out_features: Sequence[str] | str | None = None,
) -> list[str]:
    """Validate a selection and return the chosen output names in network order.

    Raises ``ValueError`` for unknown names, duplicates, wrong order, out-of-range indices and
    for ``out_indices``/``out_features`` that do not name the same stages.
    """
    all_names = stage_names(num_stages)
    from_features = None
    if out_features is not None:
        if isinstance(out_features, str):
            out_features = [out_features]
        names = list(out_features)
        if not names:
            raise ValueError("out_features is empty; name at least one of " f"{all_names}")
        unknown = [n for n in names if n not in all_names]
        if unknown:
            raise ValueError(
                f"out_features {names}: unknown name(s) {unknown}; "
                f"valid names are {all_names}")
        _check_order(names, all_names, "out_features")
        from_features = names

    from_indices = None
    if out_indices is not None:
        indices = _normalise_indices(out_indices, num_stages)
        if not indices:
            raise ValueError(f"out_indices is empty; give at least one of 0..{num_stages - 1}")
        names = [f"stage{i + 1}" for i in indices]
        _check_order(names, all_names, f"out_indices {indices} (as names)")
        from_indices = names

    if from_features is not None and from_indices is not None:
        if from_features != from_indices:
            raise ValueError(
                f"out_features {from_features} and out_indices {indices} do not name the "
                f"same outputs (out_indices selects {from_indices}); give only one of them, or make "
                "them agree (out_indices 0 is stage1; the stem can only be chosen by out_features)")
        return from_features
    if from_features is not None:
        return from_features
    if from_indices is not None:
        return from_indices
    return all_names[1:]


def output_index(name: str) -> int | None:
    """OpenMMLab index of an output name: ``stage1`` -> 0; ``None`` for the stem."""
    return None if name == "stem" else int(name[len("stage"):]) - 1
