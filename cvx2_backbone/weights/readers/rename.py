"""Key renaming by ordered regex rules, shared by the format converters."""
from __future__ import annotations

import re
from typing import Sequence

from torch import Tensor

from cvx2_backbone.weights.errors import CheckpointError

Rule = tuple[str, str]


def compile_rules(rules: Sequence[Rule]) -> list[tuple[re.Pattern[str], str]]:
    """Pre-compile (pattern, replacement) pairs."""
    return [(re.compile(pattern), replacement) for pattern, replacement in rules]


def rename_key(key: str, rules: Sequence[tuple[re.Pattern[str], str]]) -> str:
    """Apply every rule in order (each one rewrites what the previous ones produced)."""
    for pattern, replacement in rules:
        key = pattern.sub(replacement, key)
    return key


def rename(state_dict: dict[str, Tensor], rules: Sequence[tuple[re.Pattern[str], str]]) -> dict[str, Tensor]:
    """A copy of ``state_dict`` with every key renamed; two keys landing on one name is an error."""
    renamed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new_key = rename_key(key, rules)
        if new_key in renamed:
            raise CheckpointError(f"two checkpoint keys map to {new_key!r} (one of them is {key!r}); "
                             "the checkpoint mixes layouts")
        renamed[new_key] = value
    return renamed
