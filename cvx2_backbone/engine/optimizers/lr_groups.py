"""The table of optimizer parameter groups that the constructor logs and ``cvx2 lr-groups`` prints."""
from __future__ import annotations

from typing import Iterable, Mapping


def _cell(value: object, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_lr_groups(param_groups: Iterable[Mapping], base_lr: float | None = None, header: str = "") -> str:
    """One row per parameter group: group, layer id, lr scale, lr, weight decay, tensors, parameters.

    Works on any optimizer's ``param_groups``; the layer id and name come from the keys that
    ``ConvNeXtLayerDecayOptimizerConstructor`` adds (``layer_id``, ``group_name``), the scale from
    ``lr_scale`` or else ``lr / base_lr``.
    """
    rows = []
    total_tensors = total_params = 0
    for index, group in enumerate(param_groups):
        lr = group.get("lr")
        scale = group.get("lr_scale")
        if scale is None and lr is not None and base_lr:
            scale = lr / base_lr
        tensors = len(group["params"])
        params = sum(p.numel() for p in group["params"])
        total_tensors += tensors
        total_params += params
        rows.append((str(group.get("group_name", f"group_{index}")), _cell(group.get("layer_id"), "d"),
                     _cell(scale, ".4g"), _cell(lr, ".3e"), _cell(group.get("weight_decay"), ".4g"),
                     str(tensors), f"{params:,}"))
    titles = ("group", "layer id", "lr scale", "lr", "weight decay", "tensors", "params")
    rows.append(("total", "", "", "", "", str(total_tensors), f"{total_params:,}"))
    widths = [max(len(row[i]) for row in [titles, *rows]) for i in range(len(titles))]
    left_aligned = 1  # the group name; numbers are right-aligned

    def line(row) -> str:
        return "  ".join(cell.ljust(w) if i < left_aligned else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(row, widths))).rstrip()

    rule = "-" * len(line(titles))
    body = [line(titles), rule, *(line(r) for r in rows[:-1]), rule, line(rows[-1])]
    return "\n".join(([header] if header else []) + body)
