"""The project's main job in miniature: Mask R-CNN with a ConvNeXt V2 atto backbone, trained on CPU.

With no download and no dataset, ``run_demo`` writes a synthetic COCO instance-segmentation set,
builds its config in code from mmdet's own ``mask-rcnn_r50_fpn`` model (backbone swapped, widths
slimmed for a CPU), trains it with mmengine's Runner, scores COCO box/mask AP with mmdet's
CocoMetric and draws what it learned. The written ``config.py`` is a complete mmdet config (mmdet's
default runtime: visualizer, hooks, ``env_cfg``) and ``detector.pth`` carries the class names and colours in
``meta.dataset_meta``, so mmdet's own tools (``DetInferencer``, ``init_detector``, ``tools/test.py``,
``browse_dataset.py``, ...) and this project's ``tools/train.py`` / ``tools/test.py`` take them as they are.
A run never replaces an earlier run's outputs: see :func:`prepare_output`.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from mmengine.hooks import Hook

if TYPE_CHECKING:
    from mmengine.config import Config

BASE_MODEL = "mmdet::_base_/models/mask-rcnn_r50_fpn.py"
BASE_RUNTIME = "mmdet::_base_/default_runtime.py"  # visualizer, env_cfg, hooks: what mmdet's own tools expect
PALETTE = [(220, 60, 50), (60, 190, 70), (50, 90, 220)]
MARKER = ".cvx2-demo"  # written first: the folder holds a demo run (complete once metrics.json is there)
OUTPUTS = ("data", "config.py", "detector.pth", "metrics.json", "run.log", "predictions.png", "loss_curve.png",
           "feature_pyramid.png")
_RUNNER_LOGS = re.compile(r"^\d{8}_\d{6}$")  # mmengine's per-run log folders in the work dir


@dataclass(frozen=True)
class DemoSettings:
    """Size of the demo. The defaults finish in a few minutes on two CPU cores and learn the shapes."""

    image_size: int = 128
    num_train: int = 200
    num_val: int = 40
    max_shapes: int = 4
    iters: int = 300
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_iters: int = 50
    neck_channels: int = 64
    seed: int = 0
    threads: int = max(1, (os.cpu_count() or 2) // 2)


QUICK = DemoSettings(num_train=64, num_val=12, iters=100)
DEFAULT_OUTPUT = "work_dirs/demo"
QUICK_OUTPUT = "work_dirs/demo-quick"


def _is_demo_run(folder: Path) -> bool:
    """The folder holds a run of this demo: its marker, or (runs from before the marker) its metrics file."""
    if (folder / MARKER).exists():
        return True
    try:
        return "settings" in json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def _outputs_in(folder: Path) -> list[str]:
    return [name for name in OUTPUTS if (folder / name).exists()]


def prepare_output(output: str | Path, overwrite: bool = False) -> tuple[Path, str | None]:
    """The folder this run writes to, and a note for the user when it is not ``output`` as it was.

    An earlier demo run in ``output`` is kept: the run goes to the first free ``<output>-2``,
    ``<output>-3``, ... unless ``overwrite``, which deletes the earlier run's files first. A folder
    holding files of those names that are no demo run's is never touched: that is an error.
    """
    from cvx2_backbone.utils.usage import UsageError

    output = Path(output).resolve()
    found = _outputs_in(output)
    if not found:
        return output, None
    if not _is_demo_run(output):
        raise UsageError(f"{output} holds {', '.join(found)}, which are not from a demo run and which the demo would "
                         "overwrite; choose another folder with -o")
    state = "a complete" if (output / "metrics.json").exists() else "an unfinished"
    if overwrite:
        for name in found + [MARKER] + [p.name for p in output.iterdir() if _RUNNER_LOGS.match(p.name)]:
            path = output / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        return output, f"replacing {state} earlier demo run in {output} (--overwrite)"
    for number in itertools.count(2):
        candidate = output.with_name(f"{output.name}-{number}")
        if not _outputs_in(candidate):
            return candidate, (f"{output} holds {state} earlier demo run, kept: this run writes to {candidate} "
                               "(--overwrite replaces the earlier run instead)")
    raise AssertionError("unreachable")


def build_config(data: dict[str, Any], settings: DemoSettings, work_dir: Path) -> "Config":
    """An mmengine config: mmdet's Mask R-CNN (R50-FPN) with ConvNeXt V2 atto and the synthetic data."""
    from mmengine.config import Config, ConfigDict

    cfg = Config.fromstring(f"_base_ = [{BASE_MODEL!r}, {BASE_RUNTIME!r}]\n", file_format=".py")
    channels, classes = settings.neck_channels, len(data["classes"])
    model = cfg.model
    model.backbone = ConfigDict(type="cvx2_backbone.ConvNeXtV2", arch="atto", out_indices=(0, 1, 2, 3),
                                drop_path_rate=0.0)
    model.neck.update(in_channels=[40, 80, 160, 320], out_channels=channels)
    model.rpn_head.update(in_channels=channels, feat_channels=channels)
    roi = model.roi_head
    roi.bbox_roi_extractor.out_channels = channels
    roi.mask_roi_extractor.out_channels = channels
    roi.bbox_head.update(in_channels=channels, fc_out_channels=256, num_classes=classes)
    roi.mask_head.update(num_convs=2, in_channels=channels, conv_out_channels=channels, num_classes=classes)
    model.train_cfg.rpn_proposal.update(nms_pre=500, max_per_img=200)
    model.train_cfg.rcnn.sampler.num = 64
    model.test_cfg.rpn.update(nms_pre=300, max_per_img=100)

    size = (settings.image_size, settings.image_size)
    warmup = min(settings.warmup_iters, max(1, settings.iters // 5))  # short runs keep most of their iterations
    meta = dataset_meta(data["classes"])
    train_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
        dict(type="Resize", scale=size, keep_ratio=True),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PackDetInputs"),
    ]
    test_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=size, keep_ratio=True),
        dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
        dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
    ]

    def dataset(split: str, pipeline: list, test_mode: bool) -> dict:
        return dict(type="CocoDataset", data_root=data["data_root"], metainfo=meta,
                    ann_file=data[f"{split}_ann_file"], data_prefix=dict(img=data[f"{split}_img_prefix"]),
                    filter_cfg=None if test_mode else dict(filter_empty_gt=True, min_size=4),
                    pipeline=pipeline, test_mode=test_mode)

    cfg.merge_from_dict(dict(
        default_scope="mmdet",
        custom_imports=dict(imports=["cvx2_backbone"], allow_failed_imports=False),
        work_dir=str(work_dir),
        train_dataloader=dict(batch_size=settings.batch_size, num_workers=0, persistent_workers=False,
                              sampler=dict(type="InfiniteSampler", shuffle=True),
                              dataset=dataset("train", train_pipeline, False)),
        val_dataloader=dict(batch_size=2, num_workers=0, persistent_workers=False, drop_last=False,
                            sampler=dict(type="DefaultSampler", shuffle=False),
                            dataset=dataset("val", test_pipeline, True)),
        val_evaluator=dict(type="CocoMetric", ann_file=data["val_ann_path"], metric=["bbox", "segm"]),
        test_dataloader=dict(batch_size=2, num_workers=0, persistent_workers=False, drop_last=False,
                             sampler=dict(type="DefaultSampler", shuffle=False),
                             dataset=dataset("val", test_pipeline, True)),  # tools/test.py evaluates the val set
        test_evaluator=dict(type="CocoMetric", ann_file=data["val_ann_path"], metric=["bbox", "segm"]),
        test_cfg=dict(type="TestLoop"),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=settings.iters, val_interval=settings.iters,
                       val_begin=settings.iters + 1),  # validation runs once, after training, from run_demo
        val_cfg=dict(type="ValLoop"),
        optim_wrapper=dict(type="OptimWrapper",
                           optimizer=dict(type="AdamW", lr=settings.lr, betas=(0.9, 0.999),
                                          weight_decay=settings.weight_decay),
                           paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
                           clip_grad=dict(max_norm=10.0)),
        param_scheduler=[
            dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=warmup),
            dict(type="CosineAnnealingLR", by_epoch=False, begin=warmup, end=max(settings.iters, warmup + 1),
                 eta_min=settings.lr * 0.05),
        ],
        test_pipeline=test_pipeline,  # mmdeploy reads the top-level one
        # run_demo saves detector.pth itself; `--cfg-options default_hooks.checkpoint.interval=N` saves every N iters
        default_hooks=dict(logger=dict(interval=20),
                           checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=-1, save_last=False)),
        log_processor=dict(by_epoch=False),
        custom_hooks=[dict(type="cvx2_backbone.PlainCheckpointHook")],
        env_cfg=dict(cudnn_benchmark=False),
        randomness=dict(seed=settings.seed),
        log_level="WARNING",
    ))
    return cfg


