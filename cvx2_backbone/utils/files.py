"""Writing files so that nobody ever reads half of one, and cleaning up after runs that were killed.

A file is written under a temporary sibling name (``.<name>.tmp<pid>``, a file or a staging folder) and renamed
over its target when complete, with the permissions the umask gives a new file; on an exception (SIGINT and
SIGTERM included) the temporary file is removed. Only SIGKILL or a power loss can leave one behind:
``remove_stale_temporaries`` deletes those whose process is gone.
"""
from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")


def temporary_name(path: str | os.PathLike) -> Path:
    """The temporary sibling this process writes ``path`` under (a file, or a staging folder)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write to; renamed over ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        follow_umask(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary staging folder (:func:`temporary_name`) to write to; it replaces ``path`` (file or folder) when the
    block succeeds, and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    old = path.with_name(f".{path.name}.old{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`: readers never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def current_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc; elsewhere set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give a written file the mode a plain ``open(path, 'w')`` would: some writers (tempfile-based ones) make
    their files 0600, which the rename would carry to the output."""
    if Path(path).is_file():
        os.chmod(path, 0o666 & ~current_umask())


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why files cannot be created in ``folder`` (or in the nearest folder above it that exists, where the missing
    ones would be made), tried by making and removing a staging folder there; None when they can."""
    folder = Path(folder).absolute()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        return f"{existing} is not a folder"
    probe = temporary_name(existing / "write-probe")
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        return f"{existing} does not accept new files ({(err.strerror or str(err)).lower()})"
    return None


def remove_stale_temporaries(folder: str | os.PathLike, *, recursive: bool = True,
                             suffixes: Sequence[str] | None = None) -> list[Path]:
    """Delete the temporary files and staging folders that killed runs left under ``folder``; return them.

    Only :func:`temporary_name`'s names whose process is gone are touched (and, with ``suffixes``, only those of
    targets with one of these suffixes), so a run writing there now keeps its own.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in (folder.rglob if recursive else folder.glob)(".*.tmp*"):
        match = _TEMPORARY.match(path.name)
        if (not match or _process_alive(int(match.group("pid")))
                or (suffixes is not None and not match.group("name").endswith(tuple(suffixes)))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
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
