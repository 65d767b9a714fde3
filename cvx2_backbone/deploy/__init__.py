"""Deployment of whole models with this backbone: mmdeploy (ONNX Runtime) export and parity checks.

Importing this package needs nothing beyond the core; mmdeploy, mmdet or mmseg are imported by the functions
that use them. ``import cvx2_backbone`` registers this package's rewriters (:mod:`.mmdeploy_plugin`)
with mmdeploy whenever both are imported, so mmdeploy's own tools export exactly too. See docs/deployment.md.
"""
from cvx2_backbone.deploy.mmdeploy_compat import MMDEPLOY_VERSION, require_mmdeploy
from cvx2_backbone.deploy.mmdeploy_export import (DETECTION_DEPLOY_CONFIG, SEGMENTATION_DEPLOY_CONFIG,
                                                  build_deployed_model, build_pytorch_model, check_deployable,
                                                  count_backbones, create_input, deploy_config, export_onnx,
                                                  load_configs, task_processor)
from cvx2_backbone.deploy.parity import (DetectionParity, PairedRun, compare_instances, label_map_difference,
                                         onnxruntime_outputs, run_both)

__all__ = ["DETECTION_DEPLOY_CONFIG", "DetectionParity", "MMDEPLOY_VERSION", "PairedRun", "SEGMENTATION_DEPLOY_CONFIG",
           "build_deployed_model", "build_pytorch_model", "check_deployable",
           "compare_instances", "count_backbones", "create_input", "deploy_config", "export_onnx",
           "label_map_difference", "load_configs", "onnxruntime_outputs", "require_mmdeploy", "run_both",
           "task_processor"]
