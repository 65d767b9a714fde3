"""Side-by-side speed and memory of this backbone, timm's, Hugging Face's, ONNX Runtime's and OpenVINO's ConvNeXt V2.

All get the same random weights (converted by :mod:`cvx2_backbone.weights`, or exported to ONNX
by :func:`cvx2_backbone.export.onnx.export_onnx`), must agree on their outputs, and are then timed
interleaved in one process: every repeat runs each implementation in each case of one input size
once, so load changes on a shared machine hit all of them alike; the median counts. Used by
``cvx2 bench`` and ``tools/benchmark.py``; see docs/performance.md.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import timm
import torch
from torch import Tensor, nn

from cvx2_backbone.utils.files import write_atomic
from cvx2_backbone.benchmark.extract import DefaultExtract, run_extract_case
from cvx2_backbone.benchmark.models import randomize_, transfer_weights
from cvx2_backbone.benchmark.options import (DEFAULT_CASES, DEFAULT_IMPLS, IMPLS, RATIO_IMPLS,  # noqa: F401
                                             BenchConfig, Case, add_arguments, config_from_args)
from cvx2_backbone.export.onnx import export_onnx
from cvx2_backbone.models.convnext import V2_ARCHS, ConvNeXtV2
from cvx2_backbone.runtimes.allocator import reuse_freed_memory
from cvx2_backbone.runtimes.backbones import WRAPPERS, Runtime
from cvx2_backbone.utils.machine import cpu_model_name, package_version, torch_threads

# Settings outside the program that change CPU timings; recorded with the results.
_ENVIRONMENT = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "LD_PRELOAD", "MKL_NUM_THREADS")
PARITY_RTOL = 1e-4  # max |difference| / max |output| between implementations, fp32, per stage


@dataclass
class Result:
    """One implementation in one case."""

    size: str
    case: str
    impl: str
    batch: int
    resolution: int  # the height
    width: int = 0
    seconds: list[float] = field(default_factory=list)
    img_per_s: float = 0.0
    ratio_to_timm: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)  # img/s over that of each of RATIO_IMPLS
    peak_mib: float | None = None
    compile_s: float | None = None
    precision_used: str | None = None  # what a runtime reports it computed in


# --- the three implementations, loaded with the same weights ---------------------------------
def _hf_model(size: str) -> nn.Module:
    from transformers import ConvNextV2Config, ConvNextV2Model

    depths, dims = V2_ARCHS[size]
    config = ConvNextV2Config(depths=list(depths), hidden_sizes=list(dims), drop_path_rate=0.0)
    return ConvNextV2Model(config)


def _runtime(impl: str, ours: nn.Module, folder: str, threads: int) -> Runtime | None:
    """ONNX Runtime or OpenVINO on this backbone's ONNX export, or None (with a note) if not installed."""
    path = os.path.join(folder, "backbone.onnx")
    try:
        if not os.path.exists(path):
            export_onnx(ours, path)
        return WRAPPERS[impl](path, threads)
    except ImportError as err:
        print(f"note: {impl} is left out ({err.name} is not installed: pip install 'cvx2_backbone[deploy]')",
              file=sys.stderr)
        return None


def build_models(size: str, impls: Sequence[str], seed: int, device: torch.device | None = None,
                 threads: int | None = None) -> dict[str, nn.Module]:
    """The requested implementations of ConvNeXt V2 ``size``, all holding the same random weights.

    ``onnxruntime`` and ``openvino`` run on the CPU with ``threads`` threads (torch's count by default);
    they are left out for other devices.
    """
    if size not in V2_ARCHS:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(V2_ARCHS)}")
    ours = randomize_(ConvNeXtV2(size, out_norm=False), seed)
    state = ours.state_dict()
    models: dict[str, nn.Module] = {}
    folder = tempfile.TemporaryDirectory(prefix="cvx2-bench-")
    for impl in impls:
        if impl in WRAPPERS:
            if device is not None and device.type != "cpu":
                print(f"note: {impl} runs on the CPU only, so it is left out on {device}", file=sys.stderr)
            elif (runtime := _runtime(impl, ours, folder.name, threads or torch.get_num_threads())) is not None:
                models[impl] = runtime
            continue
        if impl == "cvx2":
            models[impl] = ours
        elif impl == "extract":
            models[impl] = DefaultExtract(ours, threads or torch.get_num_threads())
        elif impl == "reference":
            models[impl] = ConvNeXtV2(size, out_norm=False).set_reference_path(True)
            models[impl].load_state_dict(state)
        elif impl == "timm":
            models[impl] = timm.create_model(f"convnextv2_{size}", features_only=True, pretrained=False)
            transfer_weights(state, models[impl])
        elif impl == "hf":
            try:
                models[impl] = _hf_model(size)
            except ImportError:
                print("note: transformers is not installed, so Hugging Face is left out "
                      "(pip install 'cvx2_backbone[hf]')", file=sys.stderr)
                continue
            transfer_weights(state, models[impl])
        else:
            raise ValueError(f"unknown implementation {impl!r}; choose from {', '.join(IMPLS)}")
    folder.cleanup()
    return models


