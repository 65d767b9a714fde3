"""One error style for every command line of this package: ``cvx2 ...`` and ``tools/*.py``.

* A user mistake (bad argument, missing file, weights that do not fit, unknown preset, no CUDA)
  prints ``PROG: error: <problem>; <fix>`` (one or two lines) on stderr and exits with status 2.
* An internal error keeps its traceback and exits with status 1.
* SIGINT and SIGTERM end a command with a one-line message and status 130 / 143 (128 + signal).
* ``--debug`` (or ``CVX2_DEBUG=1``) adds the traceback to a user error.

How a command uses it (``cvx2 export`` and every new command or tool should do the same):

1. ``add_debug_argument(parser)`` on its argument parser;
2. ``return run_command(lambda: command(args), prog="cvx2 export", debug=args.debug)`` as its main;
3. raise :class:`UsageError` (problem and fix in the message) for anything the user can correct.
   Errors this package already raises about user input count as user errors everywhere: see
   :func:`user_errors` (``CheckpointError`` and its subclasses, ``HubUnavailableError``,
   ``FileNotFoundError`` and every other ``OSError``);
4. wrap the code that validates user input in ``with user_input(): ...``: a ``ValueError`` or
   ``TypeError`` raised inside becomes a :class:`UsageError`; outside such a block it stays an
   internal error with its traceback (``user_input(KeyError)`` adds other types);
5. ``require_device(args.device)`` for a ``--device`` option, :class:`Interrupted` (raised on
   SIGINT and SIGTERM inside ``run_command``) to keep partial results valid before exiting;
6. weights given by the user: ``cvx2_backbone.weights.check_fit(model, source, allow_partial=...)``
   before any work (``--allow-partial`` is the flag's name everywhere); it raises ``CheckpointError``.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from contextlib import contextmanager
from typing import Callable, Iterator

DEBUG_ENV = "CVX2_DEBUG"
EXIT_USAGE = 2
EXIT_INTERNAL = 1


class UsageError(Exception):
    """A mistake the user can fix; the message names the problem and the fix."""


class DeviceUnavailableError(UsageError):
    """A ``--device`` this machine does not have (CUDA without a GPU, a GPU index out of range)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def user_errors() -> tuple[type[BaseException], ...]:
    """User errors wherever they come from: this package's checkpoint errors name the fix, and an OSError (missing
    file, no permission, disk full, no network) is about the user's files or machine, not a bug."""
    # Read from sys.modules: a command that never touched weights cannot have raised their errors, and importing
    # the weights package here would import torch into every command line, `--help` included.
    errors = sys.modules.get("cvx2_backbone.weights.errors")
    weight_errors = (errors.CheckpointError, errors.HubUnavailableError) if errors else ()
    return (UsageError, *weight_errors, OSError)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` only where it informs: not to flags, ``None`` defaults or texts naming their default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default in (None, False, argparse.SUPPRESS)
                or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))):
            return text
        return super()._get_help_string(action)


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help=f"print the full traceback of errors too (or set {DEBUG_ENV}=1)")


@contextmanager
def user_input(*also: type[Exception]) -> Iterator[None]:
    """Inside this block ``ValueError``, ``TypeError`` (and the types in ``also``, e.g. the ``KeyError`` of an
    unknown registry type) are the user's mistake: they become ``UsageError``."""
    try:
        yield
    except user_errors():
        raise
    except (ValueError, TypeError, *also) as err:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise UsageError(str(text) or type(err).__name__) from err


def require_device(name: str | None):
    """``--device NAME`` as a ``torch.device`` (None: cuda if there is a GPU, else cpu); clear errors otherwise."""
    import torch

    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"unknown device {name!r} ({err}); use cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "torch finds no CUDA GPU"
            raise DeviceUnavailableError(f"--device {name}: CUDA is not available on this machine ({why}); "
                                         "use --device cpu, or leave --device out to pick what is there")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceUnavailableError(f"--device {name}: this machine has {count} CUDA device(s), "
                                         f"cuda:0..cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(f"--device {name}: Apple's MPS is not available here; use --device cpu")
    return device


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in this block (main thread only), so ``finally``
    clauses and ``except KeyboardInterrupt`` run for both; the previous handlers come back afterwards."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _debug_requested(debug: bool) -> bool:
    return debug or os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


_WHAT_TO_DO = {  # errno -> the fix, for the OS errors a user meets writing outputs
    28: "free some space on that disk, or write somewhere else (another -o / --work-dir)",
    122: "free some of your disk quota, or write somewhere else (another -o / --work-dir)",
    30: "that disk is mounted read-only: write to a folder on a writable disk (another -o / --work-dir)",
    13: "check the permissions of the file and its folder, or use a path you can write to (another -o / --work-dir)",
    1: "check the permissions of the file and its folder, or use a path you can write to (another -o / --work-dir)",
}


def error_message(err: BaseException) -> str:
    """The text of a user error; an OS error as ``reason: file`` and, for a full or read-only disk or a permission
    problem, what to do."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        fix = _WHAT_TO_DO.get(err.errno or 0)
        reason = err.strerror[0].lower() + err.strerror[1:]
        return f"{reason}: {err.filename}" + (f"; {fix}" if fix else "")
    return str(err) or type(err).__name__


def print_error(line: str) -> None:
    print(line, file=sys.stderr)


def run_command(command: Callable[[], int | None], prog: str, debug: bool = False,
                report: Callable[[str], None] = print_error) -> int:
    """Run ``command()`` in the package's error style (see the module docstring); return the exit status.

    ``report`` receives a user error's line (default: printed on stderr; a distributed worker hands it to its
    launcher, which prints one for all ranks)."""
    try:
        with interrupts_raise():
            return int(command() or 0)
    except user_errors() as err:
        if _debug_requested(debug):
            traceback.print_exc()
        report(f"{prog}: error: {error_message(err)}")
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Interrupted) else int(signal.SIGINT)
        if _debug_requested(debug):
            traceback.print_exc()
        print(f"\n{prog}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except Exception:  # an internal error: the traceback is what a bug report needs
        traceback.print_exc()
        print(f"{prog}: internal error (the traceback above); if the input looks right, please report it",
              file=sys.stderr)
        return EXIT_INTERNAL
