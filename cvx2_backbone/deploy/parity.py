"""Does a deployed model predict what the PyTorch model predicts? Detections, masks and label maps, compared
one image at a time, and the config's own metric (COCO AP, mIoU) computed for both on the same batches."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from torch import Tensor, nn


def _mask_iou(a: Tensor, b: Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


@dataclass
class DetectionParity:
    """One image's detections above ``score_thr``: PyTorch's matched one to one with the deployed model's
    (same label, highest box IoU). ``missing``: PyTorch detections without a partner; ``extra``: deployed ones."""

    matched: int = 0
    missing: int = 0
    extra: int = 0
    max_box_error: float = 0.0  # pixels, largest coordinate difference of a matched pair
    max_score_error: float = 0.0
    min_mask_iou: float = 1.0

    def within(self, box_px: float, mask_iou: float) -> bool:
        """Same detections, labels and all, every box within ``box_px`` and every mask IoU above ``mask_iou``."""
        return (self.missing == 0 and self.extra == 0 and self.max_box_error <= box_px
                and self.min_mask_iou > mask_iou)

    def merge(self, other: DetectionParity) -> DetectionParity:
        return DetectionParity(self.matched + other.matched, self.missing + other.missing, self.extra + other.extra,
                               max(self.max_box_error, other.max_box_error),
                               max(self.max_score_error, other.max_score_error),
                               min(self.min_mask_iou, other.min_mask_iou))


def compare_instances(reference: Any, deployed: Any, score_thr: float) -> DetectionParity:
    """Compare two ``InstanceData`` (bboxes, labels, scores, optional masks) above ``score_thr``.

    Every deployed detection may partner a PyTorch one, whatever its score, so a score a hair either side of the
    threshold does not count as a difference; only unmatched deployed detections above it count as extra.
    """
    from mmdet.structures.bbox import bbox_overlaps

    ref = reference[reference.scores >= score_thr]
    order = ref.scores.argsort(descending=True)
    taken = torch.zeros(len(deployed), dtype=torch.bool)
    iou = bbox_overlaps(ref.bboxes.float(), deployed.bboxes.float()) if len(ref) and len(deployed) else None
    result = DetectionParity()
    for i in order.tolist():
        candidates = (deployed.labels == ref.labels[i]) & ~taken
        if iou is None or not candidates.any():
            result.missing += 1
            continue
        j = int(torch.where(candidates, iou[i], torch.full_like(iou[i], -1.0)).argmax())
        taken[j] = True
        result.matched += 1
        result.max_box_error = max(result.max_box_error, (ref.bboxes[i] - deployed.bboxes[j]).abs().max().item())
        result.max_score_error = max(result.max_score_error, abs(ref.scores[i] - deployed.scores[j]).item())
        if "masks" in ref and "masks" in deployed:
            result.min_mask_iou = min(result.min_mask_iou, _mask_iou(ref.masks[i].bool(), deployed.masks[j].bool()))
    result.extra = int((~taken & (deployed.scores >= score_thr)).sum())
    return result


def label_map_difference(reference: Any, deployed: Any) -> float:
    """Fraction of pixels where two ``PixelData`` label maps (``pred_sem_seg.data``) disagree."""
    return (reference.data != deployed.data).float().mean().item()


@dataclass
class PairedRun:
    """Predictions of both models on the same batches, and the config's metric for each."""

    reference: list = field(default_factory=list)
    deployed: list = field(default_factory=list)
    reference_metrics: dict = field(default_factory=dict)
    deployed_metrics: dict = field(default_factory=dict)


def _evaluator(model_cfg: Config, dataset: Any) -> Any:
    from mmengine.evaluator import Evaluator

    evaluator = Evaluator(copy.deepcopy(model_cfg.get("test_evaluator") or model_cfg.val_evaluator))
    evaluator.dataset_meta = dataset.metainfo
    return evaluator


def run_both(model_cfg: Config, reference: nn.Module, deployed: nn.Module) -> PairedRun:
    """Run the PyTorch and the deployed model on the config's test (or val) loader, batch by batch."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    init_default_scope(model_cfg.get("default_scope", "mmdet"))
    loader = Runner.build_dataloader(copy.deepcopy(model_cfg.get("test_dataloader") or model_cfg.val_dataloader))
    evaluators = {"reference": _evaluator(model_cfg, loader.dataset), "deployed": _evaluator(model_cfg, loader.dataset)}
    run = PairedRun()
    with torch.no_grad():
        for batch in loader:
            for name, model in (("reference", reference), ("deployed", deployed)):
                samples = model.test_step(copy.deepcopy(batch))
                getattr(run, name).extend(samples)
                evaluators[name].process(data_samples=samples, data_batch=batch)
    size = len(run.reference)
    run.reference_metrics = evaluators["reference"].evaluate(size)
    run.deployed_metrics = evaluators["deployed"].evaluate(size)
    return run


def onnxruntime_outputs(onnx_file: str | Path, inputs: Tensor) -> list[Tensor]:
    """Run the exported graph on ``inputs`` with ONNX Runtime's CPU provider (outputs in graph order)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [torch.from_numpy(value) for value in session.run(None, {name: inputs.numpy()})]