def stage_outputs(impl: str, model: nn.Module, x: Tensor) -> tuple[Tensor, ...]:
    """The four stage outputs (NCHW) of any of the implementations."""
    if impl == "hf":
        return tuple(model(pixel_values=x, output_hidden_states=True).hidden_states[1:])
    return tuple(model(x))


def check_parity(models: Mapping[str, nn.Module], x: Tensor) -> dict[str, float]:
    """Relative max difference of every implementation to this backbone (fp32, eval); raises if any disagrees."""
    with torch.inference_mode():
        outputs = {impl: stage_outputs(impl, model.eval(), x) for impl, model in models.items()}
    base = outputs[next(iter(outputs))]
    errors = {}
    for impl, outs in outputs.items():
        errors[impl] = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(outs, base))
        if not errors[impl] <= PARITY_RTOL:
            raise RuntimeError(f"{impl} disagrees with {next(iter(outputs))}: relative max difference "
                               f"{errors[impl]:.2e} > {PARITY_RTOL:.0e}; the weight transfer or a fast path is wrong")
    return errors


# --- measuring --------------------------------------------------------------------------------
def _has_checkpointing(impl: str, model: nn.Module) -> bool:
    if isinstance(model, Runtime):
        return False
    return impl != "hf" or getattr(model, "supports_gradient_checkpointing", False)


def _set_checkpointing(impl: str, model: nn.Module, enabled: bool, granularity: str | None = None) -> None:
    """Turn the implementation's own gradient checkpointing on or off (ours at ``granularity`` where given)."""
    if impl in ("cvx2", "reference"):
        model.with_cp = (granularity or True) if enabled else False
    elif impl == "timm":
        model.set_grad_checkpointing(enabled)
    elif impl == "hf" and _has_checkpointing(impl, model):
        model.gradient_checkpointing_enable() if enabled else model.gradient_checkpointing_disable()


