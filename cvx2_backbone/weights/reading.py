"""Reading checkpoint files safely.

The file type comes from its first bytes, not its name. Safetensors files are read as they are.
Torch pickles are read with ``weights_only=True``; training checkpoints that also pickle known
bookkeeping objects (numpy scalars, mmengine's HistoryBuffer, argparse.Namespace, ...) load with
those objects swapped for inert stand-ins, so no code from the file ever runs. A pickle that
needs any other object is refused unless the user opts in with ``trust_pickle=True`` or the
environment variable ``CVX2_ALLOW_UNSAFE_PICKLE=1``.
"""
from __future__ import annotations

import _compat_pickle
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from cvx2_backbone.utils.unsafe_pickle import UNSAFE_PICKLE_ENV, unsafe_pickle_opted_in
from cvx2_backbone.weights.errors import CheckpointError, UnsafeCheckpointError

# Objects training code pickles next to the weights; none of them is needed to read the weights.
_BOOKKEEPING_PREFIXES = ("numpy.", "mmengine.", "pathlib.")
_BOOKKEEPING_NAMES = frozenset({
    "argparse.Namespace", "builtins.getattr", "builtins.bytes", "builtins.set", "builtins.frozenset",
    "builtins.slice", "_codecs.encode", "collections.defaultdict",
})
_GET_A_COPY = "it was cut short or damaged while being saved, copied or downloaded: download or copy it again"
# torch's weights-only unpickler refuses a global in two wordings (torch/_weights_only_unpickler.py), naming it
# without its 'builtins.' prefix in the first; these and its refusals to call or build an object are safety
# refusals, every other UnpicklingError (e.g. "Unsupported operand") means a corrupt file.
_REFUSED_GLOBAL = (re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global"),
                   re.compile(r"Trying to load unsupported GLOBAL (\S+) whose module \S+ is blocked"))
_REFUSED_OBJECT = (re.compile(r"Trying to call reduce for unrecognized function (.+?)(?: which belongs to .*)?$",
                              re.MULTILINE),
                   re.compile(r"Can only create new object for nn\.Parameter or classes allowlisted via "
                              r"`add_safe_globals` but got (.+)$", re.MULTILINE),
                   re.compile(r"Can only build Tensor, Parameter, OrderedDict or types allowlisted via "
                              r"`add_safe_globals`, but got (.+)$", re.MULTILINE))
# Objects that run commands or code, or change files, when called: a pickle naming them is almost surely an attack.
_CODE_RUNNERS = ("os.", "posix.", "nt.", "sys.", "subprocess.", "builtins.eval", "builtins.exec",
                 "builtins.compile", "builtins.__import__", "runpy.", "pty.", "shutil.", "socket.")


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
    return unsafe_pickle_opted_in()


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
        raise CheckpointError(f"{path} is a corrupt or truncated safetensors file ({err}); {_GET_A_COPY}") from err
    return FileContents(tensors, "safetensors", metadata=metadata)


def _read_torch(path: Path, trust_pickle: bool | None) -> FileContents:
    try:
        return FileContents(_torch_load(path, weights_only=True), "torch")
    except pickle.UnpicklingError as err:
        refused = _refused_in(err)
        if refused is None:
            raise _corrupt(path, err) from err
    if pickle_trusted(trust_pickle):
        obj = _torch_load(path, weights_only=False)
        return FileContents(obj, "torch", notes=["unpickled in full (trusted by the user)"])
    needed = sorted(set(_listed_unsafe_globals(path)) | set(refused))
    # Legacy (non-zip) files name one missing global per attempt: retry until all are known.
    for _ in range(64):
        if not needed or not all(_is_bookkeeping(name) for name in needed):
            raise UnsafeCheckpointError(_refusal_message(path, needed or refused))
        try:
            with torch.serialization.safe_globals([(_Inert, name) for name in needed]):
                obj = _torch_load(path, weights_only=True)
        except pickle.UnpicklingError as err:
            more = _refused_in(err)
            if more is None:
                raise _corrupt(path, err) from err
            if set(more) <= set(needed):  # refused to call or build something despite the stand-ins
                raise UnsafeCheckpointError(_refusal_message(path, more)) from err
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
                           f"{str(err).splitlines()[0] if str(err) else 'no details'}); {_GET_A_COPY}")


def _listed_unsafe_globals(path: Path) -> list[str]:
    """Every non-allowlisted global a zip checkpoint pickles ([] for legacy files, which cannot be listed)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except (ValueError, RuntimeError, AttributeError):
        return []


def _refused_in(err: BaseException) -> list[str] | None:
    """What a weights-only safety refusal names (full global names where torch gives them); None when the
    error is no safety refusal, i.e. the file is corrupt."""
    text = str(err)
    names = [_full_name(name) for pattern in _REFUSED_GLOBAL for name in pattern.findall(text)]
    objects = [found.strip() for pattern in _REFUSED_OBJECT for found in pattern.findall(text)]
    return sorted(set(names + objects)) if names or objects else None


def _full_name(name: str) -> str:
    """torch names builtins without their module ('eval'); give them back ('builtins.eval')."""
    return name if "." in name else f"builtins.{name}"


def _is_bookkeeping(name: str) -> bool:
    return name in _BOOKKEEPING_NAMES or name.startswith(_BOOKKEEPING_PREFIXES)


def _python3_name(name: str) -> str:
    """The object a pickle name means: protocol-2 pickles store Python 2 names (``commands`` for ``subprocess``),
    which torch reports as they are written."""
    module, _, attr = name.rpartition(".")
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{attr}" if module else name


def _shown(name: str) -> str:
    meant = _python3_name(name)
    module, _, attr = meant.rpartition(".")
    if module in ("posix", "nt"):
        meant = f"os.{attr}"
    return name if meant == name else f"{meant} (pickled as {name})"


def _refusal_message(path: Path, needed: list[str]) -> str:
    unknown = [n for n in needed if not _is_bookkeeping(n)] or needed
    runs_code = any(_python3_name(n).startswith(_CODE_RUNNERS) for n in unknown)
    danger = (" which can run commands or change files on this machine: unless you made the file yourself, treat it "
              "as malicious" if runs_code else "")
    return (f"refusing to load {path}: a safety refusal, not a corrupt file (nothing in it was run); the pickle asks "
            f"to call or build {', '.join(map(_shown, unknown))},{danger or ' Python objects that are not weights'}.\n"
            "Torch files are read with weights_only=True because unpickling runs whatever a file names, so a "
            f"malicious file can run any code. Only if you trust its source: {UNSAFE_PICKLE_ENV}=1 (any command; "
            "trust_pickle=True in Python, cvx2 convert --trust-pickle), then `cvx2 convert FILE clean.safetensors` "
            "gives a file that is safe to share")
