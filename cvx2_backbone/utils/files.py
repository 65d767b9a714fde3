"""Writing files so that nobody ever reads half of one, and cleaning up after runs that were killed.

A file is written under a temporary sibling name (``.<name>.tmp<pid>``, a file or a staging folder) and renamed
over its target when complete, with the permissions the umask gives a new file; on an exception (SIGINT and
SIGTERM included) the temporary file is removed. Only SIGKILL or a power loss can leave one behind:
``remove_stale_temporaries`` deletes those whose process is gone.

A folder replaces an existing one in one step where the system can swap two names at once (Linux's
``renameat2(RENAME_EXCHANGE)``), so a SIGKILL at any moment leaves the old folder or the new one, never neither.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")
_BACKUP = re.compile(r"^\.(?P<name>.+)\.backup(?P<pid>\d+)$")


def temporary_name(path: str | os.PathLike) -> Path:
    """The temporary sibling this process writes ``path`` under (a file, or a staging folder)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def free_space(folder: str | os.PathLike) -> int | None:
    """Bytes free for new files in ``folder`` (or the nearest existing folder above it); None if unknown."""
    folder = Path(folder).absolute()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def disk_full(path: str | os.PathLike, needed: int | None = None) -> OSError:
    """The error for a disk that cannot take ``path``: names the path, the space needed (if known) and what is free,
    and says what to do (``utils.usage.error_message`` prints it as one line)."""
    free = free_space(Path(path).parent)
    amounts = ", ".join(part for part in (f"it needs about {_size(needed)}" if needed else "",
                                          f"{_size(free)} free there" if free is not None else "") if part)
    return OSError(errno.ENOSPC, f"No space left on device ({amounts})" if amounts else "No space left on device",
                   str(path))


def _is_disk_full(err: BaseException, folder: Path) -> bool:
    """Whether a writer's error is a full disk: ENOSPC / EDQUOT, or a library's wrapped form of it (safetensors says
    "os error 28"; torch's zip writer only "unexpected pos", so then the free space decides)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
        return True
    free = free_space(folder)
    return isinstance(err, RuntimeError) and free is not None and free < 1 << 20


def _check_space(path: Path, needed: int | None) -> None:
    free = free_space(path.parent)
    if needed and free is not None and free < needed:
        raise disk_full(path, needed)


@contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write to; renamed over ``path`` when the block succeeds. ``needed``: the
    bytes the file will take, checked against the free space before anything is written. A full disk, however the
    writer reports it, becomes :func:`disk_full`'s ``OSError``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_space(path, needed)
    tmp = temporary_name(path)
    try:
        yield tmp
        follow_umask(tmp)
        os.replace(tmp, path)
    except Exception as err:
        tmp.unlink(missing_ok=True)  # first: the space it took decides whether the disk is full
        if _is_disk_full(err, path.parent):
            raise disk_full(path, needed) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap the names ``a`` and ``b`` (both must exist) in one step; False where the system cannot (then nothing
    changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without renameat2 (glibc < 2.28, musl)
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: a file system or kernel that cannot swap
        return False
    raise OSError(errno, os.strerror(errno), os.fspath(b))


def _carry_over(old: Path, new: Path) -> None:
    """Give the staging folder ``new`` every entry of ``old`` it does not have (files as hard links, copies where
    links fail; folders entry by entry), so that swapping the folders keeps them."""
    for entry in old.iterdir():
        target = new / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if not target.exists():
                target.mkdir()
            if target.is_dir() and not target.is_symlink():
                _carry_over(entry, target)
        elif not os.path.lexists(target):
            if entry.is_symlink():
                os.symlink(os.readlink(entry), target)
                continue
            try:
                os.link(entry, target)
            except OSError:
                shutil.copy2(entry, target)


@contextmanager
def atomic_folder(path: str | os.PathLike, *, keep_others: bool = False, needed: int | None = None) -> Iterator[Path]:
    """A temporary staging folder (:func:`temporary_name`) to write to; it replaces ``path`` (file or folder) when the
    block succeeds (in one step where :func:`exchange` can), and is removed otherwise.

    ``keep_others``: where ``path`` is a folder already, the entries of it that the new folder does not have (a
    user's other files) stay in it; only the names written are replaced. ``needed``: as for :func:`atomic_path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    old = path.with_name(f".{path.name}.old{os.getpid()}")
    _check_space(path, needed)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        try:
            yield tmp
        except Exception as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if _is_disk_full(err, path.parent):
                raise disk_full(path, needed) from err
            raise
        if keep_others and path.is_dir() and not path.is_symlink():
            _carry_over(path, tmp)
        if os.path.lexists(path) and exchange(tmp, path):
            return  # the old folder is now at ``tmp``: removed below
        if os.path.lexists(path):
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def replace_together(moves: Sequence[tuple[Path, Path]]) -> None:
    """Put several finished files in place (``staged -> target`` each) as one output, e.g. an ONNX file with its
    OpenVINO .xml and .bin. The system renames one file at a time, so the earlier targets are first hard-linked into a
    backup folder (``.FIRST.backupPID``), removed once every file is in place; if the process is killed in between,
    :func:`remove_stale_temporaries` (run by the next writer there) puts the earlier files back, so the output is the
    earlier one or the new one, never a mix."""
    if not moves:
        return
    first = moves[0][1]
    backup = first.with_name(f".{first.name}.backup{os.getpid()}")
    shutil.rmtree(backup, ignore_errors=True)
    backup.mkdir()
    try:
        for _, target in moves:
            if target.is_file():
                try:
                    os.link(target, backup / target.name)
                except OSError:
                    shutil.copy2(target, backup / target.name)
        # Written last: without it the backup is not whole and restores nothing (nothing was replaced yet).
        (backup / _BACKUP_MANIFEST).write_text("\n".join(target.name for _, target in moves))
        for staged, target in moves:
            os.replace(staged, target)
    except BaseException:
        _restore(backup)
        raise
    shutil.rmtree(backup, ignore_errors=True)


_BACKUP_MANIFEST = ".targets"


def _restore(backup: Path) -> None:
    """Undo a :func:`replace_together` that did not finish (if its backup is whole): the earlier files go back, and
    targets that had no earlier file are removed. Then the backup goes."""
    manifest = backup / _BACKUP_MANIFEST
    if manifest.is_file():
        for name in manifest.read_text().split("\n"):
            saved, target = backup / name, backup.parent / name
            if saved.is_file():
                os.replace(saved, target)
            else:
                target.unlink(missing_ok=True)
    shutil.rmtree(backup, ignore_errors=True)


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
    targets with one of these suffixes), so a run writing there now keeps its own. A :func:`replace_together` that was
    killed half-way is undone: the earlier files go back in place.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in (folder.rglob if recursive else folder.glob)(".*.backup*"):
        match = _BACKUP.match(path.name)
        if (match and path.is_dir() and not _process_alive(int(match.group("pid")))
                and (suffixes is None or match.group("name").endswith(tuple(suffixes)))):
            _restore(path)
            removed.append(path)
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
