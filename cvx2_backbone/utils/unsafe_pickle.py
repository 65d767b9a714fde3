"""The one opt-in to full unpickling of checkpoint files, shared by every loader of the package (no torch here)."""
from __future__ import annotations

import os

UNSAFE_PICKLE_ENV = "CVX2_ALLOW_UNSAFE_PICKLE"


def unsafe_pickle_opted_in() -> bool:
    """Whether the user allowed full unpickling of files they trust (``CVX2_ALLOW_UNSAFE_PICKLE=1``)."""
    return os.environ.get(UNSAFE_PICKLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
