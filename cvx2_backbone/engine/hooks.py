"""Runner checkpoints that a plain ``torch.load(path, weights_only=True)`` reads, without this package.

mmengine saves its message hub in every checkpoint: the logged scalars' histories as ``HistoryBuffer``
objects (numpy arrays inside) and runtime values that are often numpy scalars. torch's safe loader refuses
those objects, so every upstream client fails on them. :class:`PlainCheckpointHook` stores them as
tensors, numbers, lists and dicts when the Runner saves a checkpoint, and rebuilds the HistoryBuffers when
the Runner loads one to resume. Every config of the project lists the hook in ``custom_hooks``;
``tools/train.py`` adds it to configs that do not (:func:`with_plain_checkpoints`).

The hook also makes the checkpoints whole-or-nothing: mmengine's CheckpointHook writes ``epoch_N.pth`` /
``iter_N.pth`` with ``open(path, 'wb')``, so a run killed while saving (SIGKILL, OOM killer, power loss) leaves a
truncated file under the final name, where ``--resume`` and every upstream tool find it. Where the CheckpointHook
writes to local disk with mmengine's default backend, the hook gives it :class:`AtomicLocalBackend`, which writes a
staging file (``.iter_4.pth.tmpPID``) and renames it over the final name when complete (the next ``tools/train.py`` in
that work dir removes the staging files of killed runs). This works through any tool that runs the config's
``custom_hooks``: this project's ``tools/train.py`` and mmdet's / mmseg's own.

The same hook keeps resuming exact on the maintained fork: upstream mmengine resumes an iteration-based run by
fetching (and discarding) the batches already trained on, so the data pipeline's random transforms advance the
global random state as in the uninterrupted run; onedl-mmengine's loop instead skips the sampler ahead
(``_InfiniteDataloaderIterator.skip_iter``), so the random crops after a resume differ from the uninterrupted run's
(measured: iteration 3's loss 1.832 instead of 1.466 in tests/engine/test_fsdp2.py). With ``replay_on_resume`` (the
default) the hook makes the fork's iterator replay the skipped batches as upstream does; upstream's iterator has no
``skip_iter`` and is left alone.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from mmengine.config import Config
from mmengine.fileio import LocalBackend, get_file_backend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import HistoryBuffer

from cvx2_backbone.registry import HOOKS
from cvx2_backbone.utils.files import atomic_path
from cvx2_backbone.utils.usage import UsageError

HOOK_TYPE = "cvx2_backbone.PlainCheckpointHook"
_BUFFER_KEYS = frozenset({"log_history", "count_history", "max_length"})
ATOMIC_BACKEND = "cvx2_backbone_atomic_local"


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, except that a written file appears whole or not at all."""

    def put(self, obj: bytes, filepath) -> None:
        with atomic_path(filepath) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(obj)

    def put_text(self, obj: str, filepath, encoding: str = "utf-8") -> None:
        self.put(obj.encode(encoding), filepath)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def ignored_strategy(runner) -> str | None:
    """A config that asks for a training strategy (FSDP2, DeepSpeed, ...) run by mmengine's plain Runner, which does
    not read ``strategy``: mmdet's and mmseg's own tools/train.py build that Runner unless the config names
    ``runner_type='FlexibleRunner'``, and training would go on unsharded without a word."""
    cfg = getattr(runner, "cfg", None)
    strategy = cfg.get("strategy") if cfg is not None else None
    if not strategy or hasattr(runner, "strategy"):  # FlexibleRunner has one
        return None
    name = strategy.get("type", strategy) if isinstance(strategy, dict) else strategy
    name = getattr(name, "__name__", name)
    return (f"the config asks for strategy {name}, but {type(runner).__name__} ignores it (only mmengine's "
            "FlexibleRunner runs strategies): add --cfg-options runner_type=FlexibleRunner to this tools/train.py "
            "(and start it with tools/dist_train.sh), or use cvx2_backbone's tools/train.py, which switches by itself")


def make_checkpoints_atomic(runner) -> None:
    """Point the runner's CheckpointHooks that write local files with mmengine's default backend at
    :class:`AtomicLocalBackend` (a hook configured with its own backend or file client is left as it is)."""
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook) or hook.backend_args or hook.file_client_args:
            continue
        out_dir = hook.out_dir if hook.out_dir is not None else runner.work_dir
        if type(get_file_backend(str(out_dir))) is not LocalBackend:
            continue
        hook.backend_args = {"backend": ATOMIC_BACKEND}
        if getattr(hook, "file_backend", None) is not None:
            hook.file_backend = get_file_backend(str(out_dir), backend_args=hook.backend_args)


def plain(obj: Any) -> Any:
    """``obj`` with numpy values as Python numbers and lists, and HistoryBuffers as dicts of tensors."""
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {"log_history": torch.from_numpy(np.array(log)), "count_history": torch.from_numpy(np.array(count)),
                "max_length": int(obj.max_length)}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):  # OrderedDict stays one (torch allows it); other dict classes become dicts
        return (OrderedDict if isinstance(obj, OrderedDict) else dict)((k, plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):  # named tuples keep their class
        return type(obj)(plain(value) for value in obj)
    return obj


def restore_message_hub(state: dict) -> dict:
    """The message hub state with its plain scalar histories turned back into HistoryBuffers."""
    scalars = state.get("log_scalars", {})
    for key, value in scalars.items():
        if isinstance(value, dict) and set(value) == _BUFFER_KEYS:
            scalars[key] = HistoryBuffer(value["log_history"].numpy(), value["count_history"].numpy(),
                                         value["max_length"])
    return state


@HOOKS.register_module()
class PlainCheckpointHook(Hook):
    """Saves the Runner's checkpoints in plain types (see the module docstring); resumes from them and from
    mmengine's own."""

    priority = "LOWEST"  # after hooks that add to the checkpoint (EMA, ...)

    def __init__(self, replay_on_resume: bool = True) -> None:
        self.replay_on_resume = replay_on_resume

    def before_train(self, runner) -> None:  # after CheckpointHook's own before_train (higher priority)
        problem = ignored_strategy(runner)
        if problem:
            raise UsageError(problem)
        make_checkpoints_atomic(runner)
        iterator = getattr(getattr(runner, "train_loop", None), "dataloader_iterator", None)
        if self.replay_on_resume and callable(getattr(iterator, "skip_iter", None)):
            iterator.skip_iter = functools.partial(replay_batches, iterator)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in list(checkpoint):
            if key != "state_dict":  # tensors only, and often large
                checkpoint[key] = plain(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if isinstance(checkpoint.get("message_hub"), dict):
            restore_message_hub(checkpoint["message_hub"])


def replay_batches(iterator: Any, num_iters: int) -> None:
    """Fetch and drop ``num_iters`` batches: upstream mmengine's way to resume, which runs the data pipeline."""
    for _ in range(num_iters):
        next(iterator)


def with_plain_checkpoints(cfg: Config) -> None:
    """Add :class:`PlainCheckpointHook` to the config's ``custom_hooks`` unless it is there."""
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(isinstance(hook, dict) and hook.get("type") in (HOOK_TYPE, PlainCheckpointHook) for hook in hooks):
        cfg.custom_hooks = hooks + [dict(type=HOOK_TYPE)]