def make_step(impl: str, model: nn.Module, case: Case, x: Tensor) -> Callable[[], None]:
    """One inference forward, or one training step (forward, backward), as the case asks.

    The step sets the model's mode and checkpointing itself, so steps of different cases can
    share a model and run interleaved.
    """
    if isinstance(model, Runtime):
        return _runtime_step(model, case, x)
    if case.checkpointing and not _has_checkpointing(impl, model):
        raise NotImplementedError(f"{impl} has no gradient checkpointing")
    # dynamic=False: each input shape gets its own static graph, as a detector's fixed test size does (a second
    # shape would otherwise recompile with dynamic sizes, slower code than either static graph)
    run = torch.compile(model, dynamic=False) if case.compiled else model
    autocast = torch.autocast(x.device.type, dtype=_DTYPES[case.precision], enabled=case.precision != "fp32")
    params = [p for p in model.parameters() if p.requires_grad]

    def prepare() -> None:
        model.train(case.task == "train")
        _set_checkpointing(impl, model, case.checkpointing, case.cp_granularity)

    if case.task == "infer":
        def step() -> None:
            prepare()
            with torch.inference_mode(), autocast:
                stage_outputs(impl, run, x)
    else:
        def step() -> None:
            prepare()
            with autocast:
                outputs = stage_outputs(impl, run, x)
            sum(out.float().mean() for out in outputs).backward()
            for param in params:  # as an optimizer step with zero_grad(set_to_none=True) would
                param.grad = None
    return step


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _runtime_step(model: Runtime, case: Case, x: Tensor) -> Callable[[], None]:
    """An inference call of ONNX Runtime or OpenVINO in the case's precision (inference cases only)."""
    if case.task != "infer" or case.compiled:
        raise NotImplementedError(f"{model.name} runs eager inference only")
    if case.precision not in model.precisions:
        raise NotImplementedError(f"{model.name} has no {case.precision} mode")

    def step() -> None:
        model.run(x, case.precision)
    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(steps: Mapping[Any, Callable[[], None]], repeats: int, device: torch.device) -> dict[Any, list]:
    """Seconds per call of every step, round robin: repeat r runs each step once before repeat r + 1."""
    times: dict[Any, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def peak_memory_mib(step: Callable[[], None], device: torch.device) -> float:
    """Peak memory allocated by one call above what was allocated before it (MiB).

    CUDA: the caching allocator's statistics. CPU: the allocation and free events recorded by
    torch.profiler, replayed in time order (torch's CPU allocator keeps no statistics).
    """
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak / 2**20


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null: torch's profiler (kineto) logs every start and stop from C++ to stderr.

    Python exceptions still propagate; only native writes to stderr inside the block are dropped.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


def run_group(size: str, cases: Sequence[Case], models: Mapping[str, nn.Module], config: BenchConfig,
              device: torch.device) -> list[Result]:
    """Time (and measure the memory of) every implementation in cases of one input shape, all interleaved.

    Interleaving across cases too makes ratios between cases (bf16 against fp32, compiled
    against eager) as fair as those between implementations.
    """
    batch, height, width = cases[0].input_shape(config)
    x = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(config.seed)).to(device)
    steps, results = {}, {}
    for case in cases:
        for impl, model in models.items():
            try:
                step = make_step(impl, model, case, x)
            except NotImplementedError as err:
                print(f"note: {case.name}: {err}, so it is left out", file=sys.stderr)
                continue
            key = (case.name, impl)
            steps[key], results[key] = step, Result(size, case.name, impl, batch, height, width)
            measure_memory = config.memory and not isinstance(model, Runtime)  # runtimes allocate outside torch
            start = time.perf_counter()
            for call in range(config.warmup):
                if measure_memory and not case.compiled and call == config.warmup - 1:  # saves a call when large
                    results[key].peak_mib = peak_memory_mib(step, device)
                else:
                    step()
            if case.compiled:
                results[key].compile_s = time.perf_counter() - start
            if isinstance(model, Runtime):
                results[key].precision_used = model.precision_used(case.precision)
    classification = config.batch * config.resolution ** 2
    repeats = config.repeats if batch * height * width <= classification else config.det_repeats
    for key, seconds in time_interleaved(steps, repeats, device).items():
        results[key].seconds = seconds
        results[key].img_per_s = batch / statistics.median(seconds)
    for key, step in steps.items():
        if config.memory and results[key].peak_mib is None and not isinstance(models[key[1]], Runtime):
            results[key].peak_mib = peak_memory_mib(step, device)
    for (case, _), result in results.items():
        for other in RATIO_IMPLS:
            if (case, other) in results:
                result.ratios[other] = result.img_per_s / results[(case, other)].img_per_s
        result.ratio_to_timm = result.ratios.get("timm")
    for impl, model in models.items():  # leave the models as built
        _set_checkpointing(impl, model, False)
        model.zero_grad(set_to_none=True)
    return list(results.values())


