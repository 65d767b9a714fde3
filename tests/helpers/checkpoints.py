"""Loading as a process would that never imported cvx2_backbone: torch's safe loader with its own defaults only."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch


@contextmanager
def torch_defaults_only() -> Iterator[None]:
    """Within the block torch's safe loader allows only its own defaults (not what importing cvx2_backbone added)."""
    prior = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        yield
    finally:
        torch.serialization.add_safe_globals(prior)


def load_with_torch_defaults(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` as in a process that never imported cvx2_backbone."""
    with torch_defaults_only():
        return torch.load(path, map_location="cpu", weights_only=True)
