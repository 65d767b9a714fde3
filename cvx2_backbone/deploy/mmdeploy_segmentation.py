"""mmdeploy's segmentation backend model, post-processing as mmseg does (imported only for mmseg models)."""
from __future__ import annotations

from typing import Any

from mmdeploy.codebase.mmseg.deploy.segmentation_model import End2EndModel
from torch import Tensor


class SegmentationModel(End2EndModel):
    """mmdeploy's segmentation backend model, returning what mmseg's ``predict`` returns.

    mmdeploy takes the arg-max at the network's input size and resizes the label map to the image with nearest
    neighbour; mmseg resizes the logits bilinearly and then takes the arg-max. Whenever the test pipeline resizes
    (ADE20K's does, to 2048x512) the two differ along every boundary. Given a graph that outputs logits (deploy
    config ``codebase_config = dict(with_argmax=False)``), this model resizes as mmseg does and also returns the
    logits (``seg_logits``); given a graph that outputs labels, it can only do what mmdeploy does.
    """

    def __init__(self, *args: Any, align_corners: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.align_corners = align_corners

    def pack_result(self, batch_outputs: Tensor, data_samples: list) -> list:
        if batch_outputs.shape[1] == 1 or not batch_outputs.is_floating_point():
            return super().pack_result(batch_outputs, data_samples)
        from mmengine.structures import PixelData
        from mmseg.models.utils import resize

        for logits, sample in zip(batch_outputs, data_samples):
            logits = resize(logits[None], size=sample.metainfo["ori_shape"], mode="bilinear",
                            align_corners=self.align_corners, warning=False)[0]
            sample.set_data(dict(seg_logits=PixelData(data=logits),
                                 pred_sem_seg=PixelData(data=logits.argmax(dim=0, keepdim=True))))
        return data_samples
