"""The published training recipes behind the shipped configs, and the check that each config follows its row.

The table (``table.py``) has one ``Recipe`` per config file under ``configs/`` (``_base_`` excluded), keyed by
its path under ``configs/``:

- ``source``: the URL (with commit) of the published config the values come from; ``note`` says when the
  source publishes the recipe for another model (another size, another detector);
- ``published``: every field of ``FIELDS`` (``fields.py``) as the source gives it. Values are plain data --
  numbers, strings, tuples (never lists), dicts -- and None where a field does not apply (``test_mode`` of a
  detector, ``nms`` of a model without an RoI head); ``train_pipeline``/``test_pipeline`` name a
  ``PIPELINES`` entry;
- ``deviations``: field -> ``Deviation(our value, reason)`` for what the shipped config does on purpose
  instead; a deviation equal to the published value is an error, so none goes stale.

Families share their values through dicts (``V1_DETECTION``, ``V2_MASK_RCNN``, ``V1_UPERNET``); the
DINO, Mask2Former and RetinaNet rows and pipelines live in ``heads.py``. To add a family: its source URLs
and pipelines, a family dict, one row per config joined into ``RECIPES`` here; a field the family needs
that ``FIELDS`` lacks goes into ``FIELDS`` with an extractor that returns None for the models it does not
apply to.

``check_config(cfg, name)`` lists every field where a parsed config differs from its row (the test suite
asserts the list is empty for every shipped config); ``python -m tests.recipes`` prints the table
as Markdown, which docs/training.md holds.
"""
from __future__ import annotations

from typing import Any, Mapping

from tests.recipes import table
from tests.recipes.dinov3 import dinov3_rows
from tests.recipes.fields import FIELDS, plain, recipe_of
from tests.recipes.heads import HEAD_PIPELINES, head_rows
from tests.recipes.table import Deviation, Recipe

# Mask R-CNN and UperNet (table.py), then DINO, Mask2Former and RetinaNet (heads.py), then DINOv3 (dinov3.py).
PIPELINES: dict[str, tuple] = {**table.PIPELINES, **HEAD_PIPELINES}
RECIPES: dict[str, Recipe] = {**table.RECIPES, **{row.config: row for row in (*head_rows(), *dinov3_rows())}}
assert len(PIPELINES) == len(table.PIPELINES) + len(HEAD_PIPELINES), "a pipeline name is defined twice"

__all__ = ["FIELDS", "PIPELINES", "RECIPES", "Deviation", "Recipe", "check_config", "expected_value", "recipe_of",
           "render_markdown", "row_problems"]

_PIPELINE_FIELDS = ("train_pipeline", "test_pipeline")


def expected_value(row: Recipe, name: str) -> Any:
    """The value a config must have for field ``name`` (pipeline names expanded), as plain data."""
    value = row.expected(name)
    if name in _PIPELINE_FIELDS and isinstance(value, str):
        value = PIPELINES[value]
    return plain(value)


def row_problems(row: Recipe) -> list[str]:
    """What is wrong with a row itself: fields missing or unknown, deviations that deviate from nothing."""
    problems = [f"the row lacks the field {name!r}" for name in FIELDS if name not in row.published]
    problems += [f"unknown field {name!r}" for name in (*row.published, *row.deviations) if name not in FIELDS]
    problems += [f"the deviation of {name!r} equals the published value" for name, dev in row.deviations.items()
                 if name in row.published and plain(dev.value) == plain(row.published[name])]
    return problems


def _difference(actual: Any, expected: Any) -> str:
    """Where two values differ; for pipelines, the first step that does."""
    if isinstance(actual, tuple) and isinstance(expected, tuple) and actual and isinstance(actual[0], dict):
        for index, (mine, theirs) in enumerate(zip(actual, expected)):
            if mine != theirs:
                return f"step {index} is {mine!r}, expected {theirs!r}"
        return f"{len(actual)} steps, expected {len(expected)}"
    return f"{actual!r}, expected {expected!r}"


