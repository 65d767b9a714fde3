"""``cvx2 bench``'s ``extract`` rows: what ``cvx2 extract`` runs by default, per inference case and end to end.

:class:`DefaultExtract` is the ``extract`` implementation of the inference cases: ``FeatureExtractor``'s default
runtime (``auto`` where the deploy extra is installed) on the benchmarked weights, its choice measured in this run
(a fresh engine cache), so the row shows the engine ``cvx2 extract`` would pick for that input on this machine.

The end-to-end case ``extract-{fp32,bf16}``: a folder of real photos to feature files, in images per second.

Three jobs on the same weights and thread count, each in a fresh Python process as a user runs it (so none of the
benchmark process's settings, such as its allocator, reach them), timed there from building its model to the last
file written (Python start-up and imports left out), run interleaved and repeated after one untimed run each:

* ``cvx2-extract``: the ``cvx2 extract`` command (default runtime, batch 4, a fresh engine cache filled by the
  untimed run, as a user's second run finds it);
* ``timm-loop``: what a user writes with timm: PIL decode, ImageNet normalisation, stride padding, timm's
  ``features_only`` model one image at a time, ``torch.save`` per image;
* ``openvino-loop``: the same loop on OpenVINO running the project's ONNX export of the same model (compiled once
  for dynamic shapes, ``INFERENCE_PRECISION_HINT`` as asked), ``numpy.save`` per image.

The photos are matplotlib's sample photo (``grace_hopper.jpg``) as JPEG files at three sizes.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from cvx2_backbone.benchmark.models import randomize_, transfer_weights
from cvx2_backbone.export.onnx import export_backbone
from cvx2_backbone.extraction.engine_choice import EngineSet, default_runtime, installed
from cvx2_backbone.extraction.extractor import FeatureExtractor
from cvx2_backbone.models.convnext import ConvNeXtV2
from cvx2_backbone.runtimes.backbones import Runtime, compile_openvino

JOBS = ("cvx2-extract", "timm-loop", "openvino-loop")
_CROPS = ((512, 600), (512, 512), (384, 480))  # (width, height) of the three photo sizes
_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


class DefaultExtract(Runtime):
    """The extractor's default runtime on ``backbone``, one engine set per precision (chosen at the first call)."""

    name = "extract"
    precisions = ("fp32", "bf16")

    def __init__(self, backbone: torch.nn.Module, threads: int) -> None:
        super().__init__()
        self.extractor = FeatureExtractor(backbone, runtime="torch")
        runtime = default_runtime()
        self._cache = tempfile.TemporaryDirectory(prefix="cvx2-bench-engines-")  # removed with this object
        self.engine_sets = {precision: EngineSet(self.extractor, runtime, precision, threads,
                                                 Path(self._cache.name)) for precision in self.precisions}
        self._used: dict[str, str] = {}

    def run(self, x: torch.Tensor, precision: str = "fp32") -> tuple[torch.Tensor, ...]:
        outputs, engine = self.engine_sets[precision].run(x)
        self._used[precision] = f"{engine.name} {engine.precision_used}"
        return outputs

    def precision_used(self, precision: str) -> str:
        """The engine that ran and its precision (``'openvino bf16'``)."""
        return self._used.get(precision, precision)


def photo_folder(folder: Path, count: int) -> list[Path]:
    """``count`` JPEG photos in ``folder``, cut from matplotlib's ``grace_hopper.jpg`` at three sizes."""
    import matplotlib

    source = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        width, height = _CROPS[index % len(_CROPS)]
        photo = source.crop((0, 0, width, height))
        if index % 2:
            photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        paths.append(folder / f"photo{index:03d}.jpg")
        photo.save(paths[-1], quality=92)
    return paths


