"""Run a script as a process that SIGKILLs itself at a chosen moment, as a crash or the OOM killer would.

``python -m tests.helpers.kill_while_writing NAME SCRIPT ARGS...`` runs SCRIPT (a file or a module) with ARGS; the
first write into a file whose name contains NAME (the final name or a staging name such as ``.NAME.tmpPID``) writes
half its bytes, flushes them to disk and kills the process. Whatever writes the file from Python (``open``,
``Path.write_bytes``), the disk is left as a real SIGKILL leaves it.

With ``--at-rename`` instead: the process is killed just before the first ``os.replace`` / ``os.rename`` whose
destination is named exactly NAME (the moment a finished output is put in place)."""
from __future__ import annotations

import builtins
import io
import os
import runpy
import signal
import sys

_open = io.open


class _DiesWhileWriting:
    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, data):
        self._handle.write(data[: max(1, len(data) // 2)])
        self._handle.flush()
        os.fsync(self._handle.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)


def main() -> None:
    at_rename = sys.argv[1] == "--at-rename"
    name, script, *args = sys.argv[2:] if at_rename else sys.argv[1:]
    if at_rename:
        target = name

        def dying(function):
            def rename(src, dst, *rest, **kwargs):
                if os.path.basename(os.fspath(dst)) == target:
                    os.kill(os.getpid(), signal.SIGKILL)
                return function(src, dst, *rest, **kwargs)
            return rename

        os.replace, os.rename = dying(os.replace), dying(os.rename)
        name = "\0"  # no file name contains it: writes go through

    def dying_open(file, mode="r", *rest, **kwargs):
        handle = _open(file, mode, *rest, **kwargs)
        if isinstance(file, (str, os.PathLike)) and ("w" in mode or "x" in mode) and \
                name in os.path.basename(os.fspath(file)):
            return _DiesWhileWriting(handle)
        return handle

    builtins.open = io.open = dying_open
    sys.argv = [script, *args]
    if os.path.isfile(script):
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        runpy.run_path(script, run_name="__main__")
    else:
        runpy.run_module(script, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