def check_config(cfg: Mapping, name: str) -> list[str]:
    """Every field where the parsed config ``cfg`` (``name``: its path under configs/) differs from its row."""
    row = RECIPES.get(name)
    if row is None:
        return [f"{name} has no row in tests.recipes.RECIPES: add the recipe it follows, with its source"]
    problems = [f"{name}: {problem}" for problem in row_problems(row)]
    actual = recipe_of(cfg)
    for field in FIELDS:
        if field not in row.published:
            continue
        expected = expected_value(row, field)
        if actual[field] != expected:
            what = "our documented deviation" if field in row.deviations else "the published recipe"
            problems.append(f"{name}: {field} is {_difference(actual[field], expected)} ({what})")
    return problems


# --- the table as Markdown -------------------------------------------------------------------------
def _schedule(value: Mapping) -> str:
    length = f"{value['epochs']} ep" if "epochs" in value else f"{value['iters'] // 1000}k it"
    parts = []
    for s in value["schedulers"]:
        parts.append(f"step {list(s['milestones'])}" if s["type"] == "step" else
                     f"poly {s['power']:g} from it {s['begin']}" if s["type"] == "poly" else s["type"])
    return ", ".join([length, *parts])


def _cell(row: Recipe, name: str) -> str:
    value = row.expected(name) if name in FIELDS else None
    if name == "weights":
        text = str(value).rsplit("/", 1)[-1]
    elif name == "warmup":
        text = "none" if value is None else f"{value['iters']} it from {value['start_factor']:g}"
    elif name == "schedule":
        text = _schedule(value)
    elif name == "decay":
        text = f"{row.expected('decay_type').split('_')[0]} {row.expected('decay_rate')} / {row.expected('num_layers')}"
    elif name == "batch":
        text = f"{row.expected('batch_per_gpu')} x 8 = {row.expected('total_batch')}"
    elif name == "test":
        mode, nms = row.expected("test_mode"), row.expected("nms")
        if mode:
            text = f"slide {mode['crop_size'][0]} / {mode['stride'][0]}" if mode["mode"] == "slide" else mode["mode"]
        else:
            text = nms["rcnn"]["type"].replace("_", "-") if nms and "rcnn" in nms else ""
    elif name == "amp":
        text = "yes" if value else "no"
    else:
        text = f"{value:g}" if isinstance(value, float) else str(value)
    deviated = {"decay": ("decay_type", "decay_rate", "num_layers"), "batch": ("batch_per_gpu", "total_batch"),
                "test": ("test_mode", "nms")}.get(name, (name,))
    return f"**{text}**" if any(d in row.deviations for d in deviated) else text


_COLUMNS = {"lr": "lr", "decay": "lr decay / layers", "drop_path_rate": "drop path", "layer_scale": "layer scale",
            "warmup": "warm-up", "schedule": "schedule", "batch": "batch", "amp": "AMP",
            "train_pipeline": "augmentation", "test": "test", "weights": "weights"}


def render_markdown() -> str:
    """The recipe table (values each config must have; deviations in bold) and the deviations with their reasons."""
    lines = ["| config | " + " | ".join(_COLUMNS.values()) + " | source |",
             "| --- " * (len(_COLUMNS) + 2) + "|"]
    for row in RECIPES.values():
        source = row.source.rsplit("/", 1)[-1].removesuffix(".py")
        lines.append(f"| {row.config.rsplit('/', 1)[-1].removesuffix('.py')} | "
                     + " | ".join(_cell(row, column) for column in _COLUMNS) + f" | [{source}]({row.source}) |")
    grouped: dict[str, list[str]] = {}
    for row in RECIPES.values():
        stem = row.config.rsplit("/", 1)[-1].removesuffix(".py")
        if row.note:
            grouped.setdefault(f"{row.note}.", []).append(stem)
        for name, dev in row.deviations.items():
            grouped.setdefault(f"`{name}`: {dev.reason}.", []).append(stem)
    lines += ["", "Deliberate deviations from the source (bold above), with the configs they apply to:", ""]
    lines += [f"- {reason} ({', '.join(stems)})" for reason, stems in grouped.items()]
    return "\n".join(lines) + "\n"
