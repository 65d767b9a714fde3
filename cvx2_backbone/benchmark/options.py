"""What ``cvx2 bench`` measures: its cases, implementations and options (no torch here, so ``--help`` answers at once).

The measuring itself is :mod:`cvx2_backbone.benchmark.run`.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Sequence

from cvx2_backbone.models.presets import V2_ARCHS

IMPLS = ("cvx2", "extract", "timm", "hf", "reference", "onnxruntime", "openvino")
DEFAULT_IMPLS = ("cvx2", "extract", "timm", "hf", "onnxruntime", "openvino")
RATIO_IMPLS = ("timm", "onnxruntime", "openvino")  # every result is also given as a ratio to these, in the same case
DEFAULT_CASES = ("infer-fp32", "infer-bf16", "infer-fp32@1x224", "infer-bf16@1x224", "infer-fp32@1x800x1216",
                 "infer-bf16@1x800x1216", "train-fp32", "infer-fp32-compile", "train-fp32@det", "train-fp32-cp@det",
                 "extract-fp32", "extract-bf16")
# What tools/gpu_check.sh measures on a GPU (issue 30), one bench run per input shape in this order (a run cut at its
# time limit loses only its own shape): eager and compiled bf16/fp16 inference at 64x224, bf16 training at 1x1024
# without and with checkpointing per block and per stage, the inference cases again at the detection size 1x800x1216.
GPU_CHECK_CASES = ("infer-bf16@64x224", "infer-bf16-compile@64x224", "infer-fp16-compile@64x224",
                   "train-bf16@1x1024", "train-bf16-cp-block@1x1024", "train-bf16-cp-stage@1x1024",
                   "infer-bf16@1x800x1216", "infer-bf16-compile@1x800x1216", "infer-fp16-compile@1x800x1216")
_CASE = re.compile(r"^(?P<task>infer|train|extract)-(?P<precision>fp32|bf16|fp16)"
                   r"(?P<cp>-cp(?:-(?P<granularity>block|stage))?)?(?P<compile>-compile)?"
                   r"(?:@(?:(?P<det>det)|(?P<batch>\d+)x(?P<height>\d+)(?:x(?P<width>\d+))?))?$")

@dataclass(frozen=True)
class Case:
    """One measured setting: ``{infer|train}-{fp32|bf16|fp16}[-cp[-block|-stage]][-compile][@det|@NxH[xW]]``.

    ``-cp`` turns on gradient checkpointing (``with_cp=True``; ``-cp-block`` / ``-cp-stage``: that granularity;
    timm and Hugging Face use their own), ``-compile`` runs ``torch.compile(model, dynamic=False)``,
    ``@det`` runs at the detection size (``--det-batch``, ``--det-resolution``) and ``@NxH[xW]`` at
    N images of H x W (H x H) instead of the classification size (``--batch``, ``--resolution``).
    ``extract-*`` is the end-to-end case (:mod:`cvx2_backbone.benchmark.extract`): ``--extract-images`` photos to
    files.
    """

    name: str
    task: str
    precision: str
    checkpointing: bool
    compiled: bool
    detection: bool
    shape: tuple[int, int, int] | None = None  # (batch, height, width) of an @NxH[xW] case
    cp_granularity: str | None = None  # 'block' or 'stage' for -cp-block / -cp-stage; None: with_cp=True's

    @classmethod
    def parse(cls, name: str) -> "Case":
        match = _CASE.match(name)
        if match is None:
            raise ValueError(f"unknown case {name!r}: write {{infer|train}}-{{fp32|bf16|fp16}}[-cp[-block|-stage]]"
                             f"[-compile][@det|@NxH[xW]], e.g. {', '.join(DEFAULT_CASES)}")
        if match["cp"] and match["task"] != "train":
            raise ValueError(f"case {name!r}: gradient checkpointing (-cp) only matters for train cases")
        if match["task"] == "extract" and (match["compile"] or match["det"] or match["batch"]
                                           or match["precision"] == "fp16"):
            raise ValueError(f"case {name!r}: the end-to-end case is extract-fp32 or extract-bf16 (its folder size is "
                             "--extract-images)")
        shape = None
        if match["batch"]:
            shape = (int(match["batch"]), int(match["height"]), int(match["width"] or match["height"]))
            if shape[0] < 1 or min(shape[1:]) < 32:
                raise ValueError(f"case {name!r}: needs at least 1 image of at least 32x32 (the network's stride)")
        return cls(name, match["task"], match["precision"], bool(match["cp"]), bool(match["compile"]),
                   bool(match["det"]), shape, match["granularity"])

    def input_shape(self, config: "BenchConfig") -> tuple[int, int, int]:
        """(batch, height, width) this case runs at."""
        if self.shape is not None:
            return self.shape
        if self.detection:
            return config.det_batch, config.det_resolution, config.det_resolution
        return config.batch, config.resolution, config.resolution


@dataclass
class BenchConfig:
    """What to measure; the defaults finish in a few minutes on a 2-core CPU."""

    sizes: Sequence[str] = ("tiny",)
    cases: Sequence[str] | None = None  # None: default_cases(device)
    impls: Sequence[str] = DEFAULT_IMPLS
    batch: int = 8
    resolution: int = 224
    det_batch: int = 1
    det_resolution: int = 1024
    repeats: int = 5
    det_repeats: int = 3
    warmup: int = 1
    threads: int | None = None
    device: str = "auto"
    memory: bool = True
    seed: int = 0
    extract_images: int = 24


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = BenchConfig()
    parser.add_argument("--sizes", type=_names, default=",".join(defaults.sizes),
                        help=f"comma-separated ConvNeXt V2 sizes ({', '.join(V2_ARCHS)})")
    parser.add_argument("--cases", type=_names, default=None,
                        help="comma-separated cases {infer|train}-{fp32|bf16|fp16}[-cp[-block|-stage]][-compile]"
                             "[@det|@NxH[xW]] "
                             "or extract-{fp32|bf16} (end to end: a folder of photos to feature files) "
                             f"(default: {','.join(DEFAULT_CASES)}; bf16 ones only where the device runs bf16 "
                             "natively)")
    parser.add_argument("--impls", type=_names, default=",".join(defaults.impls),
                        help=f"comma-separated implementations ({', '.join(IMPLS)}; reference: this "
                             "backbone's plain path; ort and openvino: its ONNX export, CPU only)")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="batch of the classification-size cases")
    parser.add_argument("--resolution", type=int, default=defaults.resolution, help="classification image size")
    parser.add_argument("--det-batch", type=int, default=defaults.det_batch, help="batch of the @det cases")
    parser.add_argument("--det-resolution", type=int, default=defaults.det_resolution, help="detection image size")
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="timed calls per implementation")
    parser.add_argument("--det-repeats", type=int, default=defaults.det_repeats,
                        help="timed calls in cases with more pixels than the classification size")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed calls first (compiles)")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda or auto")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory runs")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the random weights and inputs")
    parser.add_argument("--extract-images", type=int, default=defaults.extract_images,
                        help="photos in the folder of the end-to-end extract-* cases")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    parser.add_argument("--markdown", action="store_true", help="also print the results as Markdown tables")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Validate the parsed arguments into a :class:`BenchConfig` (clear errors for bad values)."""
    for name in ("batch", "det_batch", "repeats", "det_repeats", "extract_images"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("resolution", "det_resolution"):
        if getattr(args, name) < 32:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 32 (the network's stride), "
                             f"got {getattr(args, name)}")
    if args.warmup < 0 or (args.threads is not None and args.threads < 1):
        raise ValueError("--warmup must be >= 0 and --threads >= 1")
    for size in args.sizes:
        if size not in V2_ARCHS:
            raise ValueError(f"unknown size {size!r} in --sizes; choose from {', '.join(V2_ARCHS)}")
    for impl in args.impls:
        if impl not in IMPLS:
            raise ValueError(f"unknown implementation {impl!r} in --impls; choose from {', '.join(IMPLS)}")
    for name in args.cases or ():
        Case.parse(name)
    return BenchConfig(sizes=args.sizes, cases=args.cases, impls=args.impls, batch=args.batch,
                       resolution=args.resolution, det_batch=args.det_batch, det_resolution=args.det_resolution,
                       repeats=args.repeats, det_repeats=args.det_repeats, warmup=args.warmup, threads=args.threads,
                       device=args.device, memory=args.memory, seed=args.seed, extract_images=args.extract_images)
