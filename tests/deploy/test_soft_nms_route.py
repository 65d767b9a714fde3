"""The documented route for mmdeploy's deploy.py and the Soft-NMS detection configs (issue 28, item 4): the two-line
config of docs/deployment.md, as written there, loads and hands mmdeploy an NMS type it exports."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("mmdet")

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs/deployment.md"


def _route() -> str:
    section = DOC.read_text().split("### Configs with Soft-NMS", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.parametrize("trained", ["mask-rcnn_convnextv2-tiny-fcmae_fpn_lsj-3x_coco.py",
                                     "cascade-mask-rcnn_convnextv2-tiny-fcmae_fpn_4conv1fc-giou_lsj-3x_coco.py"])
def test_the_documented_deploy_config_replaces_soft_nms(tmp_path, trained):
    from mmengine.config import Config

    original = ROOT / "configs/convnextv2" / trained
    assert Config.fromfile(str(original)).model.test_cfg.rcnn.nms.type == "soft_nms"  # what deploy.py refuses
    text = re.sub(r"_base_ = '[^']+'", f"_base_ = '{original}'", _route())
    (tmp_path / "my_model_deploy.py").write_text(text)
    cfg = Config.fromfile(str(tmp_path / "my_model_deploy.py"))
    assert cfg.model.test_cfg.rcnn.nms == {"type": "nms", "iou_threshold": 0.5}
    assert cfg.model.backbone == Config.fromfile(str(original)).model.backbone  # the trained model otherwise
    assert "test_pipeline" in cfg and cfg.visualizer.get("name")  # what deploy.py reads at the top level