def run_end_to_end(size: str, case: Case, config: BenchConfig, device: torch.device) -> list[Result]:
    """The ``extract-*`` case: ``cvx2 extract``, a timm loop and an OpenVINO loop on a folder of photos (CPU only)."""

    if device.type != "cpu":
        print(f"note: {case.name} runs on the CPU only, so it is left out on {device}", file=sys.stderr)
        return []
    images = config.extract_images
    seconds = run_extract_case(size, case.precision, images, config.repeats, torch.get_num_threads(), config.seed,
                               log=lambda text: print(text, file=sys.stderr))
    results = {job: Result(size, case.name, job, images, 0, 0, times, images / statistics.median(times))
               for job, times in seconds.items()}
    for result in results.values():
        result.ratios = {column: result.img_per_s / results[job].img_per_s  # shown in the x timm / x openvino columns
                         for column, job in (("timm", "timm-loop"), ("openvino", "openvino-loop")) if job in results}
        result.ratio_to_timm = result.ratios.get("timm")
    return list(results.values())


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA; CPUs with AVX512-BF16 or AMX, as oneDNN reports)."""
    return device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def default_cases(device: torch.device) -> list[str]:
    """:data:`DEFAULT_CASES`, without the bf16 ones on CPUs that only emulate bf16 (they take 10-50x longer there)."""
    if native_bf16(device):
        return list(DEFAULT_CASES)
    print("note: this CPU has no native bf16 (AVX512-BF16 or AMX), so the default bf16 cases are left out; "
          "name them in --cases to run them anyway", file=sys.stderr)
    return [name for name in DEFAULT_CASES if Case.parse(name).precision != "bf16"]


def run_benchmark(config: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """Measure every size and case of ``config``; returns the JSON-ready report."""
    device = _device(config.device)
    cases = [Case.parse(name) for name in (config.cases if config.cases is not None else default_cases(device))]
    reused = reuse_freed_memory()  # every implementation alike: torch's large blocks reused, not page-faulted anew
    report = {"meta": {**_meta(config, device), "allocator": "glibc, freed blocks reused" if reused else "default"},
              "parity": {}, "results": []}
    with torch_threads(config.threads):
        report["meta"]["threads"] = torch.get_num_threads()
        groups: dict[tuple, list[Case]] = {}
        for case in cases:
            if case.task != "extract":  # the end-to-end cases build their own models
                groups.setdefault(case.input_shape(config), []).append(case)
        for size in config.sizes:
            if groups:
                models = {impl: model.to(device) for impl, model in build_models(
                    size, config.impls, config.seed, device, torch.get_num_threads()).items()}
                probe = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(config.seed)).to(device)
                report["parity"][size] = check_parity(models, probe)
                log(f"{size}: outputs agree (relative max difference to cvx2: "
                    + ", ".join(f"{k} {v:.1e}" for k, v in report["parity"][size].items()) + ")")
            for group in groups.values():
                results = run_group(size, group, models, config, device)
                report["results"].extend(asdict(r) for r in results)
                log(format_table(results))
            end_to_end = [run_end_to_end(size, case, config, device) for case in cases if case.task == "extract"]
            for results in filter(None, end_to_end):
                report["results"].extend(asdict(r) for r in results)
                log(format_table(results))
    report["summary"] = summarize(report["results"])
    return report


def _meta(config: BenchConfig, device: torch.device) -> dict:
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.platform(), "processor": cpu_model_name(),
        "cpu_count": os.cpu_count(), "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native_bf16(device),
        "torch": torch.__version__, "timm": timm.__version__, "transformers": package_version("transformers"),
        "onnxruntime": package_version("onnxruntime"), "openvino": package_version("openvino"),
        "environment": {name: os.environ[name] for name in _ENVIRONMENT if name in os.environ},
        "config": asdict(config),
    }


# --- reporting --------------------------------------------------------------------------------
def input_label(result: Mapping) -> str:
    """``8x224`` for 8 images of 224 x 224, ``1x800x1216`` for one of 800 x 1216."""
    if not result["resolution"]:  # the end-to-end case
        return f"{result['batch']} photos"
    height, width = result["resolution"], result.get("width") or result["resolution"]
    return f"{result['batch']}x{height}" + (f"x{width}" if width != height else "")


def summarize(results: Sequence[Mapping]) -> dict:
    """The issue's targets from the measured results (only those whose cases were run)."""
    def find(case: str, impl: str, size: str) -> Mapping | None:
        return next((r for r in results if r["case"] == case and r["impl"] == impl and r["size"] == size), None)

    summary = {}
    for size in dict.fromkeys(r["size"] for r in results):
        checks = {}
        for label, case, goal in (("eager fp32 inference vs timm", "infer-fp32", 1.7),
                                  ("training step vs timm", "train-fp32", 1.5),
                                  ("compiled inference vs timm compiled", "infer-fp32-compile", 1.0)):
            ours, timm = find(case, "cvx2", size), find(case, "timm", size)
            if ours and timm:
                checks[label] = {"value": ours["img_per_s"] / timm["img_per_s"], "target": goal}
        checks.update(_gpu_targets(results, size, find))
        for ours in (r for r in results if r["impl"] == "cvx2" and r["size"] == size):
            parsed = Case.parse(ours["case"])
            if parsed.task != "infer" or parsed.compiled:
                continue
            where = input_label(ours)
            ort, openvino = find(ours["case"], "onnxruntime", size), find(ours["case"], "openvino", size)
            if parsed.precision == "fp32" and ort:
                checks[f"eager fp32 inference vs ONNX Runtime ({where})"] = {
                    "value": ours["img_per_s"] / ort["img_per_s"], "target": 1.0}
            if parsed.precision == "bf16" and openvino:
                runs_in = openvino.get("precision_used") or "bf16"
                checks[f"bf16 inference vs OpenVINO {runs_in} ({where})"] = {
                    "value": ours["img_per_s"] / openvino["img_per_s"], "target": 1.2}
            fp32 = find(ours["case"].replace("-bf16", "-fp32", 1), "cvx2", size)
            if parsed.precision == "bf16" and fp32:
                checks[f"bf16 vs fp32 inference ({where})"] = {"value": ours["img_per_s"] / fp32["img_per_s"],
                                                               "target": 1.6}
            extract = find(ours["case"], "extract", size)
            runtimes = [r["img_per_s"] for r in (ort, openvino) if r]
            if extract and runtimes:
                checks[f"extract {parsed.precision} vs best of ONNX Runtime and OpenVINO ({where})"] = {
                    "value": extract["img_per_s"] / max(runtimes), "target": 1.0}
        for case in dict.fromkeys(r["case"] for r in results if r["impl"] == "cvx2-extract" and r["size"] == size):
            ours = find(case, "cvx2-extract", size)
            for job, goal in (("timm-loop", 2.0), ("openvino-loop", 1.1)):
                if theirs := find(case, job, size):
                    checks[f"{case} end to end vs {job}"] = {"value": ours["img_per_s"] / theirs["img_per_s"],
                                                              "target": goal}
        plain, cp = find("train-fp32@det", "cvx2", size), find("train-fp32-cp@det", "cvx2", size)
        if plain and cp and plain["peak_mib"] and cp["peak_mib"] is not None:
            checks["with_cp training memory saving"] = {"value": 1 - cp["peak_mib"] / plain["peak_mib"], "target": 0.4}
        for check in checks.values():
            check["met"] = check["value"] >= check["target"]
        summary[size] = checks
    return summary


