"""The engines that run ``FeatureExtractor``'s network, and ``runtime='auto'``: the fastest one that is exact.

* ``torch``: the extractor's own PyTorch path (the fast kernels of :mod:`cvx2_backbone.ops`), bf16 by autocast;
* ``onnxruntime`` / ``openvino``: the project's own ONNX export (:func:`cvx2_backbone.export.onnx.export_backbone`,
  backbone and FPN, dynamic batch and size), written once per model into the cache folder and run on the CPU
  (OpenVINO in f32 or bf16, compiled once for dynamic shapes and again for each shape that recurs).

``auto`` measures, per precision and input-shape bucket (:func:`shape_bucket`), every installed engine against
PyTorch's plain ops on one random input of the first shape seen in that bucket, keeps those within the tolerance
(fp32: :data:`FP32_TOLERANCE` of the output scale; bf16: :data:`BF16_FACTOR` times PyTorch's own bf16 error,
at least :data:`BF16_FLOOR`), times them interleaved and runs the fastest; the choice is cached on disk
(:mod:`cvx2_backbone.runtimes.choice_cache`), keyed by the machine and the model. Any engine gives the same outputs,
names and shapes.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from cvx2_backbone import ops
from cvx2_backbone.export.onnx import export_backbone
from cvx2_backbone.runtimes.backbones import WRAPPERS, Runtime
from cvx2_backbone.runtimes.choice_cache import ChoiceCache, cache_dir, machine_identity, model_digest
from cvx2_backbone.runtimes.compare import worst_relative_error

ENGINES = ("torch", "onnxruntime", "openvino")
RUNTIMES = ("auto", *ENGINES)
PRECISIONS = ("fp32", "bf16")
RUNTIME_ENV = "CVX2_RUNTIME"
FP32_TOLERANCE = 1e-4  # max |engine - plain fp32| / max |plain fp32|, per output
BF16_FACTOR = 2.0  # a bf16 engine may be at most this many times further from fp32 than PyTorch's bf16 path ...
BF16_FLOOR = 1 / 128  # ... or this far (two bf16 ulps of the output scale), whichever is larger
KEPT_EXPORTS = 8  # exported models kept in the cache folder, most recently used first
TIMED_CALLS = 3  # per engine when choosing, after two untimed calls (OpenVINO compiles in them)
CLOSE_CALL = 0.1  # the two fastest engines this close get more timed calls
_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
_PRECISIONS = {"torch": PRECISIONS, "onnxruntime": ("fp32",), "openvino": PRECISIONS}


class EngineUnavailableError(ValueError):
    """A runtime was asked for that is not installed or cannot run this precision (a user error)."""


class EngineMismatchError(RuntimeError):
    """An explicitly chosen engine's outputs differ from PyTorch's by more than the tolerance."""


def installed(engine: str) -> bool:
    """Whether ``engine`` can be imported here (torch always can)."""
    if engine == "torch":
        return True
    try:
        importlib.import_module(_MODULES[engine])
    except ImportError:
        return False
    return True


def default_runtime() -> str:
    """``$CVX2_RUNTIME`` if set, else ``auto`` where the deploy extra (onnx and a runtime) is installed, else torch."""
    chosen = os.environ.get(RUNTIME_ENV, "").strip().lower()
    if chosen:
        if chosen not in RUNTIMES:
            raise ValueError(f"{RUNTIME_ENV}={chosen!r} is not a runtime; set it to one of {', '.join(RUNTIMES)}")
        return chosen
    deploy = importlib.util.find_spec("onnx") is not None and any(
        importlib.util.find_spec(module) is not None for module in _MODULES.values())
    return "auto" if deploy else "torch"


def check_runtime(runtime: str | None, precision: str) -> str:
    """The runtime to use (``None``: :func:`default_runtime`); raises :class:`EngineUnavailableError` when the
    named engine is not installed or has no such precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose {' or '.join(PRECISIONS)}")
    runtime = default_runtime() if runtime is None else runtime
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if runtime in _MODULES and not installed(runtime):
        raise EngineUnavailableError(f"runtime {runtime} is not installed (no module {_MODULES[runtime]!r}); "
                                     "pip install 'cvx2_backbone[deploy]', or choose runtime torch or auto")
    if runtime in _MODULES and precision not in _PRECISIONS[runtime]:
        raise EngineUnavailableError(f"runtime {runtime} has no {precision} mode; choose runtime torch, openvino "
                                     "or auto for bf16")
    return runtime


def shape_bucket(shape: Sequence[int], precision: str) -> str:
    """The key a choice is made and cached under: precision, the batch's power of two (1, 2-3, 4-7, ...) and the
    pixel count's (rounded log2 of H x W): ``'fp32/b8/a16'`` for 8 x 224 x 224."""
    batch, _, height, width = shape
    return f"{precision}/b{2 ** int(math.log2(batch))}/a{round(math.log2(height * width))}"


