"""Rows for the DINOv3 ConvNeXt configs (configs/dinov3/): no mmdet/mmseg recipe is published for these backbones,
so each follows the official ConvNeXt V1 recipe for its task (the published values below are that recipe's) and
lists what differs: the DINOv3 weights, the depth-dependent fields, and the frozen-backbone variant the DINOv3 paper
evaluates beside fine-tuning."""
from __future__ import annotations

from tests.recipes.table import Deviation, Recipe, _v1_detection_rows, _v1_upernet_rows

_WEIGHTS = ("DINOv3 ConvNeXt weights distilled from the DINOv3 ViT-7B on LVD-1689M (timm's copy of Meta's release, "
            "under the DINOv3 License) instead of ImageNet-1K supervised ones")
_FROZEN = ("the frozen-backbone protocol of the DINOv3 paper's dense evaluations: every stage frozen, DINOv3's own "
           "dense features (final norm on stage 4 only)")
_NO_DROP_PATH = "no stochastic depth in a frozen backbone (its blocks run in eval mode)"
_NOTE = "no recipe is published for DINOv3 ConvNeXt backbones: the official V1 {task} recipe for ConvNeXt-{size}"
_LAYERS = {"tiny": 6, "base": 12}


def weights(size: str) -> str:
    """The init_cfg checkpoint of the DINOv3 configs: timm's hub copy of the DINOv3 release."""
    return f"timm/convnext_{size}.dinov3_lvd1689m"


def _variants(config: str, frozen_config: str, source: Recipe, published: dict, ours: dict, note: str) -> list[Recipe]:
    rows = [Recipe(config, source.source, published, ours, note)]
    frozen = dict(ours, frozen_stages=Deviation(4, _FROZEN), drop_path_rate=Deviation(0.0, _NO_DROP_PATH))
    rows.append(Recipe(frozen_config, source.source, published, frozen, note))
    return rows


def dinov3_rows() -> list[Recipe]:
    """Mask R-CNN (COCO) and UperNet (ADE20K), DINOv3 ConvNeXt-tiny and -base, fine-tuned and frozen."""
    rows = []
    mask_rcnn = next(r for r in _v1_detection_rows() if r.config.startswith("convnext/mask-rcnn_convnext-tiny"))
    upernet = {r.published["backbone"][1]: r for r in _v1_upernet_rows() if r.config.endswith("512x512.py")
               and "-in1k_" in r.config}
    for size in ("tiny", "base"):
        published = dict(mask_rcnn.published, backbone=("cvx2_backbone.ConvNeXt", size))
        ours = {"weights": Deviation(weights(size), _WEIGHTS)}
        if _LAYERS[size] != published["num_layers"]:
            ours["num_layers"] = Deviation(_LAYERS[size], "num_layers follows base's depth, as the V1 base configs")
        name = f"mask-rcnn_convnext-{size}-dinov3-lvd1689m"
        rows += _variants(f"dinov3/{name}_fpn_ms-crop-3x_coco.py", f"dinov3/{name}-frozen_fpn_ms-crop-3x_coco.py",
                          mask_rcnn, published, ours, _NOTE.format(task="Mask R-CNN", size="tiny"))
        source = upernet[size]
        name = f"upernet_convnext-{size}-dinov3-lvd1689m"
        rows += _variants(f"dinov3/{name}_8xb2-160k_ade20k-512x512.py",
                          f"dinov3/{name}-frozen_8xb2-160k_ade20k-512x512.py", source, dict(source.published),
                          {"weights": Deviation(weights(size), _WEIGHTS)}, _NOTE.format(task="UperNet", size=size))
    return rows
