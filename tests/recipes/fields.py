"""The recipe fields of a config: what each one means and how it is read from a parsed mmengine config.

Every extractor returns plain data (tuples for sequences, dicts for mappings) or None where the
field does not apply to the model (``test_mode`` of a detector, ``nms`` of a segmentor).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from cvx2_backbone.models.convnext import ConvNeXt, ConvNeXtV2

_LAYER_SCALE_DEFAULTS = {"cvx2_backbone.ConvNeXt": ConvNeXt.default_layer_scale,
                         "cvx2_backbone.ConvNeXtV2": ConvNeXtV2.default_layer_scale}


def plain(value: Any) -> Any:
    """Config values as comparable plain data: mappings -> dict, lists and tuples -> tuple."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) for v in value)
    return value


def _pipeline(steps: Any) -> tuple:
    """A data pipeline without the storage settings (``backend_args``), which are no part of the recipe."""
    return tuple({k: v for k, v in plain(step).items() if k != "backend_args"} for step in steps)


def _schedulers(cfg: Mapping) -> list[dict]:
    schedulers = cfg.get("param_scheduler") or []
    return [plain(s) for s in ([schedulers] if isinstance(schedulers, Mapping) else schedulers)]


def warmup(cfg: Mapping) -> dict | None:
    """The linear warm-up by iterations at the start of training: its length and start factor."""
    for scheduler in _schedulers(cfg):
        if scheduler["type"] == "LinearLR" and not scheduler.get("by_epoch", True) and scheduler.get("begin", 0) == 0:
            return dict(iters=scheduler["end"], start_factor=scheduler["start_factor"])
    return None


def schedule(cfg: Mapping) -> dict:
    """The main learning-rate schedule (every scheduler but the warm-up) and the training length."""
    train = cfg["train_cfg"]
    length = dict(epochs=train["max_epochs"]) if "max_epochs" in train else dict(iters=train["max_iters"])
    main = [s for s in _schedulers(cfg) if not (s["type"] == "LinearLR" and s.get("begin", 0) == 0)]
    named = {"MultiStepLR": "step", "PolyLR": "poly"}
    parts = []
    for s in main:
        parts.append({"type": named.get(s["type"], s["type"]),
                      **{k: v for k, v in s.items() if k not in ("type", "by_epoch", "_scope_")}})
    return dict(length, schedulers=tuple(parts))


def padding(cfg: Mapping) -> tuple | None:
    """How the data preprocessor pads a batch: to a fixed size, or to a multiple of the stride."""
    preprocessor = cfg["model"].get("data_preprocessor") or {}
    if preprocessor.get("size"):
        return ("size", plain(preprocessor["size"]))
    if preprocessor.get("pad_size_divisor"):
        return ("divisor", preprocessor["pad_size_divisor"])
    return None


def test_mode(cfg: Mapping) -> dict | None:
    """A segmentor's inference mode (``slide`` with its crop and stride, or ``whole``); None for detectors."""
    test_cfg = cfg["model"].get("test_cfg") or {}
    return plain(test_cfg) if "mode" in test_cfg else None


def nms(cfg: Mapping) -> dict | None:
    """A two-stage detector's test-time NMS (RPN and RoI head), score threshold and detections per image."""
    test_cfg = cfg["model"].get("test_cfg") or {}
    if "rcnn" not in test_cfg:
        return None
    rcnn = test_cfg["rcnn"]
    return dict(rpn=plain(test_cfg["rpn"]["nms"]), rcnn=plain(rcnn["nms"]), score_thr=rcnn["score_thr"],
                max_per_img=rcnn["max_per_img"])


def _backbone(cfg: Mapping) -> Mapping:
    return cfg["model"]["backbone"]


def _optimizer(cfg: Mapping) -> Mapping:
    return cfg["optim_wrapper"]["optimizer"]


def _decay(cfg: Mapping, key: str) -> Any:
    return (cfg["optim_wrapper"].get("paramwise_cfg") or {}).get(key)


def _layer_scale(cfg: Mapping) -> float:
    backbone = _backbone(cfg)
    value = backbone.get("layer_scale_init_value")
    return _LAYER_SCALE_DEFAULTS[backbone["type"]] if value is None else value


FIELDS: dict[str, Callable[[Mapping], Any]] = {
    "model": lambda cfg: cfg["model"]["type"],
    "backbone": lambda cfg: (_backbone(cfg)["type"], _backbone(cfg)["arch"]),
    "weights": lambda cfg: (_backbone(cfg).get("init_cfg") or {}).get("checkpoint"),
    "optimizer": lambda cfg: _optimizer(cfg)["type"],
    "lr": lambda cfg: _optimizer(cfg)["lr"],
    "betas": lambda cfg: plain(_optimizer(cfg).get("betas")),
    "weight_decay": lambda cfg: _optimizer(cfg).get("weight_decay"),
    "decay_type": lambda cfg: _decay(cfg, "decay_type"),
    "decay_rate": lambda cfg: _decay(cfg, "decay_rate"),
    "num_layers": lambda cfg: _decay(cfg, "num_layers"),
    "drop_path_rate": lambda cfg: _backbone(cfg).get("drop_path_rate", 0.0),
    "layer_scale": _layer_scale,
    "frozen_stages": lambda cfg: max(_backbone(cfg).get("frozen_stages", 0), 0),  # -1 and 0: none
    "warmup": warmup,
    "schedule": schedule,
    "batch_per_gpu": lambda cfg: cfg["train_dataloader"]["batch_size"],
    "total_batch": lambda cfg: cfg["auto_scale_lr"]["base_batch_size"],  # what --auto-scale-lr scales from
    "amp": lambda cfg: cfg["optim_wrapper"].get("type", "OptimWrapper") == "AmpOptimWrapper",
    "grad_clip": lambda cfg: plain(cfg["optim_wrapper"].get("clip_grad")),
    "train_pipeline": lambda cfg: _pipeline(cfg["train_dataloader"]["dataset"]["pipeline"]),
    "test_pipeline": lambda cfg: _pipeline(cfg["test_dataloader"]["dataset"]["pipeline"]),
    "padding": padding,
    "test_mode": test_mode,
    "nms": nms,
}


def recipe_of(cfg: Mapping) -> dict[str, Any]:
    """Every field of ``cfg`` (a parsed config), by name."""
    return {name: extract(cfg) for name, extract in FIELDS.items()}