def dataset_meta(classes: Sequence[str]) -> dict[str, Any]:
    """The demo's class names and drawing colours, as mmdet datasets and checkpoints carry them."""
    return dict(classes=tuple(classes), palette=PALETTE[:len(classes)])


class DemoProgress(Hook):
    """A progress bar for training and evaluation, and the loss history for the curve."""

    priority = "LOW"

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[int, float]]] = {}
        self._bar = None

    def before_train(self, runner) -> None:
        from tqdm import tqdm
        self._bar = tqdm(total=runner.max_iters, desc="train", unit="it", dynamic_ncols=True)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        step = runner.iter + 1
        for name, value in (outputs or {}).items():
            if name.startswith("loss"):
                self.history.setdefault(name, []).append((step, float(value.detach())))
        recent = [v for _, v in self.history.get("loss", [])[-20:]]
        lr = runner.optim_wrapper.get_lr()["lr"][0]
        self._bar.set_postfix(loss=f"{sum(recent) / max(len(recent), 1):.3f}", lr=f"{lr:.1e}")
        self._bar.update(1)

    def after_train(self, runner) -> None:
        self._bar.close()

    def before_val_epoch(self, runner) -> None:
        from tqdm import tqdm
        self._bar = tqdm(total=len(runner.val_dataloader), desc="evaluate", unit="batch", dynamic_ncols=True)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._bar.update(1)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._bar.close()


