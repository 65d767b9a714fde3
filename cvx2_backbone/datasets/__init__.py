"""Datasets shipped with the package: small synthetic COCO- (instance, panoptic) and ADE20K-format sets."""
from .synthetic import (ADE_CLASSES, SHAPE_CLASSES, STUFF_CLASSES, make_ade_shapes, make_coco_panoptic_shapes,
                        make_coco_shapes)

__all__ = ["ADE_CLASSES", "SHAPE_CLASSES", "STUFF_CLASSES", "make_ade_shapes", "make_coco_panoptic_shapes",
           "make_coco_shapes"]
