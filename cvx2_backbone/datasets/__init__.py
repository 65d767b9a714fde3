"""Datasets shipped with the package: small synthetic COCO- and ADE20K-format sets for tests and demos."""
from .synthetic import ADE_CLASSES, SHAPE_CLASSES, make_ade_shapes, make_coco_shapes

__all__ = ["ADE_CLASSES", "SHAPE_CLASSES", "make_ade_shapes", "make_coco_shapes"]
