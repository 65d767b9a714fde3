"""Which checkpoint ``--resume`` continues from: the newest one in the work dir that reads completely.

mmengine resumes from the file named in ``<work_dir>/last_checkpoint``. A run killed while it
saved (SIGKILL, power loss, a full disk) leaves that checkpoint truncated, and resuming from it
fails. Here the file mmengine names comes first, then the work dir's ``epoch_N.pth`` /
``iter_N.pth`` from the highest N down; the first one that reads completely (with the package's
safe reader) is used, and every one passed over is named with the reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvx2_backbone.utils.usage import UsageError
from cvx2_backbone.weights import CheckpointError, UnsafeCheckpointError
from cvx2_backbone.weights.reading import read_file
from cvx2_backbone.engine.sharded_checkpoint import is_sharded_checkpoint, sharded_checkpoint_problem

_PERIODIC = re.compile(r"^(epoch|iter)_(\d+)\.pth$")
LAST_CHECKPOINT = "last_checkpoint"  # mmengine's pointer file in the work dir


@dataclass
class ResumePoint:
    """The checkpoint to resume from (None: the work dir has none), its contents, and the ones passed over."""

    path: Path | None
    contents: Any = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def notes(self) -> list[str]:
        """What to tell the user when the newest checkpoint could not be used."""
        return [f"the checkpoint {path} cannot be used ({reason}); resuming from {self.path}, the newest one "
                "that loads" for path, reason in self.skipped]


def candidates(work_dir: str | Path) -> list[Path]:
    """The work dir's checkpoints, best first: the one ``last_checkpoint`` names, then by epoch/iteration, downwards."""
    work_dir = Path(work_dir)
    found: list[Path] = []
    pointer = work_dir / LAST_CHECKPOINT
    try:
        named = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        named = ""
    if named and Path(named).is_file():
        found.append(Path(named))
    periodic = [(int(m.group(2)), p) for p in work_dir.glob("*.pth") if (m := _PERIODIC.match(p.name))]
    for _, path in sorted(periodic, key=lambda item: item[0], reverse=True):
        if not any(path.resolve() == known.resolve() for known in found):
            found.append(path)
    return found


def earlier_run_problem(work_dir: str | Path) -> str | None:
    """For a run that does not resume: why training into ``work_dir`` would overwrite an earlier run's checkpoints
    (mmengine writes ``epoch_N.pth`` / ``iter_N.pth`` and ``last_checkpoint`` over what is there); None if it holds
    none."""
    work_dir = Path(work_dir)
    found = [path.name for path in candidates(work_dir) if path.parent.resolve() == work_dir.resolve()]
    if (work_dir / LAST_CHECKPOINT).is_file():
        found.append(LAST_CHECKPOINT)
    if not found:
        return None
    shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
    return (f"{work_dir} holds the checkpoints of an earlier run ({shown}) that this run would overwrite; continue "
            "that run with --resume, or pass another --work-dir (or move those files away)")


def _unusable(contents: Any) -> str | None:
    """Why a readable file is not a training checkpoint mmengine can resume from (None if it is one)."""
    if not isinstance(contents, dict) or "state_dict" not in contents or "meta" not in contents:
        return "not a training checkpoint: it has no state_dict and meta"
    return None


def _why_unreadable(err: CheckpointError) -> str:
    if isinstance(err, UnsafeCheckpointError):
        return "refused as unsafe: it pickles objects other than mmengine's and numpy's"
    cause = err.__cause__
    detail = f"{type(cause).__name__}: {str(cause).splitlines()[0]}" if cause is not None and str(cause) else str(err)
    return f"truncated or corrupt, {detail}"


def newest_loadable(work_dir: str | Path) -> ResumePoint:
    """The newest checkpoint of ``work_dir`` that reads completely (see the module docstring)."""
    skipped: list[tuple[Path, str]] = []
    for path in candidates(work_dir):
        if is_sharded_checkpoint(path):  # FSDP2's folders: complete once renamed (see .sharded_checkpoint)
            reason = sharded_checkpoint_problem(path)
            if reason:
                skipped.append((path, reason))
                continue
            return ResumePoint(path, None, skipped)
        try:
            contents = read_file(path).obj
        except CheckpointError as err:
            skipped.append((path, _why_unreadable(err)))
            continue
        reason = _unusable(contents)
        if reason:
            skipped.append((path, reason))
            continue
        return ResumePoint(path, contents, skipped)
    if skipped:
        listed = "; ".join(f"{path}: {reason}" for path, reason in skipped)
        raise UsageError(f"--resume: no checkpoint in {work_dir} loads ({listed}); delete them to start afresh, or "
                         "pass --resume PATH with a good copy")
    return ResumePoint(None)