@dataclass
class DemoResult:
    """What the demo measured and wrote."""

    metrics: dict[str, float]
    train_seconds: float
    total_seconds: float
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def bbox_ap(self) -> float:
        return self.metrics["coco/bbox_mAP"]

    @property
    def segm_ap(self) -> float:
        return self.metrics["coco/segm_mAP"]


def run_demo(output: str | Path = DEFAULT_OUTPUT, settings: DemoSettings = DemoSettings(),
             echo: Callable[[str], None] = print, overwrite: bool = False) -> DemoResult:
    """Generate the data, train, evaluate and draw; everything goes under ``output`` (or, when that holds
    an earlier run and ``overwrite`` is off, under the next free ``<output>-N``: see :func:`prepare_output`).

    Runs on ``settings.threads`` CPU threads (default half the cores): the detector's many small
    operations gain little from more threads, and lose badly when the cores are busy.
    """
    import torch

    folder, note = prepare_output(output, overwrite)
    if note:
        echo(note)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _run(folder, settings, echo)
    finally:
        torch.set_num_threads(threads)


def _run(output: Path, settings: DemoSettings, echo: Callable[[str], None]) -> DemoResult:
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    from cvx2_backbone.datasets import make_coco_shapes
    from cvx2_backbone.utils.files import atomic_path, remove_stale_temporaries, write_atomic

    start = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output)  # of an earlier demo killed while writing into this folder
    write_atomic(output / MARKER, json.dumps({"settings": asdict(settings)}).encode())
    echo(f"1/4 synthetic COCO data: {settings.num_train} train + {settings.num_val} val images of "
         f"{settings.image_size}px -> {output / 'data'}")
    data = make_coco_shapes(output / "data", num_train=settings.num_train, num_val=settings.num_val,
                            image_size=settings.image_size, seed=settings.seed, max_shapes=settings.max_shapes)
    build_config(data, settings, output).dump(str(output / "config.py"))
    cfg = Config.fromfile(str(output / "config.py"))  # so the run's logs name config.py, not a temporary file
    echo(f"2/4 training Mask R-CNN + ConvNeXt V2 atto for {settings.iters} iterations (batch "
         f"{settings.batch_size}, AdamW lr {settings.lr:g}) on {settings.threads} CPU thread(s)")
    runner = Runner.from_cfg(cfg)
    progress = DemoProgress()
    runner.register_hook(progress)
    with open(output / "run.log", "w") as log, contextlib.redirect_stdout(log):  # pycocotools' chatter
        runner.train()  # the progress bars go to stderr
    train_seconds = time.perf_counter() - start
    with atomic_path(output / "detector.pth") as tmp:
        torch.save({"meta": {"dataset_meta": dataset_meta(data["classes"]), "demo_settings": asdict(settings)},
                    "state_dict": runner.model.state_dict()}, tmp)

    echo("3/4 COCO evaluation (mmdet CocoMetric)")
    with open(output / "run.log", "a") as log, contextlib.redirect_stdout(log):
        metrics = {k: float(v) for k, v in runner.val().items()}

    echo("4/4 drawing predictions, the loss curve and a feature pyramid")
    files = {
        "config": output / "config.py", "detector": output / "detector.pth",
        "predictions": _draw_predictions(runner, data, output / "predictions.png"),
        "loss_curve": _plot_losses(progress.history, output / "loss_curve.png"),
        "feature_pyramid": _draw_pyramid(output / "detector.pth", runner, output / "feature_pyramid.png"),
        "metrics": output / "metrics.json",
    }
    result = DemoResult(metrics, train_seconds, time.perf_counter() - start, files)
    write_atomic(output / "metrics.json", json.dumps(
        {"metrics": metrics, "train_seconds": round(train_seconds, 1),
         "total_seconds": round(result.total_seconds, 1), "settings": asdict(settings)}, indent=2).encode())
    return result