def _pixels(path: Path) -> np.ndarray:
    """A user's preprocessing: RGB in [0, 1], ImageNet mean/std, zero padding to a multiple of 32 (1, 3, H, W)."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), np.float32).transpose(2, 0, 1) / 255
    array = (array - _MEAN) / _STD
    height, width = array.shape[1:]
    padded = np.zeros((1, 3, -(-height // 32) * 32, -(-width // 32) * 32), np.float32)
    padded[0, :, :height, :width] = array
    return padded


def _timm_loop(size: str, weights: Path, photos: list[Path], out: Path) -> None:
    import timm

    model = timm.create_model(f"convnextv2_{size}", features_only=True, pretrained=False).eval()
    state = torch.load(weights, weights_only=True)
    transfer_weights({k: v for k, v in state.items() if not k.startswith("norm")}, model)
    with torch.inference_mode():
        for path in photos:
            features = model(torch.from_numpy(_pixels(path)))
            torch.save({f"stage{i + 1}": f[0] for i, f in enumerate(features)}, out / f"{path.stem}.pt")


def _openvino_loop(onnx_path: Path, precision: str, threads: int, photos: list[Path], out: Path) -> None:
    import openvino as ov

    core = ov.Core()
    compiled, _ = compile_openvino(core, core.read_model(str(onnx_path)), precision, threads)  # dynamic shapes
    request = compiled.create_infer_request()
    for path in photos:
        outputs = request.infer({0: _pixels(path)})
        np.savez(out / f"{path.stem}.npz", **{f"stage{i + 1}": v[0] for i, v in enumerate(outputs.values())})


def cvx2_command() -> Callable[[list[str]], int]:
    """The installed ``cvx2`` command's entry point (its console script), what a user's ``cvx2 extract`` runs; the
    benchmark reaches the command line only this way (the command line imports the benchmark, not the reverse)."""
    found = metadata.entry_points(group="console_scripts", name="cvx2")
    if not found:
        raise RuntimeError("the cvx2 command is not installed (no console script 'cvx2'); install the package "
                           "(pip install -e .) to run the end-to-end extract case")
    return next(iter(found)).load()


def _cvx2_extract(weights: Path, precision: str, threads: int, folder: Path, out: Path) -> None:
    code = cvx2_command()(["extract", str(folder), "-o", str(out), "--weights", str(weights), "--precision", precision,
                     "--threads", str(threads), "--overwrite"])
    if code != 0:
        raise RuntimeError(f"cvx2 extract exited with {code}")


# imported before the clock starts in a job's process (what is left is a few small modules)
_PRELOADED = ("timm", "transformers", "onnx", "onnxruntime", "openvino", "safetensors.torch", "huggingface_hub",
              "torchvision", "mmengine", "cvx2_backbone.cli.main", "cvx2_backbone.cli.commands.extract",
              "cvx2_backbone.extraction.extractor", "cvx2_backbone.extraction.engine_choice", "cvx2_backbone.weights")


def job_seconds(spec: dict) -> float:
    """Run one job as ``spec`` says (in the job's own process) and return its seconds, imports excluded."""
    import importlib

    for module in _PRELOADED:
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    torch.set_num_threads(spec["threads"])
    out, photos = Path(spec["out"]), [Path(p) for p in spec["photos"]]
    start = time.perf_counter()
    if spec["job"] == "cvx2-extract":
        _cvx2_extract(Path(spec["weights"]), spec["precision"], spec["threads"], photos[0].parent, out)
    elif spec["job"] == "timm-loop":
        _timm_loop(spec["size"], Path(spec["weights"]), photos, out)
    else:
        _openvino_loop(Path(spec["onnx"]), spec["precision"], spec["threads"], photos, out)
    return time.perf_counter() - start


def _run_job(spec: dict) -> float:
    """:func:`job_seconds` in a fresh Python process (the environment as it is here)."""
    code = ("import json, sys; from cvx2_backbone.benchmark.extract import job_seconds; "
            "print(f'seconds {job_seconds(json.loads(sys.argv[1]))!r}')")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True)
    lines = result.stdout.splitlines()
    if result.returncode or not lines or not lines[-1].startswith("seconds "):
        raise RuntimeError(f"{spec['job']} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
    return float(lines[-1].split()[1])


def run_extract_case(size: str, precision: str, images: int, repeats: int, threads: int, seed: int,
                     jobs: tuple[str, ...] = JOBS, log: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Seconds per run of each job on a folder of ``images`` photos (one untimed run each first)."""
    with tempfile.TemporaryDirectory(prefix="cvx2-bench-extract-") as tmp:
        root = Path(tmp)
        photos = photo_folder(root / "photos", images)
        model = randomize_(ConvNeXtV2(size), seed)
        weights = root / "weights.pth"
        torch.save(model.state_dict(), weights)
        common = {"size": size, "precision": precision, "threads": threads, "weights": str(weights),
                  "photos": [str(p) for p in photos]}
        specs: dict[str, dict] = {}
        for job in jobs:
            if job == "cvx2-extract" or (job == "timm-loop" and precision == "fp32"):
                specs[job] = dict(common, job=job)
            elif job == "openvino-loop" and installed("openvino"):
                onnx_path = export_backbone(FeatureExtractor(model, runtime="torch"), root / "model.onnx",
                                            exporter="torchscript").onnx
                specs[job] = dict(common, job=job, onnx=str(onnx_path))
            else:
                log(f"note: extract-{precision}: {job} is left out "
                    + ("(timm's loop is the fp32 baseline)" if job == "timm-loop" else "(openvino is not installed)"))
        saved_cache = os.environ.get("CVX2_CACHE_DIR")
        os.environ["CVX2_CACHE_DIR"] = str(root / "cache")  # measured afresh on this machine, now
        try:
            seconds: dict[str, list[float]] = {job: [] for job in specs}
            for repeat in range(repeats + 1):
                for job, spec in specs.items():
                    out = root / "out" / job
                    out.mkdir(parents=True, exist_ok=True)
                    elapsed = _run_job(dict(spec, out=str(out)))
                    if repeat:  # the first run of each is untimed (it fills cvx2 extract's engine cache)
                        seconds[job].append(elapsed)
        finally:
            if saved_cache is None:
                os.environ.pop("CVX2_CACHE_DIR", None)
            else:
                os.environ["CVX2_CACHE_DIR"] = saved_cache
        counts = {job: len(list((root / "out" / job).iterdir())) for job in specs}
        if any(count != images for count in counts.values()):
            raise RuntimeError(f"the jobs wrote {counts} files for {images} photos")
    log(f"extract-{precision}: {images} photos, " + ", ".join(
        f"{job} {images / statistics.median(s):.2f} img/s" for job, s in seconds.items()))
    return seconds