# --- the engines ----------------------------------------------------------------------------------

class TorchEngine:
    """The extractor's PyTorch path; bf16 through CPU autocast, on ``threads`` threads (torch's setting, if given).
    Outputs are fp32."""

    name = "torch"

    def __init__(self, extractor: nn.Module, precision: str, threads: int | None = None) -> None:
        self.extractor, self.precision, self.threads = extractor, precision, threads
        self.label = f"torch {torch.__version__}"
        self.precision_used = precision

    def __call__(self, x: Tensor) -> tuple[Tensor, ...]:
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        bf16 = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = tuple(self.extractor.forward_features(x).values())
        return tuple(o.float() for o in outputs) if bf16 else outputs


class RuntimeEngine:
    """A wrapper of :mod:`cvx2_backbone.runtimes.backbones` (ONNX Runtime, OpenVINO) at the extractor's precision."""

    def __init__(self, runtime: Runtime, precision: str) -> None:
        self.runtime, self.precision = runtime, precision
        self.name, self.label = runtime.name, runtime.label
        self.precision_used = runtime.precision_used(precision)

    def __call__(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.runtime.run(x, self.precision)


def _cached_model_problem(path: Path) -> str | None:
    """Why the cached export at ``path`` cannot be used (None if it reads as a valid ONNX model): a disk error, a
    copy cut short or an edited file would otherwise fail every later run, in the runtime, with a traceback."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as err:  # onnx raises protobuf's DecodeError, ValidationError, OSError, ...
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else 'unreadable'}"
    return None


def export_for_engines(extractor: nn.Module, digest: str, folder: Path | None = None,
                       log: Callable[[str], None] | None = None) -> Path:
    """The extractor's ONNX export in the cache folder, written once per model digest (atomically); only the
    :data:`KEPT_EXPORTS` most recently used exports are kept (every checkpoint of a training run has its own). A
    cached export that no longer reads as an ONNX model is replaced by a fresh one, and ``log`` says so."""
    path = (folder or cache_dir()) / "models" / f"{digest[:32]}.onnx"
    if path.exists():
        problem = _cached_model_problem(path)
        if problem is None:
            os.utime(path)  # recently used
            return path
        path.unlink(missing_ok=True)
        (log or (lambda text: print(text, file=sys.stderr)))(
            f"note: the cached model {path} was damaged ({problem}); exported it again")
    export_backbone(extractor, path, exporter="torchscript")
    exports = sorted(path.parent.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in exports[KEPT_EXPORTS:]:
        old.unlink(missing_ok=True)
    return path


# --- choosing -------------------------------------------------------------------------------------

@dataclass
class Choice:
    """What ran or will run in one bucket, and the measurements it was chosen on."""

    engine: str
    precision_used: str
    seconds: dict[str, float] = field(default_factory=dict)  # fastest call, per engine measured
    errors: dict[str, float] = field(default_factory=dict)  # relative error to the plain fp32 path, per engine
    rejected: dict[str, str] = field(default_factory=dict)  # engine -> why it was not a candidate
    shape: list[int] = field(default_factory=list)  # the input it was measured on


class EngineSet:
    """The engines of one extractor, built when first needed, and the choice per bucket (cached for ``auto``).

    Built from the weights the extractor holds at its first inference; call :meth:`FeatureExtractor.reset_engines`
    after changing them.
    """

    def __init__(self, extractor: nn.Module, runtime: str, precision: str, threads: int | None,
                 cache_folder: Path | None = None, log: Callable[[str], None] | None = None) -> None:
        self.extractor, self.runtime, self.precision = extractor, runtime, precision
        self.threads = threads or torch.get_num_threads()
        self.cache_folder = cache_folder
        self.log = log or (lambda text: print(text, file=sys.stderr))
        self.choices: dict[str, Choice] = {}
        self._engines: dict[str, Any] = {}
        self._digest: str | None = None
        self._cache: ChoiceCache | None = None

    # the model and its cache
    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = model_digest(self.extractor)
        return self._digest

    @property
    def cache(self) -> ChoiceCache:
        if self._cache is None:
            self._cache = ChoiceCache(machine_identity(self.threads), self.digest, self.cache_folder)
        return self._cache

    def engine(self, name: str) -> Any:
        """The engine ``name``, built on first use."""
        if name not in self._engines:
            if name == "torch":
                self._engines[name] = TorchEngine(self.extractor, self.precision, self.threads)
            else:
                path = export_for_engines(self.extractor, self.digest, self.cache_folder, self.log)
                self._engines[name] = RuntimeEngine(WRAPPERS[name](path, self.threads), self.precision)
        return self._engines[name]

    # running
    def run(self, x: Tensor) -> tuple[tuple[Tensor, ...], Any]:
        """The outputs of the chosen engine on normalised pixels ``x``, and that engine."""
        if x.device.type != "cpu" or x.shape[0] == 0:
            engine = self.engine("torch")
        else:
            bucket = shape_bucket(x.shape, self.precision)
            choice = self.choices.get(bucket) or self._choose(bucket, tuple(x.shape))
            engine = self.engine(choice.engine)
        return engine(x), engine

    def candidates(self) -> tuple[list[str], dict[str, str]]:
        """Engines to consider for this precision, and the reason each other one is left out."""
        if self.runtime != "auto":
            return [self.runtime], {}
        chosen, notes = [], {}
        for name in ENGINES:
            if self.precision not in _PRECISIONS[name]:
                notes[name] = f"no {self.precision} mode"
            elif not installed(name):
                notes[name] = f"not installed (pip install 'cvx2_backbone[deploy]' for {_MODULES[name]})"
            else:
                chosen.append(name)
        return chosen, notes

    def _choose(self, bucket: str, shape: tuple[int, ...]) -> Choice:
        if self.runtime == "torch":
            choice = Choice("torch", self.precision, shape=list(shape))
        elif self.runtime == "auto" and (cached := self.cache.load().get(bucket)):
            choice = Choice(**cached)
        else:
            choice = self._measure(shape)
            if self.runtime == "auto":
                self.cache.store(bucket, asdict(choice))
                notes = "".join(f"; {k} left out: {v}" for k, v in choice.rejected.items())
                self.log(f"runtime auto: {bucket} {'x'.join(map(str, shape))}: {choice.engine} "
                         f"({', '.join(f'{k} {1e3 * v:.0f} ms' for k, v in choice.seconds.items())}){notes}")
        self.choices[bucket] = choice
        return choice

    def _measure(self, shape: tuple[int, ...]) -> Choice:
        """Check every candidate against the plain fp32 path on one random input, then time the exact ones."""
        names, rejected = self.candidates()
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode(), ops.plain_ops():
            expected = tuple(self.extractor.forward_features(x).values())
        engines, errors = {}, {}
        for name in names:
            try:
                engine = self.engine(name)
            except ImportError as err:  # found but broken: left out, never a silent wrong answer
                rejected[name] = f"failed to load ({err})"
                continue
            # two untimed calls, both checked: OpenVINO's first call of a shape runs its dynamic model, the
            # second compiles and runs one for exactly this shape (what every later call of the shape runs)
            errors[name] = max(worst_relative_error(engine(x), expected) for _ in range(2))
            engines[name] = engine
        bound = self.tolerance(x, expected)
        exact = {name: engine for name, engine in engines.items() if errors[name] <= bound or name == "torch"}
        for name in set(engines) - set(exact):
            rejected[name] = f"differs from PyTorch by {errors[name]:.1e} (> {bound:.1e})"
        if not exact:
            raise EngineMismatchError(f"runtime {self.runtime}: {rejected[self.runtime]} on an input of shape "
                                      f"{list(shape)}; use runtime torch")
        seconds = time_engines(exact, x) if len(exact) > 1 else {name: 0.0 for name in exact}
        best = min(seconds, key=seconds.get)
        return Choice(best, exact[best].precision_used, seconds, errors, rejected, list(shape))

    def tolerance(self, x: Tensor, expected: Sequence[Tensor]) -> float:
        """fp32: :data:`FP32_TOLERANCE`; bf16: :data:`BF16_FACTOR` x PyTorch's bf16 error, at least
        :data:`BF16_FLOOR`."""
        if self.precision == "fp32":
            return FP32_TOLERANCE
        return max(BF16_FACTOR * worst_relative_error(self.engine("torch")(x), expected), BF16_FLOOR)


def time_engines(engines: dict[str, Callable[[Tensor], Any]], x: Tensor, calls: int = TIMED_CALLS) -> dict[str, float]:
    """Fastest seconds per call of each engine on ``x``, calls interleaved: load from other processes only ever adds
    time, so the minimum is the least disturbed estimate, and interleaving exposes every engine to the same load.
    While the two fastest are within :data:`CLOSE_CALL` of each other, up to ``calls`` more rounds are timed."""
    times: dict[str, list[float]] = {name: [] for name in engines}

    def rounds(count: int) -> None:
        for _ in range(count):
            for name, engine in engines.items():
                start = time.perf_counter()
                engine(x)
                times[name].append(time.perf_counter() - start)

    rounds(calls)
    for _ in range(calls):
        best = sorted(min(values) for values in times.values())
        if len(best) < 2 or best[1] > best[0] * (1 + CLOSE_CALL):
            break
        rounds(1)
    return {name: min(values) for name, values in times.items()}
