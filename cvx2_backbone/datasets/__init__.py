"""Datasets shipped with the package: small synthetic COCO- (instance, panoptic) and ADE20K-format sets."""
from cvx2_backbone.datasets.synthetic import (ADE_CLASSES, SHAPE_CLASSES, STUFF_CLASSES, make_ade_shapes,
                                              make_coco_panoptic_shapes, make_coco_shapes)

__all__ = ["ADE_CLASSES", "SHAPE_CLASSES", "STUFF_CLASSES", "make_ade_shapes", "make_coco_panoptic_shapes",
           "make_coco_shapes"]
