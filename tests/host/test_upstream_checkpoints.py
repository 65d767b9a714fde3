"""Training checkpoints through the ecosystem's own loaders, with torch's safe loading on (its default).

What tools/train.py saves loads with a plain ``torch.load(weights_only=True)`` in a process that never imports
cvx2_backbone; mmdet's ``init_detector`` and ``DetInferencer``, mmseg's ``init_model`` and mmdet's packaged
``tools/test.py`` load it, and also mmengine's own format (HistoryBuffer, numpy), because the configs import
cvx2_backbone; a pickle that runs a command is refused by every one of them.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

from cvx2_backbone.datasets import make_ade_shapes, make_coco_shapes  # noqa: E402
from cvx2_backbone.engine.hooks import PlainCheckpointHook, restore_message_hub  # noqa: E402
from tests.helpers.training import DET_CONFIG, SEG_CONFIG, ROOT, as_cli, det_options, run_tool, seg_options  # noqa: E402
from tests.helpers.training import small_det_heads  # noqa: E402
from tests.helpers.checkpoints import torch_defaults_only  # noqa: E402

DET_SIZE, SEG_SIZE = 64, 48
UNSAFE_ENV = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def _safe_env() -> dict[str, str]:
    """The environment of a fresh process, with torch's safe loading left on."""
    env = {key: value for key, value in os.environ.items() if key != UNSAFE_ENV}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), OMP_NUM_THREADS="1")
    return env


@pytest.fixture(autouse=True)
def _safe_loading(monkeypatch):
    monkeypatch.delenv(UNSAFE_ENV, raising=False)


@pytest.fixture(scope="module")
def det_run(tmp_path_factory) -> dict[str, Any]:
    """Mask R-CNN (the shipped atto config, shrunk) trained 2 iterations by tools/train.py."""
    root = tmp_path_factory.mktemp("det")
    data = make_coco_shapes(root / "data", num_train=4, num_val=2, image_size=DET_SIZE)
    work = root / "work"
    options = {**det_options(data, DET_SIZE), **small_det_heads(), "train_cfg.max_epochs": 1,
               "train_cfg.val_interval": 10, "train_dataloader.batch_size": 2}
    run_tool(sys.executable, "tools/train.py", str(DET_CONFIG), "--work-dir", str(work), *as_cli(options))
    image = sorted((Path(data["data_root"]) / data["val_img_prefix"]).glob("*.jpg"))[0]
    return {"config": work / DET_CONFIG.name, "checkpoint": work / "epoch_1.pth", "classes": list(data["classes"]),
            "image": image, "iters": 2}


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory) -> dict[str, Any]:
    """UperNet (the shipped atto config, shrunk) trained 1 iteration by tools/train.py."""
    root = tmp_path_factory.mktemp("seg")
    data = make_ade_shapes(root / "data", num_train=2, num_val=2, image_size=SEG_SIZE)
    work = root / "work"
    options = {**seg_options(data, SEG_SIZE), "model.decode_head.channels": 32, "model.auxiliary_head.channels": 16,
               "train_cfg.max_iters": 1, "train_cfg.val_interval": 10, "default_hooks.checkpoint.interval": 1,
               "train_dataloader.batch_size": 2}
    run_tool(sys.executable, "tools/train.py", str(SEG_CONFIG), "--work-dir", str(work), *as_cli(options))
    image = sorted((Path(data["data_root"]) / data["val_img_prefix"]).glob("*.jpg"))[0]
    return {"config": work / SEG_CONFIG.name, "checkpoint": work / "iter_1.pth", "classes": list(data["classes"]),
            "image": image, "iters": 1}


class _RunsCommand:
    """Unpickling it runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _mmengine_format(plain_checkpoint: Path, path: Path) -> Path:
    """The checkpoint as mmengine writes it without the hook: HistoryBuffers (with their statistics methods)
    and numpy scalars in the message hub."""
    checkpoint = torch.load(plain_checkpoint, map_location="cpu", weights_only=True)
    restore_message_hub(checkpoint["message_hub"])
    for buffer in checkpoint["message_hub"]["log_scalars"].values():
        buffer.statistics("mean")  # what the logger does; pickled as getattr(HistoryBuffer, ...) from then on
    checkpoint["message_hub"]["runtime_info"]["coco/bbox_mAP"] = np.float64(0.25)
    torch.save(checkpoint, path)
    return path


def _with_command(plain_checkpoint: Path, path: Path, marker: Path) -> Path:
    checkpoint = torch.load(plain_checkpoint, map_location="cpu", weights_only=True)
    checkpoint["meta"]["note"] = _RunsCommand(marker)
    torch.save(checkpoint, path)
    return path


PLAIN_LOAD = """
import json, sys, torch
found = {}
for path in sys.argv[1:]:
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    hub = checkpoint['message_hub']
    found[path] = dict(keys=sorted(checkpoint), loss=hub['log_scalars']['train/loss']['log_history'].tolist(),
                       classes=list(checkpoint['meta']['dataset_meta']['classes']), iter=checkpoint['meta']['iter'])
