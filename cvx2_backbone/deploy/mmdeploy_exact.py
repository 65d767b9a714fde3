"""mmdeploy rewriters (ONNX Runtime) that compute what mmdet and mmseg compute, where mmdeploy 1.3.1's do not.

Found by comparing the deployed demo Mask R-CNN with PyTorch on the demo's images (docs/deployment.md has the
numbers). mmdeploy differs from mmdet in two places and from mmseg in two:

* RPN (``RPNHead.predict_by_feat``): mmdet runs NMS per FPN level (``batched_nms`` with the level as index), keeps
  boxes of zero width or height out (``min_bbox_size``) and has no score threshold; mmdeploy runs one NMS over all
  levels, keeps degenerate boxes and drops proposals scoring below 0.05 (its ``post_processing.score_threshold``).
* R-CNN box head (``BBoxHead.predict_by_feat``) with class-specific regression (Mask R-CNN's default): mmdet gives
  each class of each RoI its own regressed box; mmdeploy keeps only the box of the RoI's top-scoring class and uses
  it for every class, so a second-class detection gets the wrong box (the same shortcut as mmdeploy issue #1896).
* Segmentation output (mmdeploy's ``End2EndModel.pack_result``): see :mod:`.mmdeploy_segmentation`.
* UperNet / PSPNet pyramid pooling (``F.adaptive_avg_pool2d`` with an output larger than 1x1): mmdeploy uses
  ``avg_pool2d`` with kernel = stride = ``input // output``, which equals adaptive pooling only when the input size
  is a multiple of the output size. On the 16x16 map of a 512x512 image the 3x3 and 6x6 bins come out wrong (the
  6x6 one even as 8x8, resized back by the head), and on the 4x4 map of a 128x128 image the export fails
  (``stride should not be zero``). mmdeploy's docs call UperNet "static shape only"; its static configs give the
  same wrong bins. The exact operation is two matrix products with bin weights built from the runtime size.

The rewriters below keep mmdeploy's graph building blocks (its ONNX NonMaxSuppression wrapper, top-k, box
decoding) and change only what is computed. Per-level and per-class NMS are both expressed as a multi-class NMS
whose "classes" are levels or classes: a candidate's score sits in its own column and is 0 elsewhere, and ONNX
NonMaxSuppression keeps only scores above the threshold (strictly), so zeros never compete.
"""
from __future__ import annotations

from typing import Any

import torch
from mmdeploy.core import FUNCTION_REWRITER
from torch import Tensor
from torch.nn import functional as F

BACKEND = "onnxruntime"


def adaptive_pool_weights(size: Tensor, bins: int, dtype: torch.dtype) -> Tensor:
    """(bins, size) averaging weights of adaptive average pooling along one axis of length ``size``.

    Bin ``i`` covers ``[floor(i * size / bins), ceil((i + 1) * size / bins))``, as in torch's kernel; ``size`` is
    a 0-d int64 tensor, so a traced graph computes the weights from the runtime shape.
    """
    index = torch.arange(bins, device=size.device)
    start = torch.div(index * size, bins, rounding_mode="floor")
    end = torch.div((index + 1) * size + bins - 1, bins, rounding_mode="floor")
    position = torch.arange(size, device=size.device)
    inside = (position[None, :] >= start[:, None]) & (position[None, :] < end[:, None])
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


@FUNCTION_REWRITER.register_rewriter(func_name="torch.nn.functional.adaptive_avg_pool2d", backend=BACKEND)
def adaptive_avg_pool2d_exact(input: Tensor, output_size: Any) -> Tensor:
    """``F.adaptive_avg_pool2d`` as ``rows @ input @ cols.T``: exact for any input size, exportable with dynamic
    shapes. A 1x1 output stays the original (global pooling, which ONNX has)."""
    from torch.nn.modules.utils import _pair

    context = FUNCTION_REWRITER.get_context()
    out_h, out_w = _pair(output_size)
    if out_h is None or out_w is None or out_h == out_w == 1:
        return context.origin_func(input, output_size)
    shape = torch._shape_as_tensor(input)
    rows = adaptive_pool_weights(shape[-2], out_h, input.dtype).to(input.device)
    cols = adaptive_pool_weights(shape[-1], out_w, input.dtype).to(input.device)
    return rows @ input @ cols.transpose(0, 1)


def _one_column_each(scores: Tensor, columns: Tensor, count: int) -> Tensor:
    """(B, N) scores and (N,) column ids -> (B, N, count) with each score in its own column, 0 elsewhere."""
    return scores[..., None] * F.one_hot(columns, count).to(scores.dtype)


@FUNCTION_REWRITER.register_rewriter(func_name="mmdet.models.dense_heads.rpn_head.RPNHead.predict_by_feat",
                                     backend=BACKEND)