def _gpu_targets(results: Sequence[Mapping], size: str, find: Callable[[str, str, str], Mapping | None]) -> dict:
    """Issue 30's targets: half-precision and compiled inference, checkpointed training (speed and memory) vs timm."""
    checks = {}
    for ours in (r for r in results if r["impl"] == "cvx2" and r["size"] == size and r["case"] != "infer-fp32-compile"):
        parsed, where = Case.parse(ours["case"]), input_label(ours)
        timm = find(ours["case"], "timm", size)
        if parsed.task == "extract" or not timm:
            continue
        if parsed.compiled:
            checks[f"compiled {parsed.precision} inference vs timm compiled ({where})"] = {
                "value": ours["img_per_s"] / timm["img_per_s"], "target": 1.0}
            eager = find(ours["case"].replace("-compile", "", 1), "cvx2", size)
            if eager and ours["batch"] > 1:
                checks[f"compiled vs eager {parsed.precision} inference ({where})"] = {
                    "value": ours["img_per_s"] / eager["img_per_s"], "target": 1.5}
        elif parsed.checkpointing:
            label = f"checkpointed{'-' + parsed.cp_granularity if parsed.cp_granularity else ''} {parsed.precision}"
            checks[f"{label} training vs timm checkpointed ({where})"] = {
                "value": ours["img_per_s"] / timm["img_per_s"], "target": 1.0}
            if ours["peak_mib"] and timm["peak_mib"]:
                checks[f"{label} training memory, timm's / ours ({where})"] = {
                    "value": timm["peak_mib"] / ours["peak_mib"], "target": 1.0}
        elif parsed.precision != "fp32":
            checks[f"eager {parsed.precision} {parsed.task} vs timm ({where})"] = {
                "value": ours["img_per_s"] / timm["img_per_s"], "target": 1.0}
    return checks