found['imported'] = sorted({name.split('.')[0] for name in sys.modules} & {'cvx2_backbone', 'mmengine'})
print(json.dumps(found))
"""


def _plain_load(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PLAIN_LOAD, *map(str, paths)], env=_safe_env(), capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_plain_torch_load_reads_training_checkpoints_without_the_package(det_run, seg_run, tmp_path):
    proc = _plain_load(det_run["checkpoint"], seg_run["checkpoint"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found.pop("imported") == []  # torch alone: neither cvx2_backbone nor mmengine
    for run in (det_run, seg_run):
        loaded = found[str(run["checkpoint"])]
        assert {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"} <= set(loaded["keys"])
        assert len(loaded["loss"]) == run["iters"] == loaded["iter"] and loaded["classes"] == run["classes"]

    # mmengine's own format is what torch refuses without the package's allowance
    proc = _plain_load(_mmengine_format(det_run["checkpoint"], tmp_path / "mmengine.pth"))
    assert proc.returncode != 0 and "UnpicklingError" in proc.stderr


def test_message_hub_survives_the_plain_round_trip(tmp_path):
    from mmengine.logging import HistoryBuffer, MessageHub

    hub = MessageHub.get_instance("plain-round-trip")
    for step, loss in enumerate([0.9, 0.7, np.float32(0.4)]):
        hub.update_scalar("train/loss", loss)
        hub.update_scalar("train/lr", 1e-3 * (step + 1))
    hub.update_info("val/coco/bbox_mAP", np.float64(0.31))
    hub.update_info("keep_ckpt_ids", [1, 2])
    checkpoint = {"meta": {"dataset_meta": {"palette": np.array([[1, 2, 3]], dtype=np.uint8)}, "seed": np.int64(7)},
                  "message_hub": hub.state_dict(), "state_dict": {"w": torch.ones(2)}}
    PlainCheckpointHook().before_save_checkpoint(None, checkpoint)
    torch.save(checkpoint, tmp_path / "plain.pth")
    with torch_defaults_only():
        loaded = torch.load(tmp_path / "plain.pth", weights_only=True)
    assert loaded["meta"] == {"dataset_meta": {"palette": [[1, 2, 3]]}, "seed": 7}

    PlainCheckpointHook().after_load_checkpoint(None, loaded)
    resumed = MessageHub.get_instance("plain-round-trip-resumed")
    resumed.load_state_dict(loaded["message_hub"])
    for key in ("train/loss", "train/lr"):
        buffer = resumed.get_scalar(key)
        assert isinstance(buffer, HistoryBuffer)
        np.testing.assert_array_equal(buffer.data[0], hub.get_scalar(key).data[0])
        assert buffer.mean(2) == hub.get_scalar(key).mean(2) and buffer.current() == hub.get_scalar(key).current()
    assert resumed.get_info("val/coco/bbox_mAP") == 0.31 and resumed.get_info("keep_ckpt_ids") == [1, 2]


def test_importing_the_package_allows_mmengine_objects_only(tmp_path):
    from mmengine.logging import HistoryBuffer

    class GetattrOn:  # pickles as getattr(owner, name), the way HistoryBuffer's methods end up in checkpoints
        def __init__(self, owner, name):
            self.owner, self.name = owner, name

        def __reduce__(self):
            return getattr, (self.owner, self.name)

    buffer = HistoryBuffer()
    buffer.update(0.5)
    good = tmp_path / "good.pth"
    torch.save({"hub": buffer, "arr": np.arange(3), "scalar": np.float64(1.5),
                "method": GetattrOn(HistoryBuffer, "mean")}, good)
    with torch_defaults_only(), pytest.raises(pickle.UnpicklingError):
        torch.load(good)  # torch's own allow-list refuses them
    loaded = torch.load(good)  # importing cvx2_backbone (the tests did) allowed exactly these
    assert loaded["hub"].mean() == 0.5 and loaded["arr"].tolist() == [0, 1, 2] and loaded["scalar"] == 1.5
    assert loaded["method"] is HistoryBuffer.mean

    marker = tmp_path / "ran"
    for name, payload in (("not_a_statistic", GetattrOn(HistoryBuffer, "update")),
                          ("other_owner", GetattrOn(np.ndarray, "tofile")), ("function", os.getcwd),
                          ("command", _RunsCommand(marker))):
        bad = tmp_path / f"{name}.pth"
        torch.save({"x": payload}, bad)
        with pytest.raises(pickle.UnpicklingError):
            torch.load(bad)
    assert not marker.exists()


@pytest.mark.slow
def test_mmdet_apis_load_training_and_mmengine_checkpoints_and_refuse_commands(det_run, tmp_path):
    from mmdet.apis import DetInferencer, inference_detector, init_detector

    config, classes = str(det_run["config"]), det_run["classes"]
    weights = torch.load(det_run["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    for checkpoint in (det_run["checkpoint"], _mmengine_format(det_run["checkpoint"], tmp_path / "mmengine.pth")):
        model = init_detector(config, str(checkpoint), device="cpu")
        assert list(model.dataset_meta["classes"]) == classes  # from the checkpoint's meta
        assert all(torch.equal(value, weights[name]) for name, value in model.state_dict().items())
        result = inference_detector(model, str(det_run["image"]))
        assert result.pred_instances.bboxes.shape[1] == 4

    inferencer = DetInferencer(model=config, weights=str(det_run["checkpoint"]), device="cpu", show_progress=False)
    assert list(inferencer.model.dataset_meta["classes"]) == classes
    predictions = inferencer(str(det_run["image"]), no_save_vis=True)["predictions"][0]
    assert set(predictions) >= {"labels", "scores", "bboxes"}
    assert all(0 <= label < len(classes) for label in predictions["labels"])

    marker = tmp_path / "ran"
    evil = str(_with_command(det_run["checkpoint"], tmp_path / "evil.pth", marker))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        init_detector(config, evil, device="cpu")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        DetInferencer(model=config, weights=evil, device="cpu", show_progress=False)
    assert not marker.exists()


@pytest.mark.slow
def test_mmseg_init_model_loads_training_checkpoint_and_refuses_commands(seg_run, tmp_path):
    from mmseg.apis import inference_model, init_model

    config = str(seg_run["config"])
    model = init_model(config, str(seg_run["checkpoint"]), device="cpu")
    assert list(model.dataset_meta["classes"]) == seg_run["classes"]
    weights = torch.load(seg_run["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(value, weights[name]) for name, value in model.state_dict().items())
    result = inference_model(model, str(seg_run["image"]))
    assert tuple(result.pred_sem_seg.data.shape[-2:]) == (SEG_SIZE, SEG_SIZE)

    marker = tmp_path / "ran"
    evil = str(_with_command(seg_run["checkpoint"], tmp_path / "evil.pth", marker))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        init_model(config, evil, device="cpu")
    assert not marker.exists()


def mmdet_tool(name: str) -> Path:
    """A script of mmdet's packaged tools (what ``mim run mmdet`` runs)."""
    import mmdet
    return Path(mmdet.__file__).parent / ".mim" / "tools" / name


@pytest.mark.slow
def test_mmdet_packaged_test_tool_evaluates_training_checkpoint_and_refuses_commands(det_run, tmp_path):
    from mmengine.fileio import load

    test_py = mmdet_tool("test.py")
    out = tmp_path / "results.pkl"
    command = [sys.executable, str(test_py), str(det_run["config"])]
    proc = subprocess.run([*command, str(det_run["checkpoint"]), "--work-dir", str(tmp_path / "test"), "--out",
                           str(out)], env=_safe_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = load(str(out))
    assert len(results) == 2 and all("pred_instances" in result for result in results)

    marker = tmp_path / "ran"
    evil = _with_command(det_run["checkpoint"], tmp_path / "evil.pth", marker)
    proc = subprocess.run([*command, str(evil), "--work-dir", str(tmp_path / "evil")], env=_safe_env(),
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode != 0 and "Weights only load failed" in proc.stderr
    assert not marker.exists()