def rpn_head__predict_by_feat__exact(self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
                                     score_factors: Any = None, batch_img_metas: list[dict] | None = None,
                                     cfg: Any = None, rescale: bool = False, with_nms: bool = True,
                                     **kwargs: Any) -> tuple[Tensor, Tensor]:
    """Proposals as mmdet's RPN makes them: top ``nms_pre`` per level, degenerate boxes out, NMS per level, the
    best ``max_per_img``. Returns dets (B, K, 5) and labels (B, K), as mmdeploy's own rewriter does."""
    from mmdeploy.codebase.mmdet.deploy import gather_topk, pad_with_value_if_necessary
    from mmdeploy.mmcv.ops import multiclass_nms

    if not with_nms:
        raise NotImplementedError("the exact RPN rewriter exports proposals after NMS only (with_nms=True)")
    cfg = self.test_cfg if cfg is None else cfg
    batch = cls_scores[0].shape[0]
    anchors_per_level = self.prior_generator.grid_priors([s.shape[-2:] for s in cls_scores],
                                                         device=cls_scores[0].device)
    nms_pre = cfg.get("nms_pre", -1)
    deltas, scores, anchors, levels = [], [], [], []
    for level, (score, delta, anchor) in enumerate(zip(cls_scores, bbox_preds, anchors_per_level)):
        score = score.permute(0, 2, 3, 1)
        if self.use_sigmoid_cls:
            score = score.reshape(batch, -1).sigmoid()
        else:
            score = score.reshape(batch, -1, 2).softmax(-1)[..., 0]
        score = score.reshape(batch, -1, 1)
        delta = delta.permute(0, 2, 3, 1).reshape(batch, -1, self.bbox_coder.encode_size)
        anchor = anchor.unsqueeze(0)
        if nms_pre > 0:  # padding (score 0, empty boxes) only matters where a level has fewer anchors
            score = pad_with_value_if_necessary(score, 1, nms_pre, 0.0)
            delta = pad_with_value_if_necessary(delta, 1, nms_pre)
            anchor = pad_with_value_if_necessary(anchor, 1, nms_pre)
            keep = score.squeeze(2).topk(nms_pre)[1]
            delta, score = gather_topk(delta, score, inds=keep, batch_size=batch, is_batched=True)
            anchor = gather_topk(anchor, inds=keep, batch_size=batch, is_batched=False)
        deltas.append(delta)
        scores.append(score)
        anchors.append(anchor)
        levels.append(torch.zeros_like(score[0, :, 0], dtype=torch.long) + level)  # traced: follows the shape
    bboxes = self.bbox_coder.decode(torch.cat(anchors, 1), torch.cat(deltas, 1),
                                    max_shape=batch_img_metas[0]["img_shape"])
    scores = torch.cat(scores, 1).squeeze(-1)
    if cfg.get("min_bbox_size", -1) >= 0:
        width, height = bboxes[..., 2] - bboxes[..., 0], bboxes[..., 3] - bboxes[..., 1]
        scores = scores * ((width > cfg.min_bbox_size) & (height > cfg.min_bbox_size)).to(scores.dtype)
    per_level = _one_column_each(scores, torch.cat(levels), len(cls_scores))
    return multiclass_nms(bboxes, per_level, cfg.max_per_img, nms_type=cfg.nms.get("type", "nms"),
                          iou_threshold=cfg.nms.iou_threshold, score_threshold=0.0, pre_top_k=-1,
                          keep_top_k=cfg.max_per_img)


@FUNCTION_REWRITER.register_rewriter(
    func_name="mmdet.models.roi_heads.bbox_heads.bbox_head.BBoxHead.predict_by_feat", backend=BACKEND)
def bbox_head__predict_by_feat__exact(self, rois: Tensor, cls_scores: Tensor, bbox_preds: Tensor,
                                      batch_img_metas: list[dict], rcnn_test_cfg: Any = None,
                                      rescale: bool = False) -> tuple[Tensor, Tensor]:
    """Detections as mmdet's box head makes them: every (RoI, class) pair with its own box, scores above
    ``score_thr``, NMS per class, the best ``max_per_img``. Returns dets (B, K, 5) and labels (B, K)."""
    from mmdeploy.mmcv.ops import multiclass_nms

    if rois.ndim != 3:
        raise ValueError("the exact box-head rewriter needs batched RoIs (B, N, 5), as mmdeploy's RoI head passes")
    batch, classes = rois.shape[0], self.num_classes
    if self.custom_cls_channels:
        scores = self.loss_cls.get_activation(cls_scores)
    else:
        scores = F.softmax(cls_scores, dim=-1)
    scores = scores[..., :classes]  # the last column is the background
    img_shape = batch_img_metas[0]["img_shape"]
    if bbox_preds is None:
        boxes = rois[..., 1:].clone()
        high = boxes.new_tensor([img_shape[1], img_shape[0], img_shape[1], img_shape[0]])
        boxes = torch.minimum(boxes.clamp(min=0), high)
    else:
        boxes = self.bbox_coder.decode(rois[..., 1:], bbox_preds, max_shape=img_shape)
    if bbox_preds is not None and not self.reg_class_agnostic:
        size = self.bbox_coder.encode_size
        boxes = boxes.reshape(batch, -1, size)  # one candidate per (RoI, class), RoI-major: n * C + c
        class_of = (torch.zeros_like(scores[0], dtype=torch.long) + torch.arange(classes, device=rois.device))
        scores = _one_column_each(scores.reshape(batch, -1), class_of.reshape(-1), classes)
    return multiclass_nms(boxes, scores, rcnn_test_cfg.max_per_img, nms_type=rcnn_test_cfg.nms.get("type", "nms"),
                          iou_threshold=rcnn_test_cfg.nms.iou_threshold, score_threshold=rcnn_test_cfg.score_thr,
                          pre_top_k=-1, keep_top_k=rcnn_test_cfg.max_per_img)