def _draw_predictions(runner, data: dict[str, Any], path: Path, count: int = 6) -> Path:
    """The first validation images with the trained model's masks, boxes and scores, in a grid."""
    import torch
    from PIL import Image

    from cvx2_backbone.utils.pictures import draw_instances, mosaic

    runner.model.eval()
    pictures = []
    with torch.no_grad():
        for batch in runner.val_dataloader:
            for sample in runner.model.test_step(batch):
                pred = sample.pred_instances.cpu()
                pictures.append(draw_instances(
                    Image.open(sample.img_path).convert("RGB"), pred.bboxes.numpy(), pred.labels.tolist(),
                    pred.scores.tolist(), data["classes"], masks=pred.masks.numpy() if "masks" in pred else None,
                    score_thr=0.5, scale=2))
            if len(pictures) >= count:
                break
    mosaic(pictures[:count], columns=3).save(path)
    return path


def _plot_losses(history: dict, path: Path) -> Path:
    from cvx2_backbone.utils.pictures import plot_losses
    return plot_losses(history, path, title="Mask R-CNN + ConvNeXt V2 atto, synthetic shapes")


def _draw_pyramid(weights: Path, runner, path: Path) -> Path:
    """The trained FPN levels of the busiest of the first validation images, read back from the checkpoint."""
    from cvx2_backbone.extraction.extractor import FeatureExtractor
    from cvx2_backbone.extraction.images import read_image
    from cvx2_backbone.utils.pictures import pyramid_image

    dataset = runner.val_dataloader.dataset
    infos = [dataset.get_data_info(i) for i in range(min(len(dataset), 10))]
    busiest = max(infos, key=lambda info: len(info["instances"]))
    image = read_image(busiest["img_path"])
    extractor = FeatureExtractor(None, weights, fpn=True)
    features = extractor.extract_each(image)[0]
    pyramid_image(image, features, extractor.out_strides, tile=256).save(path)
    return path
