"""The exported backbone on ONNX Runtime and on OpenVINO: one wrapper per runtime.

Each loads a file that :func:`cvx2_backbone.export.onnx.export_backbone` wrote (the same weights as the PyTorch model)
and returns the outputs as CPU tensors, so extraction's engines (:mod:`cvx2_backbone.extraction.engine_choice`), the
export's verification and the benchmark run the same code. Needs the ``deploy`` extra (onnx, onnxruntime, openvino).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

STATIC_SHAPES = 4  # OpenVINO models compiled for one exact input shape, kept per wrapper (most recently used)
_OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16"}


class Runtime(nn.Module):
    """An inference-only backbone on another runtime: ``run`` takes and returns CPU tensors (fp32 I/O)."""

    name = ""
    precisions: tuple[str, ...] = ("fp32",)
    version = ""

    @property
    def label(self) -> str:
        """The runtime and its version (``'openvino 2026.4.0'``), as reports print it."""
        return f"{self.name} {self.version}"

    def precision_used(self, precision: str) -> str:
        """The precision the runtime computes in when asked for ``precision`` ('fp32' or 'bf16')."""
        return precision

    def run(self, x: Tensor, precision: str = "fp32") -> tuple[Tensor, ...]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.run(x, "fp32")


class OnnxRuntimeBackbone(Runtime):
    """ONNX Runtime's CPU provider, ``threads`` intra-op threads, no spin-waiting between calls; fp32 only."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.version = ort.__version__

    def run(self, x: Tensor, precision: str = "fp32") -> tuple[Tensor, ...]:
        if precision not in self.precisions:
            raise ValueError(f"{self.name} runs fp32 only, not {precision}")
        outputs = self.session.run(None, {self.input_name: x.detach().cpu().contiguous().numpy()})
        return tuple(torch.from_numpy(o) for o in outputs)


def compile_openvino(core: Any, model: Any, precision: str, threads: int,
                     shape: tuple[int, ...] | None = None) -> tuple[Any, str]:
    """``model`` compiled for OpenVINO's CPU plugin as every OpenVINO path of this project runs it (``precision``'s
    hint, ``threads`` threads, latency mode), for exactly ``shape`` where one is given, else with the model's own
    (dynamic) shapes; also the precision the plugin reports computing in (on CPUs without bf16 a bf16 hint runs f32)."""
    if shape is not None:
        model = model.clone()
        model.reshape(list(shape))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": _OPENVINO_HINTS[precision],
                                                 "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # an openvino Type
    return compiled, {"f32": "fp32", "f16": "fp16"}.get(used, used)


class OpenVinoBackbone(Runtime):
    """OpenVINO's CPU plugin, f32 or bf16 precision hint, latency mode.

    A shape's first call (per precision) runs a model compiled once for dynamic batch, height and width (no
    compilation per image size); from its second call on, the shape runs a model compiled for exactly it, which
    OpenVINO runs up to 1.7x faster (docs/performance.md). The ``static_shapes`` most recently used static models
    are kept.
    """

    name = "openvino"
    precisions = ("fp32", "bf16")

    def __init__(self, path: str | Path, threads: int, static_shapes: int = STATIC_SHAPES) -> None:
        super().__init__()
        import openvino as ov

        self.core = ov.Core()
        self.model = self.core.read_model(str(path))
        self.threads, self.static_shapes = threads, static_shapes
        self.version = ov.__version__
        self.dynamic: dict[str, Any] = {}  # precision -> request of the dynamic-shape model
        self.static: OrderedDict[tuple[tuple[int, ...], str], Any] = OrderedDict()  # least recently used first
        self.seen: set[tuple[tuple[int, ...], str]] = set()
        self._used: dict[str, str] = {}

    def _compile(self, precision: str, shape: tuple[int, ...] | None = None) -> Any:
        compiled, self._used[precision] = compile_openvino(self.core, self.model, precision, self.threads, shape)
        return compiled.create_infer_request()

    def _request(self, shape: tuple[int, ...], precision: str) -> Any:
        """The static model's request for ``shape`` if it was seen before (compiled now if needed), else the
        dynamic model's."""
        key = (shape, precision)
        if key in self.static:
            self.static.move_to_end(key)
        elif key in self.seen:
            self.static[key] = self._compile(precision, shape)
            while len(self.static) > self.static_shapes:
                self.static.popitem(last=False)
        else:
            self.seen.add(key)
            if precision not in self.dynamic:
                self.dynamic[precision] = self._compile(precision)
            return self.dynamic[precision]
        return self.static[key]

    def precision_used(self, precision: str) -> str:
        """What the plugin reports it computes in (on CPUs without bf16, a bf16 hint runs f32)."""
        if precision not in self._used:
            self.dynamic[precision] = self._compile(precision)
        return self._used[precision]

    def run(self, x: Tensor, precision: str = "fp32") -> tuple[Tensor, ...]:
        if precision not in self.precisions:
            raise ValueError(f"{self.name} runs {' or '.join(self.precisions)}, not {precision}")
        x = x.detach().cpu().contiguous()
        results = self._request(tuple(x.shape), precision).infer({0: x.numpy()})
        return tuple(torch.from_numpy(value.copy()) for value in results.values())  # the request reuses its buffers


WRAPPERS = {OnnxRuntimeBackbone.name: OnnxRuntimeBackbone, OpenVinoBackbone.name: OpenVinoBackbone}
