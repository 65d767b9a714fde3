"""Whole detectors and segmentors with this backbone to ONNX Runtime, through mmdeploy's own deploy configs.

:func:`export_onnx` is mmdeploy's ``torch2onnx`` with the model in hand: it builds the model from its config and
checkpoint with mmdeploy's task processor and exports under mmdeploy's rewriters, which include this package's
(:mod:`.mmdeploy_plugin`: the fixes of :mod:`.mmdeploy_compat`, plain ops, and :mod:`.mmdeploy_exact`), exactly as
mmdeploy's own ``torch2onnx`` does in a process that imported ``cvx2_backbone``.
:func:`build_deployed_model` wraps the ONNX file in mmdeploy's backend model, which takes the same batches and
returns the same data samples as the PyTorch model.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Union

from mmengine.config import Config
from torch import Tensor, nn

from cvx2_backbone.deploy.mmdeploy_compat import require_mmdeploy
from cvx2_backbone.deploy.mmdeploy_segmentation import SegmentationModel
from cvx2_backbone.engine.config import host_packages_by_import_name
from cvx2_backbone.models.convnext import ConvNeXt

ConfigLike = Union[str, Path, Config]
# This package's deploy configs first, then mmdeploy's own (copied unchanged from its v1.3.1 configs/).
CONFIG_DIR = Path(__file__).parent / "configs"  # mmdeploy's configs (copied) and this package's
DETECTION_DEPLOY_CONFIG = "mmdet/instance-seg/instance-seg_onnxruntime_dynamic.py"  # mmdeploy's own
SEGMENTATION_DEPLOY_CONFIG = "mmseg/segmentation-logits_onnxruntime_dynamic.py"  # mmdeploy's, logits out


def deploy_config(name: str) -> Path:
    """Path of a deploy config shipped with this package, by its mmdeploy ``configs/``-relative name."""
    if (CONFIG_DIR / name).is_file():
        return CONFIG_DIR / name
    shipped = sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.py") if "_base_" not in p.parts)
    raise FileNotFoundError(f"no shipped deploy config {name!r}; shipped: {shipped}. Pass the path of any other "
                            "config from a clone of open-mmlab/mmdeploy (tag v1.3.1) instead")


def count_backbones(model: nn.Module) -> int:
    """How many ConvNeXt backbones of this package ``model`` holds (the rewriters here assume at least one)."""
    return sum(isinstance(module, ConvNeXt) for module in model.modules())


def load_configs(deploy_cfg: ConfigLike, model_cfg: ConfigLike) -> tuple[Config, Config]:
    """mmdeploy's ``load_config`` for both (``mmseg::`` bases resolved on either stack), and a top-level
    ``test_pipeline`` (which mmdeploy reads) taken from the test or val loader when the model config has none
    (configs built in code, like the demo's)."""
    require_mmdeploy()
    from mmdeploy.utils import load_config

    given = (str(c) if isinstance(c, Path) else copy.deepcopy(c) for c in (deploy_cfg, model_cfg))  # callers' kept
    with host_packages_by_import_name():  # ``mmseg::`` bases on the maintained forks (engine/config.py says why)
        deploy_cfg, model_cfg = load_config(*given)
    if "test_pipeline" not in model_cfg:
        loader = model_cfg.get("test_dataloader") or model_cfg.get("val_dataloader")
        if not loader:
            raise ValueError("the model config has no test_pipeline and no test_dataloader/val_dataloader to take "
                             "one from; mmdeploy needs the test pipeline to prepare inputs")
        model_cfg.test_pipeline = loader.dataset.pipeline
    return deploy_cfg, model_cfg


def _nms_types(cfg: Any, path: str) -> list[tuple[str, str]]:
    """(dotted key, type) of every ``nms`` setting inside a test_cfg."""
    found = []
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            if key == "nms" and isinstance(value, dict):
                found.append((f"{path}.nms.type", value.get("type", "nms")))
            else:
                found.extend(_nms_types(value, f"{path}.{key}"))
    return found


def check_deployable(model_cfg: Config) -> None:
    """Refuse what the exported graph would compute differently from PyTorch (or mmdeploy would reject with a
    bare assertion): soft-NMS, sliding-window segmentation, Cascade heads with class-specific regression."""
    model = model_cfg.model
    test_cfg = model.get("test_cfg") or {}
    for key, kind in _nms_types(test_cfg, "model.test_cfg"):
        if kind != "nms":
            raise ValueError(f"{key} is {kind!r}, which mmdeploy cannot export (its graphs use ONNX "
                             f"NonMaxSuppression); deploy with {key}='nms' and compare against PyTorch with the same")
    if test_cfg.get("mode", "whole") != "whole":
        raise ValueError(f"model.test_cfg.mode is {test_cfg['mode']!r}; mmdeploy exports whole-image inference "
                         "only, so the deployed model would not compute what PyTorch does: set "
                         "model.test_cfg.mode='whole' (or run the sliding window yourself around the graph)")
    roi_head = model.get("roi_head") or {}
    if roi_head.get("type") == "CascadeRoIHead":
        heads = roi_head.get("bbox_head") or []
        if any(not head.get("reg_class_agnostic", False) for head in (heads if isinstance(heads, list) else [heads])):
            raise ValueError("mmdeploy's Cascade R-CNN export needs reg_class_agnostic=True in every box head "
                             "(mmdeploy issue #1896); this config regresses per class")


def task_processor(deploy_cfg: ConfigLike, model_cfg: ConfigLike, device: str = "cpu") -> Any:
    """mmdeploy's task processor (mmdet's or mmseg's, from the deploy config) for the two configs."""
    from mmdeploy.apis import build_task_processor

    deploy_cfg, model_cfg = load_configs(deploy_cfg, model_cfg)
    return build_task_processor(model_cfg, deploy_cfg, device)


def build_pytorch_model(processor: Any, checkpoint: str | Path | None) -> nn.Module:
    """The PyTorch model as mmdeploy builds it (eval mode, weights from ``checkpoint``), fast path untouched."""
    # Runner checkpoints of other mmengine runs carry more than tensors: importing cvx2_backbone allowed those
    return processor.build_pytorch_model(None if checkpoint is None else str(checkpoint))


def create_input(processor: Any, model: nn.Module, image: Any) -> tuple[Tensor, list]:
    """One image (a path or an HWC uint8 array) through the config's test pipeline and the model's data
    preprocessor: the batch tensor and its data samples, as mmdeploy traces the graph with them."""
    from mmdeploy.utils import get_input_shape

    data, inputs = processor.create_input(str(image) if isinstance(image, Path) else image,
                                          get_input_shape(processor.deploy_cfg),
                                          data_preprocessor=model.data_preprocessor)
    if isinstance(inputs, list) and len(inputs) == 1:
        inputs = inputs[0]
    return inputs, data["data_samples"]


def export_onnx(deploy_cfg: ConfigLike, model_cfg: ConfigLike, checkpoint: str | Path | None, image: Any,
                work_dir: str | Path, file_name: str = "end2end.onnx", device: str = "cpu") -> Path:
    """Export the model of ``model_cfg`` + ``checkpoint`` as ``deploy_cfg`` says; ``image`` (a path or an HWC
    uint8 array) is run through the config's test pipeline to trace the graph. Returns the ONNX file.

    Raises ValueError for settings the graph cannot reproduce (:func:`check_deployable`)."""
    from mmdeploy.apis.onnx import export
    from mmdeploy.utils import get_backend, get_dynamic_axes, get_ir_config

    processor = task_processor(deploy_cfg, model_cfg, device)
    check_deployable(processor.model_cfg)
    model = build_pytorch_model(processor, checkpoint)
    if count_backbones(model) == 0:
        raise ValueError(f"the model of the config ({type(model).__name__}) has no ConvNeXt backbone of this "
                         "package; export it with mmdeploy's own tools")
    inputs, data_samples = create_input(processor, model, image)
    deploy_cfg = processor.deploy_cfg
    onnx_cfg = get_ir_config(deploy_cfg)
    names = list(onnx_cfg["input_names"]) + list(onnx_cfg["output_names"])
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    prefix = work_dir / Path(file_name).stem
    export(model, inputs, str(prefix), backend=get_backend(deploy_cfg).value,
           input_metas={"data_samples": data_samples, "mode": "predict"},
           context_info={"deploy_cfg": deploy_cfg}, input_names=onnx_cfg["input_names"],
           output_names=onnx_cfg["output_names"], opset_version=onnx_cfg.get("opset_version", 11),
           dynamic_axes=get_dynamic_axes(deploy_cfg, names), verbose=onnx_cfg.get("verbose", False),
           keep_initializers_as_inputs=onnx_cfg.get("keep_initializers_as_inputs", True),
           optimize=onnx_cfg.get("optimize", False))
    return prefix.with_suffix(".onnx")


def build_deployed_model(processor: Any, onnx_file: str | Path) -> nn.Module:
    """mmdeploy's backend model for ``onnx_file``: ``test_step(batch)`` gives data samples like the PyTorch model.

    For segmentors it is :class:`.mmdeploy_segmentation.SegmentationModel`, which post-processes as mmseg does.
    """
    from mmdeploy.utils import Codebase, get_backend, get_codebase

    if get_codebase(processor.deploy_cfg) != Codebase.MMSEG:
        return processor.build_backend_model([str(onnx_file)])

    model = processor.model_cfg.model
    return SegmentationModel(backend=get_backend(processor.deploy_cfg), backend_files=[str(onnx_file)],
                             device=processor.device, deploy_cfg=processor.deploy_cfg,
                             data_preprocessor=model.data_preprocessor,
                             align_corners=model.decode_head.get("align_corners", False)).to(processor.device).eval()
