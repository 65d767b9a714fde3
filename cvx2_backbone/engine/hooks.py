"""Runner checkpoints that a plain ``torch.load(path, weights_only=True)`` reads, without this package.

mmengine saves its message hub in every checkpoint: the logged scalars' histories as ``HistoryBuffer``
objects (numpy arrays inside) and runtime values that are often numpy scalars. torch's safe loader refuses
those objects, so every upstream client fails on them. :class:`PlainCheckpointHook` stores them as
tensors, numbers, lists and dicts when the Runner saves a checkpoint, and rebuilds the HistoryBuffers when
the Runner loads one to resume. Every config of the project lists the hook in ``custom_hooks``;
``tools/train.py`` adds it to configs that do not (:func:`with_plain_checkpoints`).

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
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer

from cvx2_backbone.registry import HOOKS

HOOK_TYPE = "cvx2_backbone.PlainCheckpointHook"
_BUFFER_KEYS = frozenset({"log_history", "count_history", "max_length"})


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

    def before_train(self, runner) -> None:
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
