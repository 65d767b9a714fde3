"""Requirements and the build step of cvx2_backbone; the metadata lives in pyproject.toml.

Requirements are loose here; the tested pins live in requirements/constraints.txt and are installed by
`make setup`. Built wheels carry configs/, tools/ and the model index in cvx2_backbone/.mim (mmdet's
layout, which `mim` reads); an editable install finds them in the source checkout instead.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
MIM_FILES = ("configs", "tools", "model-index.yml")

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
LINT = ["ruff"]


class BuildWithMimFiles(build_py):
    """build_py that also copies configs/, tools/ and model-index.yml into the built package's .mim folder."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "cvx2_backbone" / ".mim"
        for name in MIM_FILES:
            source, destination = ROOT / name, target / name
            if destination.is_dir():
                shutil.rmtree(destination)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, destination)


setup(
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
        # psutil: mmdet's analysis_tools/benchmark.py, run on the demo's config by the tests.
        # click .. tabulate: what openmim needs to run (tools/setup_env.sh installs openmim itself without its
        # declared dependencies, which pin old setuptools/requests/rich through opendatalab).
        "test": sorted(set(DET + SEG + HF + DEPLOY + LINT + ["matplotlib", "pytest>=7", "pytest-timeout",
                                                             "scikit-image", "psutil", "click", "colorama",
                                                             "model-index", "pandas", "requests", "tabulate"])),
    },
    cmdclass={"build_py": BuildWithMimFiles},
)
