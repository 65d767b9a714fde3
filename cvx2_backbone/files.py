"""Writing files so that nobody ever reads half of one, and cleaning up after runs that were killed.

A file is written under a temporary sibling name (``.<name>.tmp<pid>``) and renamed over its
target when complete; on an exception (SIGINT and SIGTERM included) the temporary file is
removed. Only SIGKILL or a power loss can leave one behind: ``remove_stale_temporaries`` deletes
those whose process is gone.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_TEMPORARY = re.compile(r"^\..+\.tmp(\d+)$")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write to; renamed over ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`: readers never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed runs left under ``folder``; return them.

    Only :func:`atomic_path`'s names whose process is gone are touched, so a run writing there now keeps its own.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.rglob(".*.tmp*"):
        match = _TEMPORARY.match(path.name)
        if match and path.is_file() and not _process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no process can have
        return False
    except PermissionError:  # another user's process: leave its files alone
        return True
    return True