def _cells(r: Mapping) -> list[str]:
    ratios = r.get("ratios") or ({"timm": r["ratio_to_timm"]} if r.get("ratio_to_timm") else {})
    return [r["size"], r["case"], input_label(r), r["impl"], f"{r['img_per_s']:.2f}",
            *(f"{ratios[other]:.2f}" if other in ratios else "-" for other in RATIO_IMPLS),
            f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-", r.get("precision_used") or ""]


_HEADER = ["size", "case", "input", "impl", "img/s", *(f"x {other}" for other in RATIO_IMPLS), "peak MiB", "runs in"]


def format_table(results: Sequence[Mapping | Result]) -> str:
    """Aligned text table of results: img/s, ratios to timm / ORT / OpenVINO, ms per call, peak memory."""
    rows = [_HEADER[:-1] + ["ms/call", "compile s", "runs in"]]
    for r in (asdict(r) if isinstance(r, Result) else r for r in results):
        cells = _cells(r)
        rows.append(cells[:-1] + [f"{1e3 * statistics.median(r['seconds']):.0f}",
                                  f"{r['compile_s']:.0f}" if r["compile_s"] is not None else "-", cells[-1]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) if 3 < i < len(row) - 1 else cell.ljust(width)
                       for i, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]
    return "\n".join(lines)


def format_markdown(report: Mapping) -> str:
    """The results and targets as Markdown tables, with the date and machine (for a README)."""
    meta = report["meta"]
    versions = ", ".join(f"{name} {meta[name]}" for name in ("torch", "timm", "transformers", "onnxruntime",
                                                               "openvino") if meta.get(name))
    lines = [f"{meta['date'][:10]}, {meta['device']} ({meta['processor']}, {meta['cpu_count']} CPUs, "
             f"{meta['threads']} threads, {meta.get('cpu_capability', '?')}, native bf16 "
             f"{'yes' if meta.get('native_bf16') else 'no'}, allocator {meta.get('allocator', 'default')}), {versions}",
             "",
             "| " + " | ".join(_HEADER) + " |", "| --- | --- | --- | --- |" + " ---: |" * (len(_HEADER) - 5) + " --- |"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in report["results"]]
    lines += ["", "| size | target | measured | goal | met |", "| --- | --- | ---: | ---: | --- |"]
    for size, checks in report["summary"].items():
        for label, check in checks.items():
            lines.append(f"| {size} | {label} | {check['value']:.2f} | {check['target']:.2f} | "
                         f"{'yes' if check['met'] else 'no'} |")
    return "\n".join(lines)


def format_summary(summary: Mapping[str, Mapping]) -> str:
    lines = []
    for size, checks in summary.items():
        for label, check in checks.items():
            kind = "saved" if "memory saving" in label else "x"
            value = f"{100 * check['value']:.0f}% {kind}" if kind == "saved" else f"{check['value']:.2f}x"
            target = f"{100 * check['target']:.0f}%" if kind == "saved" else f"{check['target']:.2f}x"
            lines.append(f"{size}: {label}: {value} (target >= {target}) {'met' if check['met'] else 'NOT met'}")
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------
def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table and targets, write JSON if asked."""
    config = config_from_args(args)
    report = run_benchmark(config)
    print(f"\nConvNeXt V2 on {report['meta']['device']} ({report['meta']['processor']}, "
          f"{report['meta']['threads']} threads), {report['meta']['date']}")
    print(format_table(report["results"]))
    print(format_summary(report["summary"]))
    if args.markdown:
        print("\n" + format_markdown(report))
    if args.json:
        write_atomic(args.json, json.dumps(report, indent=2).encode())
        print(f"wrote {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
