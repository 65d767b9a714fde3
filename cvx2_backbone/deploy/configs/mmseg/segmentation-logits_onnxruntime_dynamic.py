# This project's own deploy config (the others in this folder are mmdeploy's, see README.md):
# mmdeploy's segmentation_onnxruntime_dynamic.py with logits out instead of labels (with_argmax=False, the option
# mmdeploy's docs name), so that cvx2_backbone.deploy's backend model can resize them to the image as mmseg does.
_base_ = ['./segmentation_onnxruntime_dynamic.py']
codebase_config = dict(with_argmax=False)
