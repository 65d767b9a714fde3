"""Reading checkpoint files safely.

The file type comes from its first bytes, not its name. Safetensors files are read as they are.
Torch pickles are read with ``weights_only=True``; training checkpoints that also pickle known
bookkeeping objects (numpy scalars, mmengine's HistoryBuffer, argparse.Namespace, ...) load with
those objects swapped for inert stand-ins, so no code from the file ever runs. A pickle that
needs any other object is refused unless the user opts in with ``trust_pickle=True`` or the
environment variable ``CVX2_ALLOW_UNSAFE_PICKLE=1``.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .errors import CheckpointError, UnsafeCheckpointError

UNSAFE_PICKLE_ENV = "CVX2_ALLOW_UNSAFE_PICKLE"

# Objects training code pickles next to the weights; none of them is needed to read the weights.
_BOOKKEEPING_PREFIXES = ("numpy.", "mmengine.", "pathlib.")
_BOOKKEEPING_NAMES = frozenset({
    "argparse.Namespace", "builtins.getattr", "builtins.bytes", "builtins.set", "builtins.frozenset",
    "builtins.slice", "_codecs.encode", "collections.defaultdict",
})
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


@dataclass
class FileContents:
    """What a checkpoint file held, and how it was read."""

    obj: Any
    kind: str  # 'safetensors' | 'torch'
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class _Inert:
    """Stand-in for a pickled bookkeeping object: accepts any construction or state and does nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "_Inert":
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<skipped pickled object>"


def pickle_trusted(trust_pickle: bool | None) -> bool:
    """The explicit opt-in to full unpickling: the argument if given, else ``CVX2_ALLOW_UNSAFE_PICKLE``."""
    if trust_pickle is not None:
        return bool(trust_pickle)
    return os.environ.get(UNSAFE_PICKLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def sniff(path: Path) -> str:
    """'safetensors', 'torch-zip' or 'torch-legacy' from the first bytes; a clear error for anything else."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the download or copy did not finish; fetch it again")
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch-legacy"
    if head.lstrip()[:1] == b"<":
        raise CheckpointError(f"{path} is an HTML/XML page, not a checkpoint: the download probably saved an error "
                              "or login page; download the file again from its real address")
    raise CheckpointError(f"{path} is not a checkpoint this package can read (not safetensors, not a torch file; "
                          f"it starts with {head[:8]!r}); it may be corrupt, or another framework's format")


def read_file(path: Path, trust_pickle: bool | None = None) -> FileContents:
    """Read one checkpoint file safely (see the module docstring)."""
    kind = sniff(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    return _read_torch(path, trust_pickle)


def read_files(paths: Sequence[Path], trust_pickle: bool | None = None) -> FileContents:
    """Read one file, or merge the shards of one sharded state dict."""
    if len(paths) == 1:
        return read_file(paths[0], trust_pickle)
    merged: dict[str, Any] = {}
    notes: list[str] = []
    kinds = set()
    for path in paths:
        part = read_file(path, trust_pickle)
        if not isinstance(part.obj, dict):
            raise CheckpointError(f"shard {path} does not hold a flat state dict")
        merged.update(part.obj)
        notes += part.notes
        kinds.add(part.kind)
    return FileContents(merged, "+".join(sorted(kinds)), notes=[f"merged {len(paths)} shards"] + notes)


def _read_safetensors(path: Path) -> FileContents:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path} is a corrupt or truncated safetensors file ({err}); download it again") from err
    return FileContents(tensors, "safetensors", metadata=metadata)


def _read_torch(path: Path, trust_pickle: bool | None) -> FileContents:
    try:
        return FileContents(_torch_load(path, weights_only=True), "torch")
    except pickle.UnpicklingError as err:
        needed = _globals_named_in(err)
        if not needed:
            raise _corrupt(path, err) from err
    if pickle_trusted(trust_pickle):
        obj = _torch_load(path, weights_only=False)
        return FileContents(obj, "torch", notes=["unpickled in full (trusted by the user)"])
    needed = sorted(_listed_unsafe_globals(path) or needed)
    # Legacy (non-zip) files name one missing global per attempt: retry until all are known.
    for _ in range(64):
        if not all(_is_bookkeeping(name) for name in needed):
            raise UnsafeCheckpointError(_refusal_message(path, needed))
        try:
            with torch.serialization.safe_globals([(_Inert, name) for name in needed]):
                obj = _torch_load(path, weights_only=True)
        except pickle.UnpicklingError as err:
            more = _globals_named_in(err)
            if not more or set(more) <= set(needed):
                raise _corrupt(path, err) from err
            needed = sorted(set(needed) | set(more))
            continue
        return FileContents(obj, "torch", notes=[f"skipped pickled bookkeeping objects ({', '.join(needed)})"])
    raise UnsafeCheckpointError(_refusal_message(path, needed))


def _torch_load(path: Path, weights_only: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError:
        raise
    except (ImportError, AttributeError) as err:  # only reachable when unpickling in full
        raise CheckpointError(f"{path} pickles objects of code that is not installed here ({err}); install the "
                              "package that wrote it, or convert the file where it is installed") from err
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise _corrupt(path, err) from err


def _corrupt(path: Path, err: BaseException) -> CheckpointError:
    return CheckpointError(f"{path} is a corrupt or truncated torch checkpoint ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else 'no details'}); download it again")


def _listed_unsafe_globals(path: Path) -> list[str]:
    """Every non-allowlisted global a zip checkpoint pickles ([] for legacy files, which cannot be listed)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except (ValueError, RuntimeError, AttributeError):
        return []


def _globals_named_in(err: BaseException) -> list[str]:
    """The globals a weights-only refusal names (none when the pickle is merely corrupt)."""
    return _UNSUPPORTED_GLOBAL.findall(str(err))


def _is_bookkeeping(name: str) -> bool:
    return name in _BOOKKEEPING_NAMES or name.startswith(_BOOKKEEPING_PREFIXES)


def _refusal_message(path: Path, needed: list[str]) -> str:
    unknown = [n for n in needed if not _is_bookkeeping(n)]
    return (f"refusing to load {path}: it is a pickle that needs these Python objects: {', '.join(unknown)}. "
            "Unpickling calls whatever those objects name, so a malicious file can run any code on this machine; "
            "torch pickles are therefore read with weights_only=True. If you trust where the file comes from, opt in "
            f"with {UNSAFE_PICKLE_ENV}=1 (or trust_pickle=True in Python, --trust-pickle on the command line), and "
            "consider `cvx2 convert FILE clean.safetensors` once to get a file that is safe to share and load")
