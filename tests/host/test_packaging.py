"""The release: a wheel that carries configs/, tools/ and the model index, installs into a fresh environment and
builds a model from its own copy of a config; the model index lists every config with its recipe."""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[2]
# Detection and segmentation configs (the model index); FCMAE pre-training configs have no downstream results.
CONFIGS = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.py")
                 if "_base_" not in p.parts and p.parent.name != "fcmae")
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "work_dirs", "data", "outputs", "build", "dist", "*.egg-info",
                                    "__pycache__", ".pytest_cache", ".mim")

INSTALLED_CHECK = """
import json, sys
import cvx2_backbone
from cvx2_backbone.engine import load_config
from cvx2_backbone.utils.resources import resource_root
from mmengine.registry import init_default_scope
from mmdet.registry import MODELS

cfg = load_config('convnextv2/mask-rcnn_convnextv2-atto-fcmae_fpn_lsj-3x_coco.py')
cfg.model.backbone.init_cfg = None
init_default_scope('mmdet')
model = MODELS.build(cfg.model)
root = resource_root()
print(json.dumps(dict(package=cvx2_backbone.__file__, prefix=sys.prefix, root=str(root), config=cfg.filename,
                      backbone=type(model.backbone).__name__, neck=model.neck.in_channels,
                      tools=sorted(p.name for p in (root / 'tools').iterdir()),
                      index=(root / 'model-index.yml').is_file())))
"""


def _run(*args: str, **kwargs) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{' '.join(args[:4])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_environment_and_builds_a_config_from_its_own_copy(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)  # build outside the checkout: no build/ or egg-info left there
    _run(sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"))
    wheel = next((tmp_path / "dist").glob("cvx2_backbone-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Dist: mmengine" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    packaged = {n.split("cvx2_backbone/.mim/configs/", 1)[1] for n in names if "/.mim/configs/" in n}
    assert set(CONFIGS) <= packaged and "_base_/models/mask-rcnn_convnext_fpn.py" in packaged
    assert "fcmae/fcmae_convnextv2-atto_1xb8-cosine-1k_image-folder-cpu.py" in packaged
    # mmdeploy's deploy configs, which cvx2_backbone.deploy.deploy_config() finds inside the package
    assert "cvx2_backbone/deploy/configs/mmdet/instance-seg/instance-seg_onnxruntime_dynamic.py" in names
    assert not [n for n in names if "recipes" in n]  # the recipe checks are test code (tests/recipes/)

    # A fresh environment that sees the shared one's dependencies (a .pth file), but not its cvx2_backbone.
    env_dir = tmp_path / "fresh"
    _run(sys.executable, "-m", "venv", "--without-pip", str(env_dir))
    python = env_dir / "bin" / "python"
    fresh_site = Path(_run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (fresh_site / "shared_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = json.loads(_run(str(python), "-c", INSTALLED_CHECK, cwd=tmp_path, env=env).strip().splitlines()[-1])
    assert result["package"].startswith(result["prefix"]) and result["root"].endswith("cvx2_backbone/.mim")
    assert result["config"].startswith(result["root"])  # the installed copy, not this checkout's
    assert result["backbone"] == "ConvNeXtV2" and result["neck"] == [40, 80, 160, 320]
    assert {"train.py", "test.py", "dist_train.sh"} <= set(result["tools"]) and result["index"]
    assert (env_dir / "bin" / "cvx2").is_file()


def _metafile_models() -> list[dict]:
    index = yaml.safe_load((ROOT / "model-index.yml").read_text())
    models = []
    for path in index["Import"]:
        metafile = yaml.safe_load((ROOT / path).read_text())
        collections = {c["Name"] for c in metafile["Collections"]}
        for model in metafile["Models"]:
            assert model["In Collection"] in collections, model["Name"]
            models.append(model)
    return models


def test_model_index_lists_every_config_with_its_recipe():
    models = _metafile_models()
    assert sorted(m["Config"] for m in models) == sorted(f"configs/{c}" for c in CONFIGS)  # each config once
    for model in models:
        row = RECIPES[model["Config"].removeprefix("configs/")]
        assert model["Name"] == Path(model["Config"]).stem
        metadata, schedule = model["Metadata"], row.expected("schedule")
        assert metadata["Pretrained"] == row.expected("weights")
        assert metadata["Batch Size"] == row.expected("total_batch")
        assert metadata.get("Epochs", metadata.get("Iterations")) == schedule.get("epochs", schedule.get("iters"))
        for result in model.get("Results", []):
            assert result["Dataset"] == ("COCO" if "_coco" in model["Name"] else "ADE20K")
            assert all(0 < value < 100 for value in result["Metrics"].values())
