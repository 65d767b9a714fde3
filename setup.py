"""Packaging for cvx2_backbone. Requirements are loose here; the tested pins live in
requirements/constraints.txt and are installed by `make setup`."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version = {}
exec((ROOT / "cvx2_backbone" / "version.py").read_text(), version)

DET = ["mmcv>=2.0.0,<2.2.0", "mmdet>=3.0,<3.4", "pycocotools", "matplotlib"]
# COCO panoptic (Mask2Former panoptic) also needs panopticapi: PyPI's panopticapi-lite provides it but declares
# numpy<2, so it cannot be an extra of a numpy 2 install; tools/setup_env.sh installs it with --no-deps
# (`pip install --no-deps panopticapi-lite`).
SEG = ["mmcv>=2.0.0,<2.2.0", "mmsegmentation>=1.0,<1.3", "ftfy", "regex"]
HF = ["transformers>=4.40"]
# ONNX export (torch's dynamo exporter needs onnxscript), ONNX Runtime and OpenVINO for verification and benchmarks.
# Whole detectors / segmentors go through mmdeploy 1.3.1, which cannot be listed here: it declares protobuf<=3.20.2,
# which onnx >= 1.16 rules out, though it runs with current protobuf. tools/setup_env.sh installs it with --no-deps
# (pinned in requirements/constraints.txt); aenum is the one dependency it needs that nothing else brings.
# onnxconverter-common: its float16 converter makes the fp16 graphs of the fp16-safety test.
DEPLOY = ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18", "openvino>=2024.0", "onnxconverter-common>=1.14",
          "aenum"]

setup(
    name="cvx2_backbone",
    version=version["__version__"],
    description="ConvNeXt V2 / V1 backbone for the OpenMMLab 3.x stack (mmdet, mmseg)",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["cvx2_backbone", "cvx2_backbone.*"]),
    include_package_data=True,
    package_data={"cvx2_backbone.deploy": ["configs/**/*.py", "mmdeploy_configs/**/*.py", "mmdeploy_configs/*.md"]},
    install_requires=[
        "torch>=2.5",  # safe_globals (safe checkpoint loading), torch.compiler.is_compiling
        "timm>=1.0",
        "mmengine>=0.10,<0.11",
        "numpy",
        "pillow",
        "safetensors",
        "huggingface_hub",
        "tqdm",
    ],
    extras_require={
        "det": DET,
        "seg": SEG,
        "hf": HF,
        "deploy": DEPLOY,
        "all": sorted(set(DET + SEG + HF + DEPLOY + ["matplotlib"])),
        # scikit-image: only its bundled photos, for the FCMAE reconstruction tests (`cvx2 fcmae-show`).
        "test": sorted(set(DET + SEG + HF + DEPLOY + ["matplotlib", "pytest>=7", "pytest-timeout", "scikit-image"])),
    },
    entry_points={"console_scripts": ["cvx2=cvx2_backbone.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
